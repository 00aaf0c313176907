package edge

import (
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

// tamper decodes a signed envelope, lets change edit it as a generic map, and encodes it again.
func tamper(t *testing.T, env []byte, change func(m map[any]any)) []byte {
	t.Helper()
	var m map[any]any
	if err := cbor.Unmarshal(protocol.StripSelfDescribe(env), &m); err != nil {
		t.Fatal(err)
	}
	change(m)
	b, err := cbor.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func content(m map[any]any) map[any]any { return m["content"].(map[any]any) }

// A first frame the client did not sign as the IC requires is refused before it has any effect:
// no session record, nothing in ICWS_IN, no subscription.
func TestForgedOpenHasNoEffect(t *testing.T) {
	v := newEnv(t)
	e := v.startEdge(testConfig("e1"))
	cases := []struct {
		name   string
		env    func(c *client) []byte
		reason string
	}{
		{"garbage signature", func(c *client) []byte {
			return tamper(t, c.openEnvelope(v.gw), func(m map[any]any) { m["sender_sig"] = make([]byte, 64) })
		}, "signature"},
		{"another principal's key", func(c *client) []byte {
			victim := testkit.NewIdentity(t)
			return tamper(t, c.openEnvelope(v.gw), func(m map[any]any) { content(m)["sender"] = victim.Sender().Raw })
		}, "signature"},
		{"unsigned", func(c *client) []byte {
			return tamper(t, c.openEnvelope(v.gw), func(m map[any]any) { delete(m, "sender_sig"); delete(m, "sender_pubkey") })
		}, "signature"},
		{"expired", func(c *client) []byte {
			return tamper(t, c.openEnvelope(v.gw), func(m map[any]any) {
				content(m)["ingress_expiry"] = uint64(time.Now().Add(-time.Minute).UnixNano())
			})
		}, "expiry"},
		{"expiry too far ahead", func(c *client) []byte {
			return tamper(t, c.openEnvelope(v.gw), func(m map[any]any) {
				content(m)["ingress_expiry"] = uint64(time.Now().Add(time.Hour).UnixNano())
			})
		}, "expiry"},
		{"anonymous", func(c *client) []byte {
			return tamper(t, c.openEnvelope(v.gw), func(m map[any]any) {
				delete(m, "sender_sig")
				delete(m, "sender_pubkey")
				content(m)["sender"] = []byte{4}
			})
		}, "anonymous"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, v.gw, randomCanister(t))
			c.dial(e.url, true)
			c.sendEnvelope(tc.env(c))
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
	testkit.WaitFor(t, 5*time.Second, "sockets gone", func() bool { return e.connCount() == 0 })
	e.mu.RLock()
	defer e.mu.RUnlock()
	if len(e.liveSubs)+len(e.byKey) != 0 {
		t.Fatalf("%d subscriptions and %d sessions left", len(e.liveSubs), len(e.byKey))
	}
}

// Within a session, a ws_message that is not the session client's own signed call closes the
// socket and is not relayed; what was relayed before stays.
func TestForgedMessageIsNotRelayed(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	cases := []struct {
		name   string
		env    func(c *client) []byte
		reason string
	}{
		{"garbage signature", func(c *client) []byte {
			return tamper(t, c.messageEnvelope(2, false), func(m map[any]any) { flipByte(m["sender_sig"].([]byte)) })
		}, "signature"},
		{"signed by another key for the session's principal", func(c *client) []byte {
			other := newClient(t, v.gw, c.canister)
			other.nonce = c.nonce
			env := other.messageEnvelope(2, false)
			return tamper(t, env, func(m map[any]any) { content(m)["sender"] = c.id.Sender().Raw })
		}, "signature"},
		{"another canister", func(c *client) []byte {
			other := *c
			other.canister = randomCanister(t)
			return other.messageEnvelope(2, false)
		}, "another canister"},
		{"another method", func(c *client) []byte {
			arg, _ := candid.Marshal([]any{protocol.CanisterWsCloseArguments{ClientKey: c.key()}})
			return signedEnvelope(t, c.id, c.canister, "ws_close", arg)
		}, "only ws_message"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := openedClient(t, v, e.url, false)
			c.send()
			testkit.WaitFor(t, 5*time.Second, "first message stored", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 2 })
			c.sendEnvelope(tc.env(c))
			code, reason := expectClose(t, c.ws)
			if code != websocket.ClosePolicyViolation || !strings.Contains(reason, tc.reason) {
				t.Fatalf("close %d %q, want 1008 naming %q", code, reason, tc.reason)
			}
			// The session ends normally: open, the first message, and the close request.
			testkit.WaitFor(t, 5*time.Second, "close request", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 3 })
			msgs := v.inMessages(inSubjectOf(v, c))
			if msgs[1].clientSeq != "1" || msgs[2].kind != "close" {
				t.Fatalf("ICWS_IN: %+v", msgs)
			}
		})
	}
}

func flipByte(b []byte) { b[len(b)/2] ^= 0xff }
