package protocol_test

import (
	"testing"

	"github.com/icws/icws/protocol"
)

// FuzzVerifyWebAuthnSignature feeds COSE keys, payloads and WebAuthn signatures through the whole
// check. The seeds are the IC's own test vectors.
func FuzzVerifyWebAuthnSignature(f *testing.F) {
	v := loadWebAuthnVectors(f)
	f.Add(unhex(f, v.ECDSAKey), []byte("hello"), unhex(f, v.ECDSASigHello))
	f.Add(unhex(f, v.RSAKey), []byte("hello"), unhex(f, v.RSASigHello))
	f.Add(unhex(f, v.OtherECDSAKey), []byte{0}, unhex(f, v.ECDSASigDelegation))
	f.Fuzz(func(t *testing.T, pub, payload, sig []byte) {
		if err := protocol.VerifyWebAuthnSignature(pub, payload, sig); err == nil {
			// Only a key that parses and a signature that decodes can verify.
			if _, err := protocol.ParseWebAuthnPublicKey(pub); err != nil {
				t.Fatalf("verified with a key that does not parse: %v", err)
			}
			if _, err := protocol.DecodeWebAuthnSignature(sig); err != nil {
				t.Fatalf("verified with a signature that does not decode: %v", err)
			}
		}
	})
}
