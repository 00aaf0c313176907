package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

var testGateway = principal.MustDecode("7cio4-7j2lx-6f3tp-mkfw7-t4amd-tjphs-hkits-6qa7x-hmnmx-yvwxk-nqe")

func TestHandshakeRoundTrip(t *testing.T) {
	token := bytes.Repeat([]byte{7}, 32)
	for _, h := range []GatewayHandshake{
		{GatewayPrincipal: testGateway.Raw},
		{GatewayPrincipal: testGateway.Raw, Resume: &ResumeOffer{Version: ResumeVersion, Token: token}},
	} {
		b, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, SelfDescribeTag) {
			t.Fatalf("handshake %x without the self-describe tag", b)
		}
		back, err := DecodeHandshake(b)
		if err != nil || !reflect.DeepEqual(back, h) || !back.Gateway().Equal(testGateway) {
			t.Fatalf("round trip of %+v: %+v, %v", h, back, err)
		}
	}
}

// The standard handshake is the Rust gateway's bytes: self-describe tag, a one-pair map, the
// principal as a byte string; the resume offer only adds a pair.
func TestHandshakeBytes(t *testing.T) {
	b, err := GatewayHandshake{GatewayPrincipal: []byte{1, 2, 3}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	const want = "d9d9f7" + "a1" + "71" + "676174657761795f7072696e636970616c" + "43010203"
	if hex.EncodeToString(b) != want {
		t.Fatalf("handshake %x, want %s", b, want)
	}
	b, err = GatewayHandshake{GatewayPrincipal: []byte{1, 2, 3}, Resume: &ResumeOffer{Version: 1, Token: []byte{9}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	const wantResume = "d9d9f7" + "a2" + "71" + "676174657761795f7072696e636970616c" + "43010203" +
		"6b" + "696377735f726573756d65" + "a2" + "6776657273696f6e" + "01" + "65746f6b656e" + "4109"
	if hex.EncodeToString(b) != wantResume {
		t.Fatalf("resume handshake %x, want %s", b, wantResume)
	}
}

func TestDecodeHandshakeRefuses(t *testing.T) {
	enc := func(v any) []byte { b, _ := cbor.Marshal(v); return b }
	gp := append([]byte{0x71}, "gateway_principal"...)
	dup := append(append(append([]byte{0xa2}, gp...), 0x41, 1), append(gp, 0x41, 2)...)
	for name, frame := range map[string][]byte{
		"no gateway_principal":    {0xa1, 0x61, 0x61, 0x01},
		"text principal":          enc(map[string]any{"gateway_principal": "aaaaa-aa"}),
		"principal of 30 bytes":   enc(map[string]any{"gateway_principal": make([]byte, 30)}),
		"offer of version 2":      enc(map[string]any{"gateway_principal": []byte{1}, "icws_resume": map[string]any{"version": 2, "token": []byte{1}}}),
		"offer without token":     enc(map[string]any{"gateway_principal": []byte{1}, "icws_resume": map[string]any{"version": 1}}),
		"duplicate key":           dup,
		"indefinite-length map":   {0xbf, 0x71, 'g', 'a', 't', 'e', 'w', 'a', 'y', '_', 'p', 'r', 'i', 'n', 'c', 'i', 'p', 'a', 'l', 0x41, 1, 0xff},
		"trailing bytes":          append(enc(map[string]any{"gateway_principal": []byte{1}}), 0),
		"not CBOR":                {0xff},
		"empty":                   nil,
		"array instead of a map":  {0x81, 0x41, 0x01},
		"byte string beyond size": {0xa1, 0x71, 'g', 'a', 't', 'e', 'w', 'a', 'y', '_', 'p', 'r', 'i', 'n', 'c', 'i', 'p', 'a', 'l', 0x5a, 0xff, 0xff, 0xff, 0xff},
	} {
		if _, err := DecodeHandshake(frame); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestResumeFrameRoundTrip(t *testing.T) {
	req := ResumeRequest{
		Token:      bytes.Repeat([]byte{5}, 32),
		CanisterID: testCanister.Raw,
		ClientKey:  ResumeClientKey{ClientPrincipal: principal.AnonymousID.Raw, ClientNonce: 9},
		LastSeq:    17,
	}
	b, err := req.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ff, err := DecodeFirstFrame(b)
	if err != nil || ff.Envelope != nil || ff.Resume == nil || !reflect.DeepEqual(*ff.Resume, req) {
		t.Fatalf("first frame %+v, %v", ff, err)
	}
	// The wire form of docs/RESUME.md §1.4, as another client would write it.
	var generic map[string]map[string]any
	if err := cbor.Unmarshal(StripSelfDescribe(b), &generic); err != nil {
		t.Fatal(err)
	}
	r := generic["icws_resume"]
	if r["last_seq"] != uint64(17) || r["client_key"].(map[any]any)["client_nonce"] != uint64(9) || len(r) != 4 {
		t.Fatalf("resume frame %v", generic)
	}
	// A resume frame is not an envelope frame.
	if _, err := DecodeClientFrame(b); err == nil {
		t.Fatal("DecodeClientFrame accepted a resume frame")
	}
}

func TestFirstFrameOfEnvelope(t *testing.T) {
	env := envelope(t, content(RequestCall, principal.AnonymousID), nil, nil, nil)
	frame, err := EncodeClientFrame(env)
	if err != nil {
		t.Fatal(err)
	}
	ff, err := DecodeFirstFrame(frame)
	if err != nil || ff.Resume != nil || !bytes.Equal(ff.Envelope, env) {
		t.Fatalf("first frame %+v, %v", ff, err)
	}
	enc := func(v any) []byte { b, _ := cbor.Marshal(v); return b }
	for name, frame := range map[string][]byte{
		"neither":          enc(map[string]any{"other": 1}),
		"both":             enc(map[string]any{"envelope": cbor.RawMessage(env), "icws_resume": map[string]any{"token": []byte{1}}}),
		"resume not a map": enc(map[string]any{"icws_resume": 5}),
		"Envelope":         enc(map[string]any{"Envelope": cbor.RawMessage(env)}),
		"iCws_resume":      enc(map[string]any{"iCws_resume": map[string]any{"token": []byte{1}}}),
		"truncated":        frame[:len(frame)-1],
	} {
		if _, err := DecodeFirstFrame(frame); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestResumedRoundTrip(t *testing.T) {
	b, err := ResumedAnswer{LastClientSeq: 4}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(b, SelfDescribeTag) {
		t.Fatal("resumed frame carries the self-describe tag; the edge has never sent it")
	}
	a, err := DecodeResumed(b)
	if err != nil || a.LastClientSeq != 4 {
		t.Fatalf("resumed %+v, %v", a, err)
	}
	if a, err := DecodeResumed(append(append([]byte{}, SelfDescribeTag...), b...)); err != nil || a.LastClientSeq != 4 {
		t.Fatalf("tagged resumed %+v, %v", a, err)
	}
	enc := func(v any) []byte { b, _ := cbor.Marshal(v); return b }
	for name, frame := range map[string][]byte{
		"no icws_resumed":  enc(map[string]any{"icws_resume": map[string]any{}}),
		"negative seq":     enc(map[string]any{"icws_resumed": map[string]any{"last_client_seq": -1}}),
		"canister message": enc(CanisterToClientMessage{Key: "k", Content: []byte{}, Cert: []byte{}, Tree: []byte{}}),
	} {
		if _, err := DecodeResumed(frame); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Client frames decode in the bounded mode: no duplicate keys, no indefinite lengths, bounded
// nesting, and tags as agent-js writes them.
func TestDecodeClientFrameBounds(t *testing.T) {
	id := newEd25519(t)
	env := envelope(t, content(RequestCall, id.Sender()), id, nil, nil)
	frame, _ := EncodeClientFrame(env)
	if e, err := DecodeClientFrame(frame); err != nil || !bytes.Equal(e.Raw, env) || !e.Signed {
		t.Fatalf("frame: %+v, %v", e, err)
	}
	// agent-js may tag the envelope inside the frame too.
	tagged, _ := EncodeClientFrame(append(append([]byte{}, SelfDescribeTag...), env...))
	if _, err := DecodeClientFrame(tagged); err != nil {
		t.Fatalf("tagged envelope: %v", err)
	}
	key := append([]byte{0x68}, "envelope"...)
	dup := append(append(append([]byte{0xa2}, key...), env...), append(key, env...)...)
	indef := append(append(append([]byte{0xbf}, key...), env...), 0xff)
	deep := append([]byte{0xa1}, key...)
	for range 20 {
		deep = append(deep, 0x81)
	}
	deep = append(deep, 0)
	hugeArray := append(append([]byte{0xa1}, key...), 0x9a, 0xff, 0xff, 0xff, 0xff)
	manyElements := append(append([]byte{0xa1}, key...), 0x99, 0x20, 0x00) // 8192 elements
	for range 8192 {
		manyElements = append(manyElements, 0)
	}
	for name, f := range map[string][]byte{
		"duplicate envelope key":   dup,
		"indefinite-length frame":  indef,
		"nested 20 deep":           deep,
		"array longer than input":  hugeArray,
		"array of 8192 elements":   manyElements,
		"query envelope":           mustFrame(t, envelope(t, content(RequestQuery, id.Sender()), id, nil, nil)),
		"envelope of a byte":       mustFrame(t, []byte{0x01}),
		"self-describe tag only":   SelfDescribeTag,
		"text where map expected":  {0x61, 'x'},
		"map with an integer key":  {0xa1, 0x01, 0x01},
		"resume frame, not a call": mustResume(t),
	} {
		if _, err := DecodeClientFrame(f); err == nil {
			t.Errorf("DecodeClientFrame: %s accepted", name)
		}
		if _, _, err := testPolicy.VerifyClientFrame(f, testNow); err == nil {
			t.Errorf("VerifyClientFrame: %s accepted", name)
		}
	}
	if _, err := DecodeClientFrame(mustFrame(t, envelope(t, content(RequestQuery, id.Sender()), id, nil, nil))); !errors.Is(err, ErrNotCallEnvelope) {
		t.Errorf("query envelope: %v, want ErrNotCallEnvelope", err)
	}
}

func mustFrame(t *testing.T, env []byte) []byte {
	t.Helper()
	f, err := EncodeClientFrame(env)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func mustResume(t *testing.T) []byte {
	t.Helper()
	b, err := ResumeRequest{Token: []byte{1}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// VerifyClientFrame: the envelope as sent, byte for byte, and the verified request; refusals by kind.
func TestVerifyClientFrame(t *testing.T) {
	for name, id := range keyTypes(t) {
		t.Run(name, func(t *testing.T) {
			env := envelope(t, content(RequestCall, id.Sender()), id, nil, nil)
			e, req, err := testPolicy.VerifyClientFrame(mustFrame(t, env), testNow)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(e.Raw, env) || !e.Signed || e.Content.MethodName != "echo" || !bytes.Equal(e.Content.CanisterID, testCanister.Raw) ||
				!bytes.Equal(e.Content.Sender, id.Sender().Raw) || e.Content.IngressExpiry != uint64(testNow.Add(3*time.Minute).UnixNano()) ||
				e.Content.RequestType != RequestCall || string(e.Content.Arg) != "DIDL\x00\x00" || len(e.Content.Nonce) != 16 {
				t.Fatalf("envelope %+v", e)
			}
			if want, _ := RequestIDOfEnvelope(env); req.ID != want {
				t.Fatal("request id")
			}
			// The unverified decode agrees with the verified one.
			d, err := DecodeClientFrame(mustFrame(t, env))
			if err != nil || !reflect.DeepEqual(d, e) {
				t.Fatalf("DecodeClientFrame %+v, %v; VerifyClientFrame %+v", d, err, e)
			}
			forged := envelope(t, content(RequestCall, id.Sender()), id, nil, newEd25519(t))
			_, _, err = testPolicy.VerifyClientFrame(mustFrame(t, forged), testNow)
			var ie *IngressError
			if !errors.As(err, &ie) || ie.Kind != IngressSignature {
				t.Fatalf("forged: %v", err)
			}
		})
	}
	cases := map[string]struct {
		frame []byte
		kind  IngressErrorKind
	}{
		"not CBOR":       {[]byte{0xff}, IngressMalformed},
		"resume frame":   {mustResume(t), IngressMalformed},
		"query envelope": {mustFrame(t, envelope(t, content(RequestQuery, principal.AnonymousID), nil, nil, nil)), IngressRequestType},
		"expired": {mustFrame(t, envelope(t, func() map[string]any {
			c := content(RequestCall, principal.AnonymousID)
			c["ingress_expiry"] = uint64(testNow.Add(-time.Minute).UnixNano())
			return c
		}(), nil, nil, nil)), IngressExpiry},
	}
	for name, c := range cases {
		_, _, err := testPolicy.VerifyClientFrame(c.frame, testNow)
		var ie *IngressError
		if !errors.As(err, &ie) || ie.Kind != c.kind {
			t.Errorf("%s: %v, want kind %s", name, err, c.kind)
		}
	}
	// An anonymous call verifies (the gateway decides whether it wants it) and says so.
	e, req, err := testPolicy.VerifyClientFrame(mustFrame(t, envelope(t, content(RequestCall, principal.AnonymousID), nil, nil, nil)), testNow)
	if err != nil || e.Signed || !req.Anonymous {
		t.Fatalf("anonymous: %+v %+v %v", e, req, err)
	}
	// Prechecks run before the signature is verified.
	forged := envelope(t, content(RequestCall, newEd25519(t).Sender()), newEd25519(t), nil, nil)
	_, _, err = testPolicy.VerifyClientFrame(mustFrame(t, forged), testNow, func(r *Request) error {
		return &IngressError{Kind: IngressRefused, Msg: "method " + r.Method + " not allowed"}
	})
	if err == nil || !strings.Contains(err.Error(), "method echo not allowed") {
		t.Fatalf("precheck: %v", err)
	}
}
