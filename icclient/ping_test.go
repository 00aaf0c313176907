package icclient

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/icws/icws/replica"
)

func TestPingTellsAnAnsweringICFromAnUnreachableOne(t *testing.T) {
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	if err := c.Ping(ctx(t)); err != nil {
		t.Fatalf("ping of a running replica: %v", err)
	}

	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	down := newTestClient(t, e)
	down.base = gone.URL
	var te *TransportError
	if err := down.Ping(ctx(t)); !errors.As(err, &te) {
		t.Fatalf("ping of a closed port: %v, want a *TransportError", err)
	}

	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	t.Cleanup(busy.Close)
	refusing := newTestClient(t, e)
	refusing.base = busy.URL
	var he *HTTPError
	if err := refusing.Ping(ctx(t)); !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("ping answered 503: %v, want an *HTTPError", err)
	}
}
