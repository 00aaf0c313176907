package replica_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/replica"
)

// TestIngressValidation: the replica answers every refusal of protocol's ingress verifier (whose
// own tests hold the hand-built envelopes, check by check) as the IC does, 400 with the IC's text,
// and checks what only the URL can tell: the effective canister id, before any signature.
func TestIngressValidation(t *testing.T) {
	e := start(t, replica.Config{MaxRequestBytes: 64 << 10})
	ids := identities(t)
	ed, k1, p256 := ids["ed25519"], ids["secp256k1"], ids["p256"]
	session := testkit.NewIdentity(t)
	other := principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai")
	echo := testkit.CandidArgs(t, "x")
	future := time.Now().Add(time.Hour)

	type tc struct {
		name     string
		url      string // default: v3 call of the test canister
		body     func() []byte
		status   int
		contains string
	}
	call := func(id identity.Identity, mod func(map[string]any)) []byte {
		c := callContent(t, "call", id.Sender(), "echo", echo)
		if mod != nil {
			mod(c)
		}
		b, _ := envelope(t, c, id, nil, nil)
		return b
	}
	withDelegation := func(dels func() []signedDelegation, signer identity.Identity) func() []byte {
		return func() []byte {
			c := callContent(t, "call", ed.Sender(), "echo", echo)
			b, _ := envelope(t, c, ed, dels(), signer)
			return b
		}
	}
	cases := []tc{
		{name: "ed25519 ok", body: func() []byte { return call(ed, nil) }, status: 200},
		{name: "secp256k1 ok", body: func() []byte { return call(k1, nil) }, status: 200},
		{name: "p256 ok", body: func() []byte { return call(p256, nil) }, status: 200},
		{name: "anonymous ok", body: func() []byte { return call(ids["anonymous"], nil) }, status: 200},
		{name: "self-describe tag tolerated", body: func() []byte { return append([]byte{0xd9, 0xd9, 0xf7}, call(ed, nil)...) }, status: 200},
		{name: "delegation ok", body: withDelegation(func() []signedDelegation {
			return []signedDelegation{delegate(t, ed, session, future, [][]byte{testCanisterID.Raw})}
		}, session), status: 200},
		// One refusal of each kind of the verifier.
		{name: "malformed CBOR", body: func() []byte { return []byte{0xa1, 0x67, 'c', 'o'} }, status: 400, contains: "Could not parse body as call message"},
		{name: "empty body", body: func() []byte { return nil }, status: 400, contains: "Could not parse body"},
		{name: "query envelope on call endpoint", body: func() []byte {
			return call(ed, func(c map[string]any) { c["request_type"] = "query" })
		}, status: 400, contains: "request_type"},
		{name: "expired", body: func() []byte {
			return call(ed, func(c map[string]any) { c["ingress_expiry"] = uint64(time.Now().Add(-time.Second).UnixNano()) })
		}, status: 400, contains: "Specified ingress_expiry not within expected range"},
		{name: "nonce too long", body: func() []byte {
			return call(ed, func(c map[string]any) { c["nonce"] = nonce(t, 33) })
		}, status: 400, contains: "Invalid nonce"},
		{name: "signature by another key", body: func() []byte {
			c := callContent(t, "call", ed.Sender(), "echo", echo)
			b, _ := envelope(t, c, ed, nil, session)
			return b
		}, status: 400, contains: "Invalid signature"},
		{name: "delegation wrong target", body: withDelegation(func() []signedDelegation {
			return []signedDelegation{delegate(t, ed, session, future, [][]byte{other.Raw})}
		}, session), status: 400, contains: "not one of the delegation targets"},
		// The URL.
		{name: "canister id differs from URL", url: e.endpoint("v3", other.String(), "call"),
			body: func() []byte { return call(ed, nil) }, status: 400, contains: "does not match effective canister id in URL"},
		{name: "canister id differs from URL, checked before the signature", url: e.endpoint("v3", other.String(), "call"),
			body: func() []byte {
				c := callContent(t, "call", ed.Sender(), "echo", echo)
				b, _ := envelope(t, c, ed, nil, session)
				return b
			}, status: 400, contains: "does not match effective canister id in URL"},
		{name: "unknown canister", url: e.endpoint("v3", other.String(), "call"), body: func() []byte {
			return call(ed, func(c map[string]any) { c["canister_id"] = other.Raw })
		}, status: 200, contains: "non_replicated_rejection"},
		{name: "unknown canister v2", url: e.endpoint("v2", other.String(), "call"), body: func() []byte {
			return call(ed, func(c map[string]any) { c["canister_id"] = other.Raw })
		}, status: 200, contains: "IC0301"},
		{name: "bad ecid in URL", url: e.endpoint("v3", "not-a-principal", "call"), body: func() []byte { return call(ed, nil) }, status: 400},
		{name: "body too large", body: func() []byte { return bytes.Repeat([]byte{0}, 65<<10) }, status: 413},
		{name: "v2 call accepted", url: e.endpoint("v2", testCanisterID.String(), "call"), body: func() []byte { return call(ed, nil) }, status: 202},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := c.url
			if u == "" {
				u = e.endpoint("v3", testCanisterID.String(), "call")
			}
			code, body := post(t, u, c.body())
			if code != c.status {
				t.Fatalf("HTTP %d, want %d: %s", code, c.status, body)
			}
			if !strings.Contains(string(body), c.contains) {
				t.Fatalf("body %q does not contain %q", body, c.contains)
			}
			if code == 400 || code == 413 {
				// Errors are text/plain, never CBOR.
				if body[0] == 0xd9 {
					t.Fatalf("error body is CBOR")
				}
			}
		})
	}
}

