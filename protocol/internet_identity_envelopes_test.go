package protocol_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol"
)

var (
	iiTestCanister  = principal.MustDecode("rrkah-fqaaa-aaaaa-aaaaq-cai")
	iiOtherCanister = principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai")
)

func newSessionKey(t testing.TB) identity.Identity {
	t.Helper()
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// iiIdentity is what agent-js's AuthClient holds after an Internet Identity login: a delegation
// from the user's canister-signature key to a session key, optionally narrowed by more links.
func iiIdentity(t testing.TB, user identity.Identity, expiry time.Time, targets []principal.Principal, keys ...identity.Identity) *protocol.DelegationIdentity {
	t.Helper()
	if len(keys) == 0 {
		keys = []identity.Identity{newSessionKey(t)}
	}
	var chain []protocol.SignedDelegation
	from := user
	for _, k := range keys {
		sd, err := protocol.SignDelegation(from, protocol.Delegation{PubKey: k.PublicKey(), Expiration: expiry, Targets: targets})
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, sd)
		from = k
	}
	id, err := protocol.NewDelegationIdentity(user.PublicKey(), chain, keys[len(keys)-1])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func signedCall(t testing.TB, id identity.Identity, canister principal.Principal, now time.Time) []byte {
	t.Helper()
	env, _, err := protocol.SignEnvelope(id, protocol.SignRequest{
		Type: protocol.RequestCall, Canister: canister, Method: "ws_open", Arg: []byte("DIDL\x00\x00"),
		IngressExpiry: now.Add(3 * time.Minute), Nonce: []byte("0123456789abcdef"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// Envelopes whose delegation chain starts at a canister-signature key, as every Internet Identity
// login produces, are verified against the IC root key.
func TestVerifyEnvelopeInternetIdentity(t *testing.T) {
	now := time.Now()
	for _, layout := range []struct {
		name string
		opts certauth.Options
	}{{"mainnet layout", certauth.Options{Delegated: true}}, {"local replica layout", certauth.Options{}}} {
		t.Run(layout.name, func(t *testing.T) {
			f := newSigFixture(t, layout.opts)
			user := f.signer
			other, err := certauth.New(layout.opts)
			if err != nil {
				t.Fatal(err)
			}
			policy := protocol.IngressPolicy{MaxTTL: 5 * time.Minute, Drift: 30 * time.Second, RootKey: f.auth.RootKey()}
			session := newSessionKey(t)
			p256, err := identity.NewRandomPrime256v1Identity()
			if err != nil {
				t.Fatal(err)
			}
			forged := func() []byte {
				// A chain signed by another seed's key, presented as the user's.
				stranger := f.auth.CanisterSigner(f.canister, []byte("someone else"))
				id := iiIdentity(t, stranger, now.Add(time.Hour), nil, session)
				d, err := protocol.NewDelegationIdentity(user.PublicKey(), id.Delegations(), session)
				if err != nil {
					t.Fatal(err)
				}
				return signedCall(t, d, iiTestCanister, now)
			}
			cases := []struct {
				name     string
				policy   protocol.IngressPolicy
				envelope []byte
				kind     protocol.IngressErrorKind // 0 accepts
				msg      string
			}{
				{"delegation to a session key", policy, signedCall(t, iiIdentity(t, user, now.Add(30*time.Minute), nil), iiTestCanister, now), 0, ""},
				{"delegation for the canister", policy, signedCall(t, iiIdentity(t, user, now.Add(30*time.Minute), []principal.Principal{iiTestCanister}), iiTestCanister, now), 0, ""},
				{"longer chain", policy, signedCall(t, iiIdentity(t, user, now.Add(30*time.Minute), nil, session, p256), iiTestCanister, now), 0, ""},
				{"request signed by the canister key", policy, signedCall(t, user, iiTestCanister, now), 0, ""},
				{"cached verification", protocol.IngressPolicy{MaxTTL: 5 * time.Minute, RootKey: f.auth.RootKey(), CanisterSigs: protocol.NewCanisterSigVerifier(8, 0)},
					signedCall(t, iiIdentity(t, user, now.Add(30*time.Minute), nil), iiTestCanister, now), 0, ""},
				{"no root key", protocol.IngressPolicy{MaxTTL: 5 * time.Minute}, signedCall(t, iiIdentity(t, user, now.Add(30*time.Minute), nil), iiTestCanister, now),
					protocol.IngressDelegation, "canister signatures need the IC root key"},
				{"no root key, request signed by the canister key", protocol.IngressPolicy{MaxTTL: 5 * time.Minute}, signedCall(t, user, iiTestCanister, now),
					protocol.IngressSignature, "canister signatures need the IC root key"},
				{"another network's root key", protocol.IngressPolicy{MaxTTL: 5 * time.Minute, RootKey: other.RootKey()},
					signedCall(t, iiIdentity(t, user, now.Add(30*time.Minute), nil), iiTestCanister, now), protocol.IngressDelegation, "certificate"},
				{"delegation for another canister", policy, signedCall(t, iiIdentity(t, user, now.Add(30*time.Minute), []principal.Principal{iiOtherCanister}), iiTestCanister, now),
					protocol.IngressDelegation, "not one of the delegation targets"},
				{"expired delegation", policy, signedCall(t, iiIdentity(t, user, now.Add(-time.Second), nil), iiTestCanister, now), protocol.IngressDelegation, "expired"},
				{"chain signed by another seed", policy, forged(), protocol.IngressDelegation, "does not hold"},
				{"two canister signatures", policy, signedCall(t, iiIdentity(t, user, now.Add(30*time.Minute), nil, f.auth.CanisterSigner(f.canister, []byte("2")), session), iiTestCanister, now), 0, ""},
				{"three canister signatures", policy, signedCall(t, iiIdentity(t, user, now.Add(30*time.Minute), nil,
					f.auth.CanisterSigner(f.canister, []byte("2")), f.auth.CanisterSigner(f.canister, []byte("3")), session), iiTestCanister, now),
					protocol.IngressDelegation, "3 canister or RSA signatures in one request"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					req, err := tc.policy.VerifyEnvelope(tc.envelope, protocol.RequestCall, now)
					if tc.kind == 0 {
						if err != nil {
							t.Fatalf("refused: %v", err)
						}
						if !req.Sender.Equal(user.Sender()) {
							t.Fatalf("sender %s, want the canister-signature key's %s", req.Sender, user.Sender())
						}
						return
					}
					var ie *protocol.IngressError
					if !errors.As(err, &ie) || ie.Kind != tc.kind || !strings.Contains(ie.Msg, tc.msg) {
						t.Fatalf("error %v, want %s naming %q", err, tc.kind, tc.msg)
					}
				})
			}
		})
	}
}

func TestDelegationIdentityChecksItsChain(t *testing.T) {
	root, session := newSessionKey(t), newSessionKey(t)
	sd, err := protocol.SignDelegation(root, protocol.Delegation{PubKey: session.PublicKey(), Expiration: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.NewDelegationIdentity(root.PublicKey(), []protocol.SignedDelegation{sd}, newSessionKey(t)); err == nil {
		t.Fatal("a chain that ends at another key was accepted")
	}
	if _, err := protocol.NewDelegationIdentity(root.PublicKey(), nil, session); err == nil {
		t.Fatal("an empty chain was accepted")
	}
	if _, err := protocol.SignDelegation(root, protocol.Delegation{PubKey: session.PublicKey(), Expiration: time.Now(), Targets: []principal.Principal{}}); err == nil {
		t.Fatal("an empty target list was signed (it would be sent as no list: any canister)")
	}
	id, err := protocol.NewDelegationIdentity(root.PublicKey(), []protocol.SignedDelegation{sd}, session)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.ToPEM(); err == nil {
		t.Fatal("ToPEM exported something")
	}
	if !id.Sender().Equal(root.Sender()) {
		t.Fatalf("sender %s, want the root key's %s", id.Sender(), root.Sender())
	}
}
