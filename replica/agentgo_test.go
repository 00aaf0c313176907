package replica_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/replica"
)

// TestAgentGo drives the replica with agent-go v0.8.0 (query signature verification on) for every
// identity type, in both key layouts.
func TestAgentGo(t *testing.T) {
	for _, layout := range []struct {
		name string
		cfg  replica.Config
	}{{"delegation", replica.Config{}}, {"root-only", replica.Config{NoDelegation: true}}} {
		t.Run(layout.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, layout.cfg)
			for name, id := range identities(t) {
				t.Run(name, func(t *testing.T) {
					a := e.agent(t, id)
					if !bytes.Equal(a.GetRootKey(), e.r.RootKey()) || len(e.r.RootKey()) != 133 {
						t.Fatalf("root key %x, want the replica's 133-byte key", a.GetRootKey())
					}
					var out string
					if err := a.Call(testCanisterID, "echo", []any{"hi " + name}, []any{&out}); err != nil {
						t.Fatalf("call echo: %v", err)
					}
					if out != "hi "+name {
						t.Fatalf("echo = %q", out)
					}
					var who principal.Principal
					if err := a.Call(testCanisterID, "whoami", []any{}, []any{&who}); err != nil {
						t.Fatalf("call whoami: %v", err)
					}
					if !who.Equal(id.Sender()) {
						t.Fatalf("caller %s, want %s", who, id.Sender())
					}
					if err := a.Query(testCanisterID, "greet", []any{name}, []any{&out}); err != nil {
						t.Fatalf("query greet: %v", err)
					}
					if out != "Hello, "+name+"!" {
						t.Fatalf("greet = %q", out)
					}
					if err := a.Query(testCanisterID, "whoami", []any{}, []any{&who}); err != nil || !who.Equal(id.Sender()) {
						t.Fatalf("query whoami = %s, %v", who, err)
					}
					now, err := a.GetTime(testCanisterID)
					if err != nil {
						t.Fatalf("GetTime: %v", err)
					}
					if d := time.Since(now); d < -time.Second || d > 5*time.Second {
						t.Fatalf("certified time %s is %s off", now, d)
					}
					// Rejections, certified (update) and signed (query).
					err = a.Call(testCanisterID, "trap", []any{}, []any{})
					if err == nil || !strings.Contains(err.Error(), "IC0503") || !strings.Contains(err.Error(), "boom") {
						t.Fatalf("trap: %v", err)
					}
					err = a.Call(testCanisterID, "nope", []any{}, []any{})
					if err == nil || !strings.Contains(err.Error(), "IC0536") || !strings.Contains(err.Error(), "has no update method 'nope'") {
						t.Fatalf("unknown update method: %v", err)
					}
					err = a.Query(testCanisterID, "nope", []any{}, []any{})
					if err == nil || !strings.Contains(err.Error(), "IC0536") || !strings.Contains(err.Error(), "has no query method 'nope'") {
						t.Fatalf("unknown query method: %v", err)
					}
					err = a.Query(testCanisterID, "trap_query", []any{}, []any{})
					if err == nil || !strings.Contains(err.Error(), "IC0503") {
						t.Fatalf("trapping query: %v", err)
					}
					err = a.Call(testCanisterID, "reject", []any{}, []any{})
					if err == nil || !strings.Contains(err.Error(), "(4) no thanks: IC0406") {
						t.Fatalf("reject: %v", err)
					}
					err = a.Call(testCanisterID, "panic", []any{}, []any{})
					if err == nil || !strings.Contains(err.Error(), "IC0503") {
						t.Fatalf("panic: %v", err)
					}
					// Public metadata and canister info through read_state.
					md, err := a.GetCanisterMetadata(testCanisterID, "candid:service")
					if err != nil || string(md) != testCandid {
						t.Fatalf("metadata = %q, %v", md, err)
					}
					if _, err := a.GetCanisterControllers(testCanisterID); err != nil {
						t.Fatalf("controllers: %v", err)
					}
					if h, err := a.GetCanisterModuleHash(testCanisterID); err != nil || len(h) != 32 {
						t.Fatalf("module hash %x, %v", h, err)
					}
				})
			}
			if e.can.overlap.Load() {
				t.Fatal("two updates ran at once")
			}
		})
	}
}