// TestUnknownCanisterRejection checks the exact non-replicated rejection.
func TestUnknownCanisterRejection(t *testing.T) {
	e := start(t, replica.Config{})
	other := principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai")
	c := callContent(t, "call", principal.AnonymousID, "echo", testkit.CandidArgs(t, "x"))
	c["canister_id"] = other.Raw
	b, _ := envelope(t, c, nil, nil, nil)
	code, body := post(t, e.endpoint("v3", other.String(), "call"), b)
	var ans struct {
		Status        string `cbor:"status"`
		RejectCode    uint64 `cbor:"reject_code"`
		RejectMessage string `cbor:"reject_message"`
		ErrorCode     string `cbor:"error_code"`
	}
	if err := cbor.Unmarshal(body, &ans); err != nil || code != 200 {
		t.Fatalf("HTTP %d %x: %v", code, body, err)
	}
	want := "Canister " + other.String() + " not found"
	if ans.Status != "non_replicated_rejection" || ans.RejectCode != 3 || ans.RejectMessage != want || ans.ErrorCode != "IC0301" {
		t.Fatalf("answer %+v", ans)
	}
	// A query to it is a signed rejection, as on the IC.
	a := e.agent(t, nil)
	err := a.Query(other, "greet", []any{"x"}, []any{new(string)})
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "IC0301") {
		t.Fatalf("query: %v", err)
	}
}

// TestRepeatedRequestID: the same envelope submitted again (v3, v3, v2) executes once and every
// v3 answer certifies the first outcome.
func TestRepeatedRequestID(t *testing.T) {
	e := start(t, replica.Config{})
	id := identities(t)["ed25519"]
	arg := testkit.CandidArgs(t, "only once")
	body, reqID := envelope(t, callContent(t, "call", id.Sender(), "echo", arg), id, nil, nil)
	for i, ep := range []string{"v3", "v3", "v2", "v3"} {
		code, resp := post(t, e.endpoint(ep, testCanisterID.String(), "call"), body)
		if ep == "v2" {
			if code != http.StatusAccepted {
				t.Fatalf("v2: HTTP %d %s", code, resp)
			}
			continue
		}
		if code != 200 {
			t.Fatalf("submission %d: HTTP %d %s", i, code, resp)
		}
		reply := certifiedReply(t, e, resp, reqID[:])
		if !bytes.Equal(reply, arg) {
			t.Fatalf("submission %d: reply %x", i, reply)
		}
	}
	if n := e.can.count(arg); n != 1 {
		t.Fatalf("executed %d times, want 1", n)
	}
}

// Test202: a v3 call slower than SyncCallTimeout is answered 202 and still executes once; a
// re-submission afterwards returns its certified reply.
func Test202(t *testing.T) {
	e := start(t, replica.Config{UpdateLatency: 300 * time.Millisecond, SyncCallTimeout: 20 * time.Millisecond})
	arg := testkit.CandidArgs(t, "later")
	body, reqID := envelope(t, callContent(t, "call", principal.AnonymousID, "echo", arg), nil, nil, nil)
	code, resp := post(t, e.endpoint("v3", testCanisterID.String(), "call"), body)
	if code != http.StatusAccepted {
		t.Fatalf("HTTP %d %s, want 202", code, resp)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, resp = post(t, e.endpoint("v3", testCanisterID.String(), "call"), body)
		if code == 200 {
			break
		}
		if code != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("HTTP %d %s", code, resp)
		}
	}
	if reply := certifiedReply(t, e, resp, reqID[:]); !bytes.Equal(reply, arg) {
		t.Fatalf("reply %x", reply)
	}
	if n := e.can.count(arg); n != 1 {
		t.Fatalf("executed %d times", n)
	}
}
