package protocol

import (
	"bytes"
	"crypto/elliptic"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/aviate-labs/secp256k1"
	"github.com/fxamacker/cbor/v2"
)

type verifyCase struct {
	name     string
	typ      string // default call
	env      func() []byte
	kind     IngressErrorKind // 0: accepted
	contains string
}

func runVerifyCases(t *testing.T, cases []verifyCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			typ := c.typ
			if typ == "" {
				typ = RequestCall
			}
			req, err := testPolicy.VerifyEnvelope(c.env(), typ, testNow)
			if c.kind == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if req.Type != typ {
					t.Fatalf("request type %q", req.Type)
				}
				return
			}
			var ie *IngressError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v (%T), want an *IngressError of kind %s", err, err, c.kind)
			}
			if ie.Kind != c.kind || !strings.Contains(ie.Msg, c.contains) || ie.Error() != ie.Msg {
				t.Fatalf("refused as %s %q, want %s containing %q", ie.Kind, ie.Msg, c.kind, c.contains)
			}
		})
	}
}

// Every check, for every key type agents sign with.
func TestVerifyEnvelopeKeyTypes(t *testing.T) {
	for name, id := range keyTypes(t) {
		t.Run(name, func(t *testing.T) {
			session, other := newEd25519(t), newEd25519(t)
			future := testNow.Add(time.Hour)
			call := func(mod func(map[string]any)) map[string]any {
				c := content(RequestCall, id.Sender())
				if mod != nil {
					mod(c)
				}
				return c
			}
			withChain := func(dels ...testDelegation) func() []byte {
				return func() []byte { return envelope(t, call(nil), id, dels, session) }
			}
			cases := []verifyCase{
				{name: "call", env: func() []byte { return envelope(t, call(nil), id, nil, nil) }},
				{name: "query", typ: RequestQuery, env: func() []byte { return envelope(t, content(RequestQuery, id.Sender()), id, nil, nil) }},
				{name: "read_state", typ: RequestReadState, env: func() []byte { return envelope(t, content(RequestReadState, id.Sender()), id, nil, nil) }},
				{name: "tampered signature", env: func() []byte {
					env := envelope(t, call(nil), id, nil, nil)
					var sig []byte
					fieldOf(t, env, "sender_sig", &sig)
					sig[5] ^= 0xff
					return reencode(t, env, "sender_sig", sig)
				}, kind: IngressSignature, contains: "Invalid basic signature"},
				{name: "truncated signature", env: func() []byte {
					env := envelope(t, call(nil), id, nil, nil)
					var sig []byte
					fieldOf(t, env, "sender_sig", &sig)
					return reencode(t, env, "sender_sig", sig[:len(sig)-1])
				}, kind: IngressSignature, contains: "Invalid basic signature"},
				{name: "signed by another key", env: func() []byte { return envelope(t, call(nil), id, nil, other) },
					kind: IngressSignature, contains: "Invalid basic signature"},
				{name: "signed over another request", env: func() []byte {
					env := envelope(t, call(nil), id, nil, nil)
					var sig []byte
					fieldOf(t, envelope(t, call(func(c map[string]any) { c["method_name"] = "other" }), id, nil, nil), "sender_sig", &sig)
					return reencode(t, env, "sender_sig", sig)
				}, kind: IngressSignature, contains: "Invalid basic signature"},
				{name: "sender is not the key's principal", env: func() []byte {
					return envelope(t, call(func(c map[string]any) { c["sender"] = other.Sender().Raw }), id, nil, nil)
				}, kind: IngressSignature, contains: "does not match the public key"},
				{name: "anonymous sender with a key and signature", env: func() []byte {
					return envelope(t, call(func(c map[string]any) { c["sender"] = principal.AnonymousID.Raw }), id, nil, nil)
				}, kind: IngressSignature, contains: "anonymous user must not send"},
				{name: "unsigned", env: func() []byte { return envelope(t, call(nil), nil, nil, nil) },
					kind: IngressSignature, contains: "Missing signature for non-anonymous sender"},
				{name: "public key without signature", env: func() []byte {
					m := envelopeMap(t, call(nil), id, nil, nil)
					delete(m, "sender_sig")
					b, _ := cbor.Marshal(m)
					return b
				}, kind: IngressSignature, contains: "must both be present"},
				{name: "delegation to a session key", env: withChain(delegate(t, id, session, future, testCanister))},
				{name: "delegation expired", env: withChain(delegate(t, id, session, testNow.Add(-time.Second))),
					kind: IngressDelegation, contains: "Delegation 0 has expired"},
				{name: "delegation for another canister", env: withChain(delegate(t, id, session, future, otherCan)),
					kind: IngressDelegation, contains: "is not one of the delegation targets"},
				{name: "delegation signed by another key", env: withChain(delegate(t, other, session, future)),
					kind: IngressDelegation, contains: "Invalid signature of delegation 0"},
				{name: "request signed by the delegator", env: func() []byte {
					return envelope(t, call(nil), id, []testDelegation{delegate(t, id, session, future)}, id)
				}, kind: IngressSignature, contains: "Invalid basic signature"},
				{name: "delegation chain too long", env: func() []byte {
					dels := make([]testDelegation, 21)
					for i := range dels {
						dels[i] = delegate(t, id, session, future)
					}
					return envelope(t, call(nil), id, dels, session)
				}, kind: IngressDelegation, contains: "Chain of delegations is too long"},
				{name: "delegation cycle", env: func() []byte {
					dels := []testDelegation{delegate(t, id, session, future), delegate(t, session, id, future)}
					return envelope(t, call(nil), id, dels, id)
				}, kind: IngressDelegation, contains: "contains a cycle"},
				{name: "expired", env: func() []byte {
					return envelope(t, call(func(c map[string]any) { c["ingress_expiry"] = uint64(testNow.Add(-time.Nanosecond).UnixNano()) }), id, nil, nil)
				}, kind: IngressExpiry, contains: "Specified ingress_expiry not within expected range"},
				{name: "expiry too far", env: func() []byte {
					return envelope(t, call(func(c map[string]any) {
						c["ingress_expiry"] = uint64(testNow.Add(5*time.Minute + 31*time.Second).UnixNano())
					}), id, nil, nil)
				}, kind: IngressExpiry, contains: "Specified ingress_expiry not within expected range"},
				{name: "expiry at the end of the window", env: func() []byte {
					return envelope(t, call(func(c map[string]any) {
						c["ingress_expiry"] = uint64(testNow.Add(5*time.Minute + 30*time.Second).UnixNano())
					}), id, nil, nil)
				}},
			}
			if name != "ed25519" {
				cases = append(cases, verifyCase{name: "high S accepted", env: func() []byte {
					env := envelope(t, call(nil), id, nil, nil)
					var sig []byte
					fieldOf(t, env, "sender_sig", &sig)
					return reencode(t, env, "sender_sig", flipS(t, name, sig))
				}})
			}
			runVerifyCases(t, cases)
		})
	}
}

