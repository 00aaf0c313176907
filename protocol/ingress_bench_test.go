package protocol

import (
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
)

// BenchmarkVerifyEnvelope: one call envelope per key type, verified in full; anonymous and a
// one-link delegation for comparison, and VerifyClientFrame on the Ed25519 envelope.
func BenchmarkVerifyEnvelope(b *testing.B) {
	ids := keyTypes(b)
	run := func(name string, env []byte) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := testPolicy.VerifyEnvelope(env, RequestCall, testNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, name := range []string{"ed25519", "secp256k1", "p256"} {
		id := ids[name]
		run(name, envelope(b, content(RequestCall, id.Sender()), id, nil, nil))
	}
	run("anonymous", envelope(b, content(RequestCall, principal.AnonymousID), nil, nil, nil))
	ed, session := ids["ed25519"], identity.Identity(newEd25519(b))
	run("ed25519-delegation", envelope(b, content(RequestCall, ed.Sender()), ed,
		[]testDelegation{delegate(b, ed, session, testNow.Add(time.Hour), testCanister)}, session))
	frame, err := EncodeClientFrame(envelope(b, content(RequestCall, ed.Sender()), ed, nil, nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("client-frame-ed25519", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := testPolicy.VerifyClientFrame(frame, testNow); err != nil {
				b.Fatal(err)
			}
		}
	})
}
