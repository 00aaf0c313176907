package protocol_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"

	"github.com/icws/icws/protocol"
)

// webAuthnVectors is testdata/upstream/ic-webauthn-vectors.json.
type webAuthnVectors struct {
	ECDSAKey             string `json:"ecdsa_p256_key"`
	ECDSASigHello        string `json:"ecdsa_sig_hello"`
	ECDSASigDelegation   string `json:"ecdsa_sig_delegation"`
	DelegationPubKey     string `json:"delegation_pubkey"`
	DelegationExpiration int64  `json:"delegation_expiration"`
	ECDSASigRequestID    string `json:"ecdsa_sig_request_id"`
	RequestID            string `json:"request_id"`
	OtherECDSAKey        string `json:"other_ecdsa_p256_key"`
	RSAKey               string `json:"rsa_key"`
	RSASigHello          string `json:"rsa_sig_hello"`
	OtherRSAKey          string `json:"other_rsa_key"`
}

func loadWebAuthnVectors(t testing.TB) webAuthnVectors {
	t.Helper()
	raw, err := os.ReadFile("testdata/upstream/ic-webauthn-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v webAuthnVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// The signatures the IC's own tests verify (a YubiKey's ECDSA, Windows Hello's RSA) verify here
// too, over the same payloads, and nothing else does.
func TestWebAuthnSignaturesOfTheIC(t *testing.T) {
	v := loadWebAuthnVectors(t)
	delegation, err := protocol.DelegationSignedBytes(protocol.Delegation{PubKey: unhex(t, v.DelegationPubKey), Expiration: time.Unix(0, v.DelegationExpiration)})
	if err != nil {
		t.Fatal(err)
	}
	request := append([]byte("\x0Aic-request"), unhex(t, v.RequestID)...)
	noSignature := func(sig string) []byte {
		s, err := protocol.DecodeWebAuthnSignature(unhex(t, sig))
		if err != nil {
			t.Fatal(err)
		}
		b, err := cbor.Marshal(map[string]any{"authenticator_data": s.AuthenticatorData, "client_data_json": string(s.ClientDataJSON), "signature": []byte{}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name, key string
		payload   []byte
		sig       []byte
		wantErr   string
	}{
		{"ecdsa hello", v.ECDSAKey, []byte("hello"), unhex(t, v.ECDSASigHello), ""},
		{"ecdsa delegation", v.ECDSAKey, delegation, unhex(t, v.ECDSASigDelegation), ""},
		{"ecdsa request", v.ECDSAKey, request, unhex(t, v.ECDSASigRequestID), ""},
		{"rsa hello (client data as text)", v.RSAKey, []byte("hello"), unhex(t, v.RSASigHello), ""},
		{"ecdsa, another payload", v.ECDSAKey, []byte{0, 1, 2, 3}, unhex(t, v.ECDSASigHello), "challenge"},
		{"rsa, another payload", v.RSAKey, []byte{0, 1, 2, 3}, unhex(t, v.RSASigHello), "challenge"},
		{"ecdsa, another key", v.OtherECDSAKey, []byte("hello"), unhex(t, v.ECDSASigHello), "verification failed"},
		{"rsa, another key", v.OtherRSAKey, []byte("hello"), unhex(t, v.RSASigHello), "verification failed"},
		{"ecdsa key, rsa signature", v.ECDSAKey, []byte("hello"), unhex(t, v.RSASigHello), "verification failed"},
		{"empty signature", v.ECDSAKey, []byte("hello"), noSignature(v.ECDSASigHello), "verification failed"},
		{"not a signature", v.ECDSAKey, []byte("hello"), []byte{0xa0}, "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := protocol.VerifyWebAuthnSignature(unhex(t, tc.key), tc.payload, tc.sig)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, protocol.ErrWebAuthn) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want ErrWebAuthn naming %q", err, tc.wantErr)
			}
		})
	}
}

// coseKey encodes a COSE key map, then wraps it in DER as the specification does.
func coseKey(t testing.TB, m map[int]any) []byte {
	t.Helper()
	raw, err := cbor.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return webAuthnDER(raw)
}

func webAuthnDER(cose []byte) []byte {
	bitString := append([]byte{0x03}, derLen(len(cose)+1)...)
	bitString = append(append(bitString, 0x00), cose...)
	alg := []byte{0x30, 0x0c, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xb8, 0x43, 0x01, 0x01}
	body := append(alg, bitString...)
	return append(append([]byte{0x30}, derLen(len(body))...), body...)
}

func derLen(n int) []byte {
	switch {
	case n < 0x80:
		return []byte{byte(n)}
	case n <= 0xff:
		return []byte{0x81, byte(n)}
	}
	return []byte{0x82, byte(n >> 8), byte(n)}
}

func TestParseWebAuthnPublicKey(t *testing.T) {
	v := loadWebAuthnVectors(t)
	for _, k := range []string{v.ECDSAKey, v.OtherECDSAKey, v.RSAKey, v.OtherRSAKey} {
		if _, err := protocol.ParseWebAuthnPublicKey(unhex(t, k)); err != nil {
			t.Errorf("%s…: %v", k[:40], err)
		}
	}
	ec, err := protocol.ParseWebAuthnPublicKey(unhex(t, v.ECDSAKey))
	if err != nil {
		t.Fatal(err)
	}
	point, err := ec.(*ecdsa.PublicKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	x, y := point[1:33], point[33:]
	ecMap := func(change func(map[int]any)) []byte {
		m := map[int]any{1: 2, 3: -7, -1: 1, -2: x, -3: y}
		change(m)
		return coseKey(t, m)
	}
	smallN := bytes.Repeat([]byte{0xff}, 128) // 1024 bits
	valid := []struct {
		name string
		der  []byte
	}{
		{"key_ops verify", ecMap(func(m map[int]any) { m[4] = "verify" })},
		{"unknown labels", ecMap(func(m map[int]any) { m[-70000] = []any{1, 2}; m[100] = map[string]int{"a": 1} })},
	}
	for _, tc := range valid {
		if _, err := protocol.ParseWebAuthnPublicKey(tc.der); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	invalid := []struct {
		name string
		der  []byte
	}{
		{"key_ops sign", ecMap(func(m map[int]any) { m[4] = "sign" })},
		{"another curve", ecMap(func(m map[int]any) { m[-1] = 2 })},
		{"EdDSA", ecMap(func(m map[int]any) { m[3] = -8 })},
		{"short x", ecMap(func(m map[int]any) { m[-2] = x[1:] })},
		{"x as text", ecMap(func(m map[int]any) { m[-2] = string(x) })},
		{"not on the curve", ecMap(func(m map[int]any) { m[-3] = x })},
		{"no alg", ecMap(func(m map[int]any) { delete(m, 3) })},
		{"RSA of 1024 bits", coseKey(t, map[int]any{1: 3, 3: -257, -1: smallN, -2: []byte{1, 0, 1}})},
		{"RSA with exponent 3", coseKey(t, map[int]any{1: 3, 3: -257, -1: bytes.Repeat([]byte{0xff}, 256), -2: []byte{3}})},
		{"RSA with a huge exponent", coseKey(t, map[int]any{1: 3, 3: -257, -1: bytes.Repeat([]byte{0xff}, 256), -2: bytes.Repeat([]byte{0xff}, 256)})},
		{"repeated label", webAuthnDER(unhex(t, "a3010201020326"))},
		{"text label", webAuthnDER(unhex(t, "a1616101"))},
		{"trailing bytes", webAuthnDER(append(unhex(t, "a10102"), 0))},
		{"canister-signature OID", protocol.CanisterSigPublicKey{Canister: principal.MustDecode("rdmx6-jaaaa-aaaaa-aaadq-cai")}.DER()},
	}
	for _, tc := range invalid {
		if _, err := protocol.ParseWebAuthnPublicKey(tc.der); !errors.Is(err, protocol.ErrWebAuthn) {
			t.Errorf("%s: %v, want ErrWebAuthn", tc.name, err)
		}
	}
}

// webAuthnKey signs as agent-js's WebAuthnIdentity does through an authenticator: the payload is
// the challenge, the signature an assertion.
type webAuthnKey struct {
	sk  *ecdsa.PrivateKey
	der []byte
}

func newWebAuthnKey(t testing.TB) *webAuthnKey {
	t.Helper()
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	point, err := sk.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]any{1: 2, 3: -7, -1: 1, -2: point[1:33], -3: point[33:]}
	return &webAuthnKey{sk: sk, der: coseKey(t, m)}
}

func (k *webAuthnKey) Sender() principal.Principal { return principal.NewSelfAuthenticating(k.der) }
func (k *webAuthnKey) PublicKey() []byte           { return k.der }
func (k *webAuthnKey) ToPEM() ([]byte, error)      { return nil, errors.New("no PEM") }
func (k *webAuthnKey) Verify(msg, sig []byte) bool {
	return protocol.VerifyWebAuthnSignature(k.der, msg, sig) == nil
}

func (k *webAuthnKey) Sign(msg []byte) []byte {
	authData := make([]byte, 37)
	_, _ = rand.Read(authData[:32])
	authData[32] = 0x01 // user present
	clientData, _ := json.Marshal(map[string]string{
		"type": "webauthn.get", "challenge": base64.RawURLEncoding.EncodeToString(msg), "origin": "https://app.example",
	})
	h := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(bytes.Clone(authData), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.sk, digest[:])
	if err != nil {
		return nil
	}
	b, _ := cbor.Marshal(map[string]any{"authenticator_data": authData, "client_data_json": string(clientData), "signature": sig})
	return append(bytes.Clone(protocol.SelfDescribeTag), b...)
}

// Envelopes signed by a WebAuthn key, directly as agent-js's WebAuthnIdentity signs them or as the
// root of a delegation chain, are verified.
func TestVerifyEnvelopeWebAuthn(t *testing.T) {
	now := time.Now()
	policy := protocol.IngressPolicy{MaxTTL: 5 * time.Minute, Drift: 30 * time.Second}
	key := newWebAuthnKey(t)
	for name, tc := range map[string]struct {
		envelope []byte
		ok       bool
	}{
		"request signed by the key":         {signedCall(t, key, iiTestCanister, now), true},
		"delegation from the key":           {signedCall(t, iiIdentity(t, key, now.Add(time.Hour), nil), iiTestCanister, now), true},
		"delegation to the key":             {signedCall(t, iiIdentity(t, newSessionKey(t), now.Add(time.Hour), nil, key), iiTestCanister, now), true},
		"signature of another WebAuthn key": {reencodeSig(t, signedCall(t, key, iiTestCanister, now), newWebAuthnKey(t).Sign([]byte("x"))), false},
	} {
		t.Run(name, func(t *testing.T) {
			req, err := policy.VerifyEnvelope(tc.envelope, protocol.RequestCall, now)
			if tc.ok != (err == nil) {
				t.Fatalf("VerifyEnvelope: %v, want ok=%v", err, tc.ok)
			}
			if err == nil && !req.Sender.Equal(key.Sender()) && name != "delegation to the key" {
				t.Fatalf("sender %s, want the WebAuthn key's %s", req.Sender, key.Sender())
			}
		})
	}
}

// reencodeSig replaces an envelope's sender_sig.
func reencodeSig(t testing.TB, env, sig []byte) []byte {
	t.Helper()
	var m map[string]cbor.RawMessage
	if err := cbor.Unmarshal(env, &m); err != nil {
		t.Fatal(err)
	}
	raw, err := cbor.Marshal(sig)
	if err != nil {
		t.Fatal(err)
	}
	m["sender_sig"] = raw
	out, err := cbor.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fixedKey has a public key and signs nothing: for chains refused before any signature is checked.
type fixedKey struct{ der []byte }

func (k fixedKey) Sender() principal.Principal { return principal.NewSelfAuthenticating(k.der) }
func (k fixedKey) PublicKey() []byte           { return k.der }
func (k fixedKey) Sign([]byte) []byte          { return []byte{0} }
func (k fixedKey) Verify(_, _ []byte) bool     { return false }
func (k fixedKey) ToPEM() ([]byte, error)      { return nil, errors.New("no PEM") }

// RSA keys count with canister signatures in the budget of costly signatures, checked before any
// signature is verified.
func TestCostlySignaturesPerEnvelope(t *testing.T) {
	v := loadWebAuthnVectors(t)
	now := time.Now()
	rsa1, rsa2 := fixedKey{unhex(t, v.RSAKey)}, fixedKey{unhex(t, v.OtherRSAKey)}
	canisterKey := fixedKey{protocol.CanisterSigPublicKey{Canister: principal.MustDecode("rdmx6-jaaaa-aaaaa-aaadq-cai"), Seed: []byte{1}}.DER()}
	policy := protocol.IngressPolicy{MaxTTL: 5 * time.Minute, RootKey: []byte("never used")}
	env := signedCall(t, iiIdentity(t, rsa1, now.Add(time.Hour), nil, rsa2, canisterKey, newSessionKey(t)), iiTestCanister, now)
	_, err := policy.VerifyEnvelope(env, protocol.RequestCall, now)
	var ie *protocol.IngressError
	if !errors.As(err, &ie) || ie.Kind != protocol.IngressDelegation || !strings.Contains(ie.Msg, "3 canister or RSA signatures") {
		t.Fatalf("error %v, want the budget's refusal", err)
	}
}