// TestAgentGoPolling: a call slower than SyncCallTimeout is answered 202, agent-go polls
// read_state (verifying those certificates) and gets the reply.
func TestAgentGoPolling(t *testing.T) {
	e := start(t, replica.Config{UpdateLatency: 700 * time.Millisecond, SyncCallTimeout: 50 * time.Millisecond})
	for name, id := range identities(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := e.agent(t, id, func(c *agent.Config) {
				c.PollDelay = 100 * time.Millisecond
				c.PollTimeout = 20 * time.Second
			})
			var out string
			if err := a.Call(testCanisterID, "echo", []any{"slow " + name}, []any{&out}); err != nil {
				t.Fatalf("call: %v", err)
			}
			if out != "slow "+name {
				t.Fatalf("echo = %q", out)
			}
			if n := e.can.count(testkit.CandidArgs(t, "slow "+name)); n != 1 {
				t.Fatalf("executed %d times", n)
			}
		})
	}
}

// TestV3CertificateVerified verifies what agent-go does not: the certificate of a v3 answer.
func TestV3CertificateVerified(t *testing.T) {
	for _, cfg := range []replica.Config{{}, {NoDelegation: true}} {
		e := start(t, cfg)
		ids := identities(t)
		for _, tc := range []struct {
			method, status string
		}{{"echo", "replied"}, {"trap", "rejected"}, {"nope", "rejected"}} {
			arg := testkit.CandidArgs(t, "v3 "+tc.method)
			id := ids["secp256k1"]
			body, reqID := envelope(t, callContent(t, "call", id.Sender(), tc.method, arg), id, nil, nil)
			code, resp := post(t, e.endpoint("v3", testCanisterID.String(), "call"), body)
			if code != 200 {
				t.Fatalf("%s: HTTP %d %s", tc.method, code, resp)
			}
			var ans struct {
				Status      string `cbor:"status"`
				Certificate []byte `cbor:"certificate"`
			}
			if err := cbor.Unmarshal(resp, &ans); err != nil || ans.Status != "replied" {
				t.Fatalf("answer %+v: %v", ans, err)
			}
			var cert certification.Certificate
			if err := cbor.Unmarshal(ans.Certificate, &cert); err != nil {
				t.Fatal(err)
			}
			if err := certification.VerifyCertificate(cert, testCanisterID, e.r.RootKey()); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if err := cert.VerifyTime(time.Minute); err != nil {
				t.Fatalf("time: %v", err)
			}
			if (cert.Delegation != nil) == cfg.NoDelegation {
				t.Fatalf("delegation present = %v with NoDelegation %v", cert.Delegation != nil, cfg.NoDelegation)
			}
			path := []hashtree.Label{hashtree.Label("request_status"), reqID[:]}
			st, err := cert.Tree.Lookup(append(path, hashtree.Label("status"))...)
			if err != nil || string(st) != tc.status {
				t.Fatalf("%s: status %q, %v", tc.method, st, err)
			}
			if tc.status == "replied" {
				reply, err := cert.Tree.Lookup(append(path, hashtree.Label("reply"))...)
				if err != nil || !bytes.Equal(reply, arg) {
					t.Fatalf("reply %x, %v", reply, err)
				}
			} else {
				ec, err := cert.Tree.Lookup(append(path, hashtree.Label("error_code"))...)
				if err != nil || len(ec) == 0 {
					t.Fatalf("error_code %q, %v", ec, err)
				}
			}
			// The same status through read_state, as agent-go reads it, signed by the same identity.
			a := e.agent(t, id)
			st, _, err = a.RequestStatus(testCanisterID, agent.RequestID(reqID))
			if err != nil || string(st) != tc.status {
				t.Fatalf("read_state status %q, %v", st, err)
			}
		}
	}
}

// TestDataCertificate: certified data set by an update is certified in a query's data certificate.
func TestDataCertificate(t *testing.T) {
	e := start(t, replica.Config{})
	a := e.agent(t, nil)
	if err := a.Call(testCanisterID, "set_certified", []any{"state 1"}, []any{}); err != nil {
		t.Fatal(err)
	}
	var data, raw []byte
	if err := a.Query(testCanisterID, "cert", []any{}, []any{&data, &raw}); err != nil {
		t.Fatal(err)
	}
	var cert certification.Certificate
	if err := cbor.Unmarshal(raw, &cert); err != nil {
		t.Fatal(err)
	}
	if len(data) != 32 {
		t.Fatalf("certified data %x", data)
	}
	if err := certification.VerifyCertifiedData(cert, testCanisterID, e.r.RootKey(), data); err != nil {
		t.Fatalf("verify certified data: %v", err)
	}
	if err := cert.VerifyTime(time.Minute); err != nil {
		t.Fatal(err)
	}
}
