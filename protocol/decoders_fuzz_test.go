package protocol

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// Fuzz targets of every decoder fed from the network in this package. Seeds are real encodings
// made by the encoders and signers of this package (f.Add); crashes found are kept in
// testdata/fuzz/<target>.

var requestTypes = []string{RequestCall, RequestQuery, RequestReadState}

// seedEnvelopes are valid envelopes of every request type and signer kind, at testNow.
func seedEnvelopes(f *testing.F) map[string][]byte {
	f.Helper()
	ed := fixedEd25519(f, 1)
	session := fixedEd25519(f, 2)
	ids := keyTypes(f)
	out := map[string][]byte{}
	for _, typ := range requestTypes {
		out[typ+"/anonymous"] = envelope(f, content(typ, principal.AnonymousID), nil, nil, nil)
		out[typ+"/ed25519"] = envelope(f, content(typ, ed.Sender()), ed, nil, nil)
		for _, name := range []string{"secp256k1", "p256"} {
			out[typ+"/"+name] = envelope(f, content(typ, ids[name].Sender()), ids[name], nil, nil)
		}
		dels := []testDelegation{delegate(f, ed, session, testNow.Add(time.Hour), testCanister)}
		out[typ+"/delegation"] = envelope(f, content(typ, ed.Sender()), ed, dels, session)
	}
	return out
}

func FuzzVerifyEnvelope(f *testing.F) {
	for name, env := range seedEnvelopes(f) {
		for i, typ := range requestTypes {
			if bytes.HasPrefix([]byte(name), []byte(typ+"/")) {
				f.Add(uint8(i), env)
				f.Add(uint8(i), append(append([]byte{}, SelfDescribeTag...), env...))
			}
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, env []byte) {
		typ := requestTypes[int(which)%len(requestTypes)]
		req, err := testPolicy.VerifyEnvelope(env, typ, testNow)
		if err != nil {
			var ie *IngressError
			if !errors.As(err, &ie) || ie.Kind < IngressMalformed || ie.Kind > IngressRefused || ie.Msg == "" {
				t.Fatalf("error %v (%T) is not a classified *IngressError", err, err)
			}
			return
		}
		want, err := RequestIDOfEnvelope(env)
		if err != nil || req.ID != want {
			t.Fatalf("verified request id %x, of the envelope %x (%v)", req.ID, want, err)
		}
		if req.Type != typ || len(req.Nonce) > maxNonceBytes || len(req.Sender.Raw) > MaxPrincipalBytes ||
			len(req.Canister.Raw) > MaxPrincipalBytes || req.Expiry.Before(testNow) {
			t.Fatalf("verified request out of bounds: %+v", req)
		}
		if typ != RequestReadState && (req.Arg == nil || !req.TargetAllowed(req.Canister)) {
			t.Fatalf("verified call or query %+v", req)
		}
	})
}

func FuzzVerifyClientFrame(f *testing.F) {
	for name, env := range seedEnvelopes(f) {
		if !bytes.HasPrefix([]byte(name), []byte(RequestCall+"/")) {
			continue
		}
		frame, err := EncodeClientFrame(env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	resume, err := ResumeRequest{Token: bytes.Repeat([]byte{1}, 32), CanisterID: testCanister.Raw,
		ClientKey: ResumeClientKey{ClientPrincipal: principal.AnonymousID.Raw, ClientNonce: 3}, LastSeq: 2}.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(resume)
	f.Fuzz(func(t *testing.T, frame []byte) {
		decoded, decErr := DecodeClientFrame(frame)
		env, req, err := testPolicy.VerifyClientFrame(frame, testNow)
		first, firstErr := DecodeFirstFrame(frame)
		if firstErr == nil && (first.Envelope == nil) == (first.Resume == nil) {
			t.Fatalf("first frame with both or neither: %+v", first)
		}
		if err != nil {
			var ie *IngressError
			if !errors.As(err, &ie) || ie.Msg == "" {
				t.Fatalf("error %v (%T) is not an *IngressError", err, err)
			}
			return
		}
		if decErr != nil || !reflect.DeepEqual(decoded, env) {
			t.Fatalf("verified %+v, but DecodeClientFrame gives %+v, %v", env, decoded, decErr)
		}
		if firstErr != nil || !bytes.Equal(first.Envelope, env.Raw) {
			t.Fatalf("verified, but DecodeFirstFrame gives %+v, %v", first, firstErr)
		}
		if !bytes.Contains(frame, env.Raw) || req.Type != RequestCall {
			t.Fatalf("envelope %x is not the bytes of the frame %x", env.Raw, frame)
		}
	})
}

func FuzzDecodeHandshake(f *testing.F) {
	for _, h := range []GatewayHandshake{
		{GatewayPrincipal: testGateway.Raw},
		{GatewayPrincipal: testGateway.Raw, Resume: &ResumeOffer{Version: ResumeVersion, Token: bytes.Repeat([]byte{7}, 32)}},
	} {
		b, err := h.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		h, err := DecodeHandshake(frame)
		if err != nil {
			return
		}
		b, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeHandshake(b)
		if err != nil || !reflect.DeepEqual(back, h) {
			t.Fatalf("re-encoded %+v decodes as %+v, %v", h, back, err)
		}
	})
}

func FuzzDecodeFirstFrame(f *testing.F) {
	resume, err := ResumeRequest{Token: bytes.Repeat([]byte{1}, 32), CanisterID: testCanister.Raw,
		ClientKey: ResumeClientKey{ClientPrincipal: principal.AnonymousID.Raw, ClientNonce: 3}, LastSeq: 2}.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(resume)
	open, err := EncodeClientFrame(envelope(f, content(RequestCall, principal.AnonymousID), nil, nil, nil))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(open)
	f.Fuzz(func(t *testing.T, frame []byte) {
		ff, err := DecodeFirstFrame(frame)
		if err != nil {
			return
		}
		if ff.Resume == nil {
			if len(ff.Envelope) == 0 || !bytes.Contains(frame, ff.Envelope) {
				t.Fatalf("envelope %x not from the frame %x", ff.Envelope, frame)
			}
			return
		}
		b, err := ff.Resume.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeFirstFrame(b)
		if err != nil || back.Resume == nil || !reflect.DeepEqual(*back.Resume, *ff.Resume) {
			t.Fatalf("re-encoded %+v decodes as %+v, %v", ff.Resume, back, err)
		}
	})
}

func FuzzDecodeResumed(f *testing.F) {
	b, err := ResumedAnswer{LastClientSeq: 4}.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, frame []byte) {
		a, err := DecodeResumed(frame)
		if err != nil {
			return
		}
		b, err := a.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if back, err := DecodeResumed(b); err != nil || back != a {
			t.Fatalf("re-encoded %+v decodes as %+v, %v", a, back, err)
		}
	})
}

func FuzzRequestIDOfContent(f *testing.F) {
	ed := fixedEd25519(f, 1)
	for _, typ := range requestTypes {
		for _, sender := range []principal.Principal{principal.AnonymousID, ed.Sender()} {
			env := envelope(f, content(typ, sender), nil, nil, nil)
			var raw cbor.RawMessage
			fieldOf(f, env, "content", &raw)
			f.Add([]byte(raw))
		}
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		id, err := RequestIDOfContent(content)
		if err != nil {
			return
		}
		again, err := RequestIDOfContent(append(append([]byte{}, SelfDescribeTag...), content...))
		if err != nil || again != id {
			t.Fatalf("request id %x, tagged %x (%v)", id, again, err)
		}
	})
}
