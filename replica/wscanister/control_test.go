package wscanister

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/icws/icws/protocol"
)

func TestControlAPI(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.ControlHandler())
	t.Cleanup(srv.Close)
	cc := &ControlClient{BaseURL: srv.URL + "/", HTTP: srv.Client()}
	ctx := context.Background()

	gw := newPrincipal(t, 1)
	k := protocol.ClientKey{ClientPrincipal: newPrincipal(t, 10), ClientNonce: 18446744073709551615}
	e.mustOk(e.open(k.ClientPrincipal, k.ClientNonce, gw))
	e.mustOk(e.appMessage(k, 1, "ping"))

	keys, err := cc.Clients(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Equal(k) {
		t.Fatalf("clients %v %v", keys, err)
	}
	if err := cc.Send(ctx, k, "pushed"); err != nil {
		t.Fatal(err)
	}
	if n, err := cc.Broadcast(ctx, "all"); err != nil || n != 1 {
		t.Fatalf("broadcast %d %v", n, err)
	}
	l, err := cc.Received(ctx, k)
	if err != nil || len(l.Texts) != 1 || l.Texts[0] != "ping" || !l.Open {
		t.Fatalf("received %+v %v", l, err)
	}
	other := protocol.ClientKey{ClientPrincipal: newPrincipal(t, 11), ClientNonce: 1}
	if err := cc.Send(ctx, other, "x"); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("send to unknown: %v", err)
	}
	if l, err := cc.Received(ctx, other); err != nil || l.Open || len(l.Texts) != 0 {
		t.Fatalf("received of unknown: %+v %v", l, err)
	}
	if err := cc.CloseClient(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := cc.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	ms, _ := e.drain(gw, 0)
	if len(ms) != 0 {
		t.Fatalf("queue after upgrade: %d", len(ms))
	}

	// Bad requests.
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPost, "/send", `{"client":"nope","text":"x"}`},
		{http.MethodPost, "/send", `{`},
		{http.MethodGet, "/received?client=", ""},
		{http.MethodPost, "/close", `{}`},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s %s %s: status %d", tc.method, tc.path, tc.body, resp.StatusCode)
		}
	}
	resp, err := srv.Client().Get(srv.URL + "/send")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /send: %d", resp.StatusCode)
	}
}
