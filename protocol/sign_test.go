package protocol

import (
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

func TestSignEnvelope(t *testing.T) {
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	canister := principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")
	exp := time.Unix(1700000000, 0)
	env, rid, err := SignEnvelope(id, SignRequest{Type: RequestCall, Canister: canister, Method: "m", IngressExpiry: exp, Nonce: []byte{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	want, err := HashOfMap(map[string]any{
		"request_type": "call", "canister_id": canister.Raw, "method_name": "m", "arg": []byte{},
		"sender": id.Sender().Raw, "ingress_expiry": uint64(exp.UnixNano()), "nonce": []byte{1, 2},
	})
	if err != nil || rid != RequestID(want) {
		t.Fatalf("request id %x, want %x (%v)", rid, want, err)
	}
	var e struct {
		SenderPubkey []byte `cbor:"sender_pubkey"`
		SenderSig    []byte `cbor:"sender_sig"`
	}
	if err := cbor.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	if !id.Verify(append([]byte("\x0Aic-request"), rid[:]...), e.SenderSig) {
		t.Fatal("signature does not verify")
	}

	// read_state of an anonymous sender: no nonce, no signature, paths hashed as nested arrays.
	paths := [][][]byte{{[]byte("time")}}
	env, rid, err = SignEnvelope(new(identity.AnonymousIdentity), SignRequest{Type: RequestReadState, Paths: paths, IngressExpiry: exp})
	if err != nil {
		t.Fatal(err)
	}
	want, err = HashOfMap(map[string]any{
		"request_type": "read_state", "paths": []any{[]any{[]byte("time")}},
		"sender": principal.AnonymousID.Raw, "ingress_expiry": uint64(exp.UnixNano()),
	})
	if err != nil || rid != RequestID(want) {
		t.Fatalf("read_state request id %x, want %x (%v)", rid, want, err)
	}
	var m map[string]cbor.RawMessage
	if err := cbor.Unmarshal(env, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["sender_sig"]; ok || len(m) != 1 {
		t.Fatalf("anonymous envelope has keys %v, want content only", m)
	}

	for _, bad := range []SignRequest{
		{Type: RequestCall, IngressExpiry: exp},
		{Type: RequestCall, Canister: canister},
		{Type: "bogus", IngressExpiry: exp},
		{Type: RequestQuery, Canister: canister, IngressExpiry: exp, Nonce: make([]byte, 33)},
	} {
		if _, _, err := SignEnvelope(id, bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, _, err := SignEnvelope(nil, SignRequest{Type: RequestCall, Canister: canister, IngressExpiry: exp}); err == nil {
		t.Error("nil identity accepted")
	}
}
