package protocol

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// Hand-built envelopes, for the checks no agent would make fail.

var (
	testNow      = time.Unix(1_750_000_000, 0)
	testCanister = principal.MustDecode("rrkah-fqaaa-aaaaa-aaaaq-cai")
	otherCan     = principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai")
	testPolicy   = IngressPolicy{MaxTTL: 5 * time.Minute, Drift: 30 * time.Second}
)

// keyTypes are the identities agents sign with, one of each kind.
func keyTypes(t testing.TB) map[string]identity.Identity {
	t.Helper()
	k1, err := identity.NewRandomSecp256k1Identity()
	if err != nil {
		t.Fatal(err)
	}
	p256, err := identity.NewRandomPrime256v1Identity()
	if err != nil {
		t.Fatal(err)
	}
	return map[string]identity.Identity{"ed25519": newEd25519(t), "secp256k1": k1, "p256": p256}
}

func newEd25519(t testing.TB) identity.Identity {
	t.Helper()
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// content is the content map of a request of typ from sender, expiring 3 minutes after testNow.
func content(typ string, sender principal.Principal) map[string]any {
	c := map[string]any{
		"request_type":   typ,
		"sender":         sender.Raw,
		"ingress_expiry": uint64(testNow.Add(3 * time.Minute).UnixNano()),
		"nonce":          []byte("0123456789abcdef"),
	}
	switch typ {
	case RequestCall, RequestQuery:
		c["canister_id"] = testCanister.Raw
		c["method_name"] = "echo"
		c["arg"] = []byte("DIDL\x00\x00")
	case RequestReadState:
		c["paths"] = []any{[]any{[]byte("time")}}
	}
	return c
}

type testDelegation struct {
	Delegation map[string]any `cbor:"delegation"`
	Signature  []byte         `cbor:"signature"`
}

// delegate is a delegation from "from" to "to" until exp, restricted to targets unless nil.
func delegate(t testing.TB, from, to identity.Identity, exp time.Time, targets ...principal.Principal) testDelegation {
	t.Helper()
	d := map[string]any{"pubkey": to.PublicKey(), "expiration": uint64(exp.UnixNano())}
	if targets != nil {
		ts := make([]any, len(targets))
		for i, tg := range targets {
			ts[i] = tg.Raw
		}
		d["targets"] = ts
	}
	h, err := HashOfMap(d)
	if err != nil {
		t.Fatal(err)
	}
	return testDelegation{Delegation: d, Signature: from.Sign(append([]byte("\x1Aic-request-auth-delegation"), h[:]...))}
}

// envelope encodes {content, sender_pubkey, sender_sig, sender_delegation}: the public key is
// id's (none when id is nil or anonymous), the signature signer's (id when nil).
func envelope(t testing.TB, c map[string]any, id identity.Identity, dels []testDelegation, signer identity.Identity) []byte {
	t.Helper()
	m := envelopeMap(t, c, id, dels, signer)
	b, err := cbor.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func envelopeMap(t testing.TB, c map[string]any, id identity.Identity, dels []testDelegation, signer identity.Identity) map[string]any {
	t.Helper()
	raw, err := cbor.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	rid, err := RequestIDOfContent(raw)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{"content": cbor.RawMessage(raw)}
	if id != nil && id.PublicKey() != nil {
		if signer == nil {
			signer = id
		}
		m["sender_pubkey"] = id.PublicKey()
		m["sender_sig"] = signer.Sign(append([]byte("\x0Aic-request"), rid[:]...))
		if dels != nil {
			m["sender_delegation"] = dels
		}
	}
	return m
}

// reencode replaces one key of an encoded envelope.
func reencode(t testing.TB, env []byte, key string, value any) []byte {
	t.Helper()
	var m map[string]cbor.RawMessage
	if err := cbor.Unmarshal(env, &m); err != nil {
		t.Fatal(err)
	}
	v, err := cbor.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	m[key] = v
	b, err := cbor.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fieldOf decodes one key of an encoded envelope.
func fieldOf(t testing.TB, env []byte, key string, out any) {
	t.Helper()
	var m map[string]cbor.RawMessage
	if err := cbor.Unmarshal(env, &m); err != nil {
		t.Fatal(err)
	}
	if err := cbor.Unmarshal(m[key], out); err != nil {
		t.Fatal(err)
	}
}

// fixedEd25519 is an Ed25519 identity from a fixed seed, for reproducible seed corpora.
func fixedEd25519(t testing.TB, seed byte) identity.Identity {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	priv := ed25519.NewKeyFromSeed(s)
	id, err := identity.NewEd25519Identity(priv.Public().(ed25519.PublicKey), priv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
