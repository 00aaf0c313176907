package testkit

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/icclient"
)

// CallOption changes one field of the call SignedCall signs.
type CallOption func(*icclient.Request)

// WithExpiry sets the ingress expiry (default: four minutes from now).
func WithExpiry(at time.Time) CallOption {
	return func(r *icclient.Request) { r.IngressExpiry = at }
}

// WithNonce sets the nonce (default: 16 random bytes).
func WithNonce(nonce []byte) CallOption {
	return func(r *icclient.Request) { r.Nonce = nonce }
}

// SignedCall returns the CBOR envelope {content, sender_pubkey, sender_sig} of a call of method on
// canister with arg, signed by id through icclient.SignEnvelope (so tests sign exactly as the
// gateway does), with the self-describe tag in front.
func SignedCall(t testing.TB, id identity.Identity, canister principal.Principal, method string, arg []byte, opts ...CallOption) []byte {
	t.Helper()
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	r := icclient.Request{
		Type:          icclient.RequestCall,
		Canister:      canister,
		Method:        method,
		Arg:           arg,
		IngressExpiry: time.Now().Add(4 * time.Minute),
		Nonce:         nonce,
	}
	for _, o := range opts {
		o(&r)
	}
	env, _, err := icclient.SignEnvelope(id, r)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// NewIdentity is a fresh Ed25519 identity.
func NewIdentity(t testing.TB) identity.Identity {
	t.Helper()
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