// flipS turns an ECDSA signature r‖s into the equally valid r‖(n-s).
func flipS(t *testing.T, curve string, sig []byte) []byte {
	t.Helper()
	n := elliptic.P256().Params().N
	if curve == "secp256k1" {
		n = secp256k1.S256().N
	}
	s := new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:]))
	out := append([]byte{}, sig[:32]...)
	return append(out, s.FillBytes(make([]byte, 32))...)
}

// The request as verified: every field of the content, the delegation targets.
func TestVerifyEnvelopeRequest(t *testing.T) {
	id, session := newEd25519(t), newEd25519(t)
	future := testNow.Add(time.Hour)
	c := content(RequestCall, id.Sender())
	dels := []testDelegation{delegate(t, id, session, future, testCanister, otherCan)}
	env := envelope(t, c, id, dels, session)
	req, err := testPolicy.VerifyEnvelope(append(append([]byte{}, SelfDescribeTag...), env...), RequestCall, testNow)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := RequestIDOfEnvelope(env)
	if req.ID != want || !req.Sender.Equal(id.Sender()) || req.Anonymous || !req.Canister.Equal(testCanister) ||
		req.Method != "echo" || string(req.Arg) != "DIDL\x00\x00" || string(req.Nonce) != "0123456789abcdef" ||
		!req.Expiry.Equal(testNow.Add(3*time.Minute)) || len(req.Targets) != 2 {
		t.Fatalf("request %+v", req)
	}
	if !req.TargetAllowed(otherCan) || req.TargetAllowed(principal.MustDecode("aaaaa-aa")) {
		t.Fatal("targets")
	}

	// Of "content" and "Content", the one the IC reads is the one verified.
	other := content(RequestCall, principal.AnonymousID)
	other["canister_id"] = otherCan.Raw
	m := envelopeMap(t, content(RequestCall, principal.AnonymousID), nil, nil, nil)
	m["Content"] = other
	twoCases, _ := cbor.Marshal(m)
	if req, err := testPolicy.VerifyEnvelope(twoCases, RequestCall, testNow); err != nil || !req.Canister.Equal(testCanister) {
		t.Fatalf("content and Content: %+v, %v", req, err)
	}

	rs := content(RequestReadState, principal.AnonymousID)
	req, err = testPolicy.VerifyEnvelope(envelope(t, rs, nil, nil, nil), RequestReadState, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !req.Anonymous || req.Targets != nil || len(req.Paths) != 1 || string(req.Paths[0][0]) != "time" || !req.TargetAllowed(otherCan) {
		t.Fatalf("read_state request %+v", req)
	}
}

// Delegation chains: length, targets narrowing along the chain, their limits.
func TestVerifyEnvelopeDelegationChains(t *testing.T) {
	id := newEd25519(t)
	future := testNow.Add(time.Hour)
	third := principal.MustDecode("r7inp-6aaaa-aaaaa-aaabq-cai")
	chain := func(n int, targets ...[]principal.Principal) ([]testDelegation, identity.Identity) {
		from := identity.Identity(id)
		dels := make([]testDelegation, n)
		for i := range dels {
			to := newEd25519(t)
			var tg []principal.Principal
			if i < len(targets) {
				tg = targets[i]
			}
			dels[i] = delegate(t, from, to, future, tg...)
			from = to
		}
		return dels, from
	}
	signed := func(dels []testDelegation, last identity.Identity) func() []byte {
		return func() []byte { return envelope(t, content(RequestCall, id.Sender()), id, dels, last) }
	}
	twenty, last20 := chain(20)
	narrowing, lastN := chain(2, []principal.Principal{testCanister, otherCan}, []principal.Principal{otherCan, third})
	narrowingOK, lastOK := chain(2, []principal.Principal{testCanister, otherCan}, []principal.Principal{testCanister, third})
	tooMany := make([]principal.Principal, 1001)
	for i := range tooMany {
		tooMany[i] = testCanister
	}
	wide, lastW := chain(1, tooMany)
	runVerifyCases(t, []verifyCase{
		{name: "20 links", env: signed(twenty, last20)},
		{name: "targets intersected along the chain", env: signed(narrowingOK, lastOK)},
		{name: "targets whose intersection excludes the canister", env: signed(narrowing, lastN),
			kind: IngressDelegation, contains: "not one of the delegation targets"},
		{name: "1001 targets", env: signed(wide, lastW), kind: IngressDelegation, contains: "1001 targets"},
		{name: "delegation without pubkey", env: func() []byte {
			dels, last := chain(1)
			delete(dels[0].Delegation, "pubkey")
			return envelope(t, content(RequestCall, id.Sender()), id, dels, last)
		}, kind: IngressDelegation, contains: "delegation 0 is malformed"},
		{name: "delegation as a number", env: func() []byte {
			m := envelopeMap(t, content(RequestCall, id.Sender()), id, nil, nil)
			m["sender_delegation"] = []any{map[string]any{"delegation": 7, "signature": []byte{1}}}
			b, _ := cbor.Marshal(m)
			return b
		}, kind: IngressDelegation, contains: "delegation 0 is malformed"},
	})
}

// Refusals of the shape of an envelope, the hand-built negatives no agent produces.
func TestVerifyEnvelopeMalformed(t *testing.T) {
	id := newEd25519(t)
	anon := principal.AnonymousID
	signed := func(mod func(map[string]any)) func() []byte {
		return func() []byte {
			c := content(RequestCall, id.Sender())
			mod(c)
			return envelope(t, c, id, nil, nil)
		}
	}
	unsigned := func(mod func(map[string]any)) func() []byte {
		return func() []byte {
			c := content(RequestCall, anon)
			mod(c)
			return envelope(t, c, nil, nil, nil)
		}
	}
	runVerifyCases(t, []verifyCase{
		{name: "anonymous call", env: unsigned(func(map[string]any) {})},
		{name: "anonymous query", typ: RequestQuery, env: func() []byte { return envelope(t, content(RequestQuery, anon), nil, nil, nil) }},
		{name: "malformed CBOR", env: func() []byte { return []byte{0xa1, 0x67, 'c', 'o'} }, kind: IngressMalformed, contains: "Could not parse body as call message"},
		{name: "not a map", env: func() []byte { return []byte{0x83, 1, 2, 3} }, kind: IngressMalformed},
		{name: "empty", env: func() []byte { return nil }, kind: IngressMalformed},
		{name: "no content", env: func() []byte { b, _ := cbor.Marshal(map[string]any{"sender_sig": []byte{1}}); return b },
			kind: IngressMalformed, contains: "missing field `content`"},
		{name: "content not a map", env: func() []byte { b, _ := cbor.Marshal(map[string]any{"content": 5}); return b }, kind: IngressMalformed},
		{name: "content with an integer key", env: func() []byte {
			b, _ := cbor.Marshal(map[string]any{"content": map[any]any{1: "x", "request_type": "call"}})
			return b
		}, kind: IngressMalformed},
		{name: "missing arg", env: unsigned(func(c map[string]any) { delete(c, "arg") }), kind: IngressMalformed, contains: "missing field `arg`"},
		{name: "missing sender", env: unsigned(func(c map[string]any) { delete(c, "sender") }), kind: IngressMalformed, contains: "missing field `sender`"},
		{name: "missing ingress_expiry", env: unsigned(func(c map[string]any) { delete(c, "ingress_expiry") }), kind: IngressMalformed, contains: "ingress_expiry"},
		{name: "missing canister_id", env: unsigned(func(c map[string]any) { delete(c, "canister_id") }), kind: IngressMalformed, contains: "canister_id"},
		{name: "missing paths", typ: RequestReadState, env: func() []byte {
			c := content(RequestReadState, anon)
			delete(c, "paths")
			return envelope(t, c, nil, nil, nil)
		}, kind: IngressMalformed, contains: "paths"},
		{name: "sender of wrong type", env: signed(func(c map[string]any) { c["sender"] = "text" }), kind: IngressMalformed, contains: "invalid field `sender`"},
		{name: "expiry of wrong type", env: signed(func(c map[string]any) { c["ingress_expiry"] = "soon" }), kind: IngressMalformed, contains: "invalid field `ingress_expiry`"},
		{name: "expiry beyond int64", env: unsigned(func(c map[string]any) { c["ingress_expiry"] = uint64(1 << 63) }), kind: IngressExpiry, contains: "out of range"},
		{name: "sender of 30 bytes", env: unsigned(func(c map[string]any) { c["sender"] = make([]byte, 30) }), kind: IngressMalformed, contains: "not a principal"},
		{name: "canister_id of 30 bytes", env: unsigned(func(c map[string]any) { c["canister_id"] = make([]byte, 30) }), kind: IngressMalformed, contains: "not a principal"},
		{name: "query envelope where a call is expected", env: signed(func(c map[string]any) { c["request_type"] = RequestQuery }),
			kind: IngressRequestType, contains: "request_type"},
		{name: "nonce of 33 bytes", env: signed(func(c map[string]any) { c["nonce"] = make([]byte, 33) }), kind: IngressNonce, contains: "nonce"},
		{name: "nonce of 32 bytes", env: signed(func(c map[string]any) { c["nonce"] = make([]byte, 32) })},
		{name: "no nonce", env: signed(func(c map[string]any) { delete(c, "nonce") })},
		{name: "null nonce", env: signed(func(c map[string]any) { c["nonce"] = nil })},
		{name: "null canister_id", env: unsigned(func(c map[string]any) { c["canister_id"] = nil }), kind: IngressMalformed, contains: "invalid field `canister_id`: null"},
		{name: "null arg", env: unsigned(func(c map[string]any) { c["arg"] = nil }), kind: IngressMalformed, contains: "invalid field `arg`: null"},
		{name: "unknown content field signed with the rest", env: signed(func(c map[string]any) { c["x_future"] = []byte{1} })},
		// Hashing a megabyte of small integers costs seconds of CPU before the signature is looked at.
		{name: "unknown content field holding an array", env: signed(func(c map[string]any) { c["x_future"] = make([]uint64, 4000) }),
			kind: IngressMalformed, contains: "unknown field `x_future` is not a blob, text or nat"},
		{name: "unknown content field holding a map", env: signed(func(c map[string]any) { c["x_future"] = map[string]any{"a": uint64(1)} }),
			kind: IngressMalformed, contains: "is not a blob, text or nat"},
		{name: "known field of the wrong type before the hash", env: signed(func(c map[string]any) { c["arg"] = [][]uint64{make([]uint64, 4000)} }),
			kind: IngressMalformed, contains: "invalid field `arg`"},
		{name: "self-describe tag in front", env: func() []byte {
			return append(append([]byte{}, SelfDescribeTag...), envelope(t, content(RequestCall, anon), nil, nil, nil)...)
		}},
		{name: "non-minimal expiry integer (agent-js)", env: func() []byte {
			c := content(RequestCall, anon)
			exp := c["ingress_expiry"].(uint64)
			delete(c, "ingress_expiry")
			raw, _ := cbor.Marshal(c)
			var fields map[string]cbor.RawMessage
			_ = cbor.Unmarshal(raw, &fields)
			long := []byte{0x1b, 0, 0, 0, 0, 0, 0, 0, 0}
			for i := 0; i < 8; i++ {
				long[8-i] = byte(exp >> (8 * i))
			}
			fields["ingress_expiry"] = long
			raw, _ = cbor.Marshal(fields)
			b, _ := cbor.Marshal(map[string]any{"content": cbor.RawMessage(raw)})
			return b
		}},
		{name: "duplicate key in content", env: func() []byte {
			raw, _ := cbor.Marshal(content(RequestCall, anon))
			// Append a second "method_name" to the map: bump the pair count, add the pair.
			raw[0]++
			extra, _ := cbor.Marshal("method_name")
			val, _ := cbor.Marshal("other")
			raw = append(append(raw, extra...), val...)
			b, _ := cbor.Marshal(map[string]any{"content": cbor.RawMessage(raw)})
			return b
		}, kind: IngressMalformed, contains: "duplicate map key"},
		{name: "duplicate key in envelope", env: func() []byte {
			b := envelope(t, content(RequestCall, anon), nil, nil, nil)
			b[0]++
			k, _ := cbor.Marshal("content")
			v, _ := cbor.Marshal(map[string]any{})
			return append(append(b, k...), v...)
		}, kind: IngressMalformed, contains: "duplicate map key"},
		{name: "nesting beyond the bound", env: func() []byte {
			deep := []byte{}
			for range 40 {
				deep = append(deep, 0x81)
			}
			deep = append(deep, 0x00)
			m := envelopeMap(t, content(RequestCall, anon), nil, nil, nil)
			m["x"] = cbor.RawMessage(deep)
			b, _ := cbor.Marshal(m)
			return b
		}, kind: IngressMalformed, contains: "exceeded max nested level"},
		{name: "array length beyond the input", env: func() []byte {
			return []byte{0xa1, 0x67, 'c', 'o', 'n', 't', 'e', 'n', 't', 0x9b, 0, 0, 0, 1, 0, 0, 0, 0}
		}, kind: IngressMalformed},
		{name: "indefinite-length content (the IC accepts it)", env: func() []byte {
			raw, _ := cbor.Marshal(content(RequestCall, anon))
			raw[0] = 0xbf // indefinite-length map, closed by 0xff
			raw = append(raw, 0xff)
			b, _ := cbor.Marshal(map[string]any{"content": cbor.RawMessage(raw)})
			return b
		}},
		{name: "content under another case", env: func() []byte {
			b, _ := cbor.Marshal(map[string]any{"Content": content(RequestCall, anon)})
			return b
		}, kind: IngressMalformed, contains: "missing field `content`"},
		{name: "method_name under another case", env: unsigned(func(c map[string]any) { c["Method_name"] = c["method_name"]; delete(c, "method_name") }),
			kind: IngressMalformed, contains: "missing field `method_name`"},
		{name: "bignum expiry", env: func() []byte {
			c := content(RequestCall, anon)
			c["ingress_expiry"] = cbor.Tag{Number: 2, Content: big.NewInt(testNow.Add(time.Minute).UnixNano()).Bytes()}
			b, _ := cbor.Marshal(map[string]any{"content": c})
			return b
		}, kind: IngressMalformed, contains: "bignum"},
		{name: "unknown request type wanted", typ: "install", env: unsigned(func(map[string]any) {}), kind: IngressMalformed, contains: "unknown request type"},
	})
}

// Prechecks see the decoded request, and run before (and so instead of) the signature checks.
func TestVerifyEnvelopePrechecks(t *testing.T) {
	id := newEd25519(t)
	good := envelope(t, content(RequestCall, id.Sender()), id, nil, nil)
	forged := envelope(t, content(RequestCall, id.Sender()), id, nil, newEd25519(t))
	errNope := errors.New("nope")

	var seen *Request
	if _, err := testPolicy.VerifyEnvelope(good, RequestCall, testNow, func(r *Request) error { seen = r; return nil }); err != nil {
		t.Fatal(err)
	}
	if seen == nil || seen.Method != "echo" || !seen.Canister.Equal(testCanister) {
		t.Fatalf("precheck saw %+v", seen)
	}

	_, err := testPolicy.VerifyEnvelope(forged, RequestCall, testNow, func(*Request) error { return errNope })
	var ie *IngressError
	if !errors.As(err, &ie) || ie.Kind != IngressRefused || ie.Msg != "nope" || !errors.Is(err, errNope) {
		t.Fatalf("forged envelope with a failing precheck: %v", err)
	}
	own := &IngressError{Kind: IngressRefused, Msg: "Specified CanisterId differs"}
	if _, err := testPolicy.VerifyEnvelope(forged, RequestCall, testNow, func(*Request) error { return own }); err != own {
		t.Fatalf("precheck's IngressError not returned as is: %v", err)
	}
	calls := 0
	count := func(*Request) error { calls++; return nil }
	if _, err := testPolicy.VerifyEnvelope(forged, RequestCall, testNow, count, count); !errors.As(err, &ie) || ie.Kind != IngressSignature || calls != 2 {
		t.Fatalf("forged envelope after prechecks: %v, %d prechecks", err, calls)
	}
	if _, err := testPolicy.VerifyEnvelope([]byte{0}, RequestCall, testNow, count); err == nil || calls != 2 {
		t.Fatal("precheck ran on an undecodable envelope")
	}
}

// An envelope signed by agent-go's own signer (SignEnvelope) verifies, for every key type.
func TestVerifyEnvelopeOfSignEnvelope(t *testing.T) {
	for name, id := range keyTypes(t) {
		for _, typ := range []string{RequestCall, RequestQuery, RequestReadState} {
			env, rid, err := SignEnvelope(id, SignRequest{Type: typ, Canister: testCanister, Method: "m", Paths: [][][]byte{{[]byte("time")}},
				IngressExpiry: testNow.Add(time.Minute), Nonce: []byte{1}})
			if err != nil {
				t.Fatal(err)
			}
			req, err := testPolicy.VerifyEnvelope(env, typ, testNow)
			if err != nil || req.ID != rid || !bytes.Equal(req.Sender.Raw, id.Sender().Raw) {
				t.Errorf("%s %s: %v", name, typ, err)
			}
		}
	}
}

func TestIngressErrorKindString(t *testing.T) {
	for k := IngressMalformed; k <= IngressRefused; k++ {
		if s := k.String(); strings.HasPrefix(s, "IngressErrorKind(") {
			t.Errorf("kind %d has no name", k)
		}
	}
	if IngressErrorKind(0).String() != "IngressErrorKind(0)" {
		t.Error("zero kind")
	}
}
