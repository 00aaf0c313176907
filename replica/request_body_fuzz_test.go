package replica_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/replica"
)

// bodyCanister answers every update and query with its argument, without decoding it: the
// target is the replica's handling of request bodies, not a canister's decoder.
type bodyCanister struct{}

func (bodyCanister) Update(_ context.Context, c replica.Call) ([]byte, error) { return c.Arg, nil }
func (bodyCanister) Query(_ context.Context, c replica.Call) ([]byte, error)  { return c.Arg, nil }

// FuzzReplicaRequestBody feeds bodies to the call (v2, v3), query and read_state (canister and
// subnet) handlers through httptest, no network. Property: no panic (the handlers' recovery would
// answer 500) and no 5xx: every refusal of a body is a 4xx. With fresh set, a body that is an
// envelope gets an ingress_expiry inside the window before it is sent, so mutations of
// anonymous envelopes reach the handlers behind the verifier.
func FuzzReplicaRequestBody(f *testing.F) {
	r, err := replica.New(replica.Config{Logger: slog.New(slog.DiscardHandler), SyncCallTimeout: 5 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	if err := r.Install(testCanisterID, func(replica.Host) (replica.Canister, error) { return bodyCanister{}, nil }); err != nil {
		f.Fatal(err)
	}
	h := r.Handler()
	routes := []string{
		"/api/v2/canister/" + testCanisterID.String() + "/call",
		"/api/v3/canister/" + testCanisterID.String() + "/call",
		"/api/v2/canister/" + testCanisterID.String() + "/query",
		"/api/v3/canister/" + testCanisterID.String() + "/query",
		"/api/v2/canister/" + testCanisterID.String() + "/read_state",
		"/api/v3/canister/" + testCanisterID.String() + "/read_state",
		"/api/v3/subnet/" + r.SubnetID().String() + "/read_state",
	}
	post := func(route uint8, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, routes[int(route)%len(routes)], bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/cbor")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	ids := identities(f)
	arg := testkit.CandidArgs(f, "x")
	call, reqID := envelope(f, callContent(f, "call", principal.AnonymousID, "echo", arg), nil, nil, nil)
	if rec := post(1, call); rec.Code != http.StatusOK {
		f.Fatalf("seed call: HTTP %d %s", rec.Code, rec.Body)
	}
	for _, name := range []string{"anonymous", "ed25519", "secp256k1", "p256"} {
		id := ids[name]
		signedCall, _ := envelope(f, callContent(f, "call", id.Sender(), "echo", arg), id, nil, nil)
		query, _ := envelope(f, callContent(f, "query", id.Sender(), "greet", arg), id, nil, nil)
		f.Add(uint8(0), false, signedCall)
		f.Add(uint8(1), false, signedCall)
		f.Add(uint8(2), false, query)
		f.Add(uint8(3), false, query)
	}
	for _, paths := range [][][][]byte{
		{labels("time")},
		{labels("request_status", reqID[:])},
		{labels("request_status", reqID[:], "reply")},
		{labels("canister", testCanisterID.Raw, "module_hash")},
		{labels("canister", testCanisterID.Raw, "metadata", "candid:service")},
		{labels("subnet")},
		{labels("subnet", r.SubnetID().Raw, "public_key")},
		{labels("api_boundary_nodes")},
	} {
		body := readStateBody(f, nil, paths...)
		f.Add(uint8(4), true, body)
		f.Add(uint8(5), true, body)
		f.Add(uint8(6), true, body)
	}
	f.Add(uint8(1), true, call)
	f.Add(uint8(0), false, []byte{})

	f.Fuzz(func(t *testing.T, route uint8, fresh bool, body []byte) {
		if fresh {
			body = withFreshExpiry(body)
		}
		rec := post(route, body)
		if rec.Code >= 500 {
			t.Fatalf("HTTP %d for %x: %s", rec.Code, body, rec.Body)
		}
	})
}

// withFreshExpiry sets the ingress_expiry of an envelope's content to a minute from now; a body
// that is not a map with a content map is returned as it is.
func withFreshExpiry(body []byte) []byte {
	var env map[string]cbor.RawMessage
	if cbor.Unmarshal(body, &env) != nil {
		return body
	}
	var content map[string]cbor.RawMessage
	if cbor.Unmarshal(env["content"], &content) != nil || content == nil {
		return body
	}
	exp, err := cbor.Marshal(uint64(time.Now().Add(time.Minute).UnixNano()))
	if err != nil {
		panic(fmt.Sprintf("encode expiry: %v", err))
	}
	content["ingress_expiry"] = exp
	raw, err := cbor.Marshal(content)
	if err != nil {
		return body
	}
	env["content"] = raw
	out, err := cbor.Marshal(env)
	if err != nil {
		return body
	}
	return out
}
