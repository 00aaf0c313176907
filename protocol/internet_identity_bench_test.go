package protocol_test

import (
	"testing"
	"time"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
)

// BenchmarkVerifyEnvelopeInternetIdentity: a call from an Internet Identity session (a canister
// signature, mainnet layout, delegating to an Ed25519 session key), verified in full and through
// a CanisterSigVerifier that has seen the session's delegation (every request of a session after the
// first); the recorded mainnet delegation's canister signature alone.
func BenchmarkVerifyEnvelopeInternetIdentity(b *testing.B) {
	now := time.Now()
	f := newSigFixture(b, certauth.Options{Delegated: true})
	env := signedCall(b, iiIdentity(b, f.signer, now.Add(time.Hour), nil), iiTestCanister, now)
	run := func(name string, p protocol.IngressPolicy) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.VerifyEnvelope(env, protocol.RequestCall, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("uncached", protocol.IngressPolicy{MaxTTL: 5 * time.Minute, RootKey: f.auth.RootKey()})
	run("cached", protocol.IngressPolicy{MaxTTL: 5 * time.Minute, RootKey: f.auth.RootKey(), CanisterSigs: protocol.NewCanisterSigVerifier(16, 0)})

	v := loadCanisterSigVectors(b)
	pub, payload, sig := v.iiDelegation(b)
	b.Run("mainnet-delegation-signature", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := protocol.VerifyCanisterSignature(certificate.MainnetRootKey(), pub, payload, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}
