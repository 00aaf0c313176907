package icclient

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/icws/icws/replica"
)

// The IC's HTTP interface never redirects: a signed request is not sent to wherever an answer
// points, it fails as that answer.
func TestRedirectsAreNotFollowed(t *testing.T) {
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	var elsewhere atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(sink.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, sink.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	c.base = redirector.URL

	_, err := c.Query(ctx(t), testCanisterID, "get", []byte("x"))
	if err == nil {
		t.Fatal("a redirected query succeeded")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("%d requests followed the redirect", n)
	}
}
