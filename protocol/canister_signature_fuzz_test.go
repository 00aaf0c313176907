package protocol_test

import (
	"bytes"
	"testing"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
)

// FuzzCanisterSigPublicKey parses DER keys as the ingress verifier does for every key that names
// the canister-signature OID; what parses re-encodes to a key that parses the same.
func FuzzCanisterSigPublicKey(f *testing.F) {
	v := loadCanisterSigVectors(f)
	f.Add(unhex(f, v.PublicKey.DER))
	f.Add(unhex(f, v.IIDelegation.PublicKey))
	f.Add(protocol.CanisterSigPublicKey{Canister: principal.MustDecode("rdmx6-jaaaa-aaaaa-aaadq-cai"), Seed: bytes.Repeat([]byte{1}, 300)}.DER())
	f.Add(unhex(f, "3021300e060a2b0601040183b84301020500030f000a000000000000000001012a482c"))
	f.Fuzz(func(t *testing.T, der []byte) {
		k, err := protocol.ParseCanisterSigPublicKey(der)
		if err != nil {
			return
		}
		back, err := protocol.ParseCanisterSigPublicKey(k.DER())
		if err != nil || !back.Canister.Equal(k.Canister) || !bytes.Equal(back.Seed, k.Seed) {
			t.Fatalf("re-encoded key %x parses as %v / %x, %v", k.DER(), back.Canister, back.Seed, err)
		}
	})
}

// FuzzVerifyCanisterSignature feeds keys, payloads and signatures through the whole check against
// the mainnet root key. The seeds are the mainnet Internet Identity delegation (which a cache has
// verified once, so that executions of the seed itself skip the pairings) and pieces of it. What
// decodes re-encodes to a signature that decodes the same.
func FuzzVerifyCanisterSignature(f *testing.F) {
	v := loadCanisterSigVectors(f)
	pub, payload, sig := v.iiDelegation(f)
	root := certificate.MainnetRootKey()
	cache := protocol.NewCanisterSigVerifier(4, 0)
	if err := cache.Verify(root, pub, payload, sig); err != nil {
		f.Fatal(err)
	}
	f.Add(pub, payload, sig)
	f.Add(pub, payload, sig[:len(sig)/2])
	f.Add(pub, []byte{}, append(bytes.Clone(protocol.SelfDescribeTag), 0xa0))
	f.Add(unhex(f, v.PublicKey.DER), payload, sig)
	f.Fuzz(func(t *testing.T, pub, payload, sig []byte) {
		_ = cache.Verify(root, pub, payload, sig)
		s, err := protocol.DecodeCanisterSignature(sig)
		if err != nil {
			return
		}
		again, err := protocol.DecodeCanisterSignature(s.Encode())
		if err != nil {
			t.Fatalf("re-encoded signature does not decode: %v", err)
		}
		if !bytes.Equal(again.Certificate, s.Certificate) || again.Tree.Digest() != s.Tree.Digest() {
			t.Fatal("re-encoded signature decodes to another signature")
		}
	})
}
