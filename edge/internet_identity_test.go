package edge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

// startEdgeWithRootKey is startEdge for an edge that knows the IC root key.
func (v *env) startEdgeWithRootKey(cfg Config, rootKey []byte) *runningEdge {
	t := v.t
	t.Helper()
	reg := prometheus.NewRegistry()
	e, err := New(cfg, Deps{NC: v.nc, JS: v.js, Gateway: v.gw, Registry: reg, RootKey: rootKey})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	re := &runningEdge{Edge: e, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { re.done <- e.Run(ctx) }()
	testkit.WaitFor(t, 10*time.Second, "edge listening", func() bool { return e.Addr() != nil })
	re.url = "ws://" + e.Addr().String() + "/"
	t.Cleanup(func() { re.stop() })
	return re
}

// iiClient is a client signed in with Internet Identity on the network of auth: its envelopes
// carry a delegation from a canister-signature key to a session key.
func iiClient(t *testing.T, v *env, auth *certauth.Authority, seed string) *client {
	t.Helper()
	user := auth.CanisterSigner(principal.MustDecode("rdmx6-jaaaa-aaaaa-aaadq-cai"), []byte(seed))
	session := testkit.NewIdentity(t)
	sd, err := protocol.SignDelegation(user, protocol.Delegation{PubKey: session.PublicKey(), Expiration: time.Now().Add(30 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	id, err := protocol.NewDelegationIdentity(user.PublicKey(), []protocol.SignedDelegation{sd}, session)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, v.gw, randomCanister(t))
	c.id = id
	return c
}

// A client signed in with Internet Identity opens a session and sends messages; its session
// belongs to its Internet Identity principal.
func TestInternetIdentitySessionOpens(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	auth, err := certauth.New(certauth.Options{Delegated: true})
	if err != nil {
		t.Fatal(err)
	}
	e := v.startEdgeWithRootKey(testConfig("e1"), auth.RootKey())
	c := iiClient(t, v, auth, "user 10000 at https://app.example")
	c.dial(e.url, false)
	c.open()
	if seq, _ := c.next(); seq != 1 {
		t.Fatalf("first canister message has seq %d, want 1", seq)
	}
	// The record is found under the client key of the Internet Identity principal (c.id.Sender()).
	testkit.WaitFor(t, 5*time.Second, "session confirmed", func() bool {
		rec := v.session(c)
		return rec != nil && rec.Confirmed
	})
	c.send()
	c.send()
	testkit.WaitFor(t, 5*time.Second, "messages stored", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 3 })
}

// Without the root key, or with another network's, a canister-signature chain is refused before
// any effect, with a reason that says why.
func TestInternetIdentityRefusedWithoutTheRightRootKey(t *testing.T) {
	v := newEnv(t)
	auth, err := certauth.New(certauth.Options{Delegated: true})
	if err != nil {
		t.Fatal(err)
	}
	other, err := certauth.New(certauth.Options{Delegated: true})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		rootKey []byte
		reason  string
	}{
		{"edge without the root key", nil, "canister signatures need the IC root key"},
		{"edge of another network", other.RootKey(), "delegation"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := v.startEdgeWithRootKey(testConfig(fmt.Sprintf("e%d", i)), tc.rootKey)
			c := iiClient(t, v, auth, "user")
			c.dial(e.url, false)
			c.open()
			code, reason := expectClose(t, c.ws)
			if code != websocket.ClosePolicyViolation || !strings.Contains(reason, tc.reason) {
				t.Fatalf("close %d %q, want 1008 naming %q", code, reason, tc.reason)
			}
			if rec := v.session(c); rec != nil {
				t.Fatalf("a session record was written: %+v", rec)
			}
			if n := len(v.inMessages(inSubjectOf(v, c))); n != 0 {
				t.Fatalf("%d messages reached ICWS_IN", n)
			}
		})
	}
}

// An edge refuses a root key that is not one, at start.
func TestEdgeRefusesAMalformedRootKey(t *testing.T) {
	v := newEnv(t)
	if _, err := New(testConfig("e1"), Deps{NC: v.nc, JS: v.js, Gateway: v.gw, RootKey: []byte("not a key")}); err == nil || !strings.Contains(err.Error(), "root key") {
		t.Fatalf("New: %v, want a root key error", err)
	}
}
