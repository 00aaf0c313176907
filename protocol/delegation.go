package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// Delegation lets PubKey sign requests on behalf of the key that signs the delegation (IC
// interface specification, section "Authentication"), until Expiration, for Targets only unless
// Targets is nil.
type Delegation struct {
	PubKey     []byte
	Expiration time.Time
	Targets    []principal.Principal
}

// SignedDelegation is a delegation with its signature by the delegating key.
type SignedDelegation struct {
	Delegation Delegation
	Signature  []byte
}

// wireDelegation is a delegation's CBOR map; its request-id hash is what the delegating key signs.
type wireDelegation struct {
	PubKey     []byte   `cbor:"pubkey"`
	Expiration uint64   `cbor:"expiration"`
	Targets    [][]byte `cbor:"targets,omitempty"`
}

type wireSignedDelegation struct {
	Delegation cbor.RawMessage `cbor:"delegation"`
	Signature  []byte          `cbor:"signature"`
}

func (d Delegation) encode() ([]byte, error) {
	if d.Expiration.Before(time.Unix(0, 0)) {
		return nil, fmt.Errorf("delegation expiration %s is before 1970", d.Expiration)
	}
	w := wireDelegation{PubKey: d.PubKey, Expiration: uint64(d.Expiration.UnixNano())}
	if d.Targets != nil {
		w.Targets = make([][]byte, len(d.Targets))
		for i, t := range d.Targets {
			w.Targets[i] = t.Raw
		}
		if len(w.Targets) == 0 {
			// An empty list allows no canister; omitempty would turn it into "any canister".
			return nil, errors.New("delegation with an empty target list allows nothing")
		}
	}
	return cbor.Marshal(w)
}

// DelegationSignedBytes returns what a key signs to delegate: "\x1Aic-request-auth-delegation" ‖
// hash_of_map(delegation).
func DelegationSignedBytes(d Delegation) ([]byte, error) {
	raw, err := d.encode()
	if err != nil {
		return nil, err
	}
	h, err := RequestIDOfContent(raw)
	if err != nil {
		return nil, fmt.Errorf("delegation hash: %w", err)
	}
	return append(bytes.Clone(delegationDomain), h[:]...), nil
}

// SignDelegation signs d with signer.
func SignDelegation(signer identity.Identity, d Delegation) (SignedDelegation, error) {
	msg, err := DelegationSignedBytes(d)
	if err != nil {
		return SignedDelegation{}, fmt.Errorf("sign delegation: %w", err)
	}
	return SignedDelegation{Delegation: d, Signature: signer.Sign(msg)}, nil
}

// DelegationIdentity is the identity of a delegation chain, as agent-js's DelegationIdentity: the
// sender is the self-authenticating id of the chain's first key (for Internet Identity, a
// canister-signature key), requests are signed by the session key the chain ends at, and
// SignEnvelope attaches the chain as sender_delegation.
type DelegationIdentity struct {
	publicKey []byte
	chain     []SignedDelegation
	session   identity.Identity
}

// NewDelegationIdentity checks that chain links from publicKey (DER) to session's key and returns
// the identity. The signatures are not checked: the verifier does that.
func NewDelegationIdentity(publicKey []byte, chain []SignedDelegation, session identity.Identity) (*DelegationIdentity, error) {
	switch {
	case len(publicKey) == 0:
		return nil, errors.New("delegation identity: no public key")
	case len(chain) == 0:
		return nil, errors.New("delegation identity: empty chain")
	case session == nil:
		return nil, errors.New("delegation identity: no session key")
	case !bytes.Equal(chain[len(chain)-1].Delegation.PubKey, session.PublicKey()):
		return nil, errors.New("delegation identity: the chain does not end at the session key")
	}
	return &DelegationIdentity{publicKey: bytes.Clone(publicKey), chain: append([]SignedDelegation(nil), chain...), session: session}, nil
}

// Sender is the self-authenticating id of the chain's first key.
func (d *DelegationIdentity) Sender() principal.Principal {
	return principal.NewSelfAuthenticating(d.publicKey)
}

// PublicKey is the chain's first key (DER), sent as sender_pubkey.
func (d *DelegationIdentity) PublicKey() []byte { return bytes.Clone(d.publicKey) }

// Sign signs with the session key.
func (d *DelegationIdentity) Sign(msg []byte) []byte { return d.session.Sign(msg) }

// Verify checks a signature of the session key.
func (d *DelegationIdentity) Verify(msg, sig []byte) bool { return d.session.Verify(msg, sig) }

// ToPEM refuses: a delegation chain has no private key of its own to export.
func (d *DelegationIdentity) ToPEM() ([]byte, error) {
	return nil, errors.New("delegation identity: no private key to export")
}

// Delegations returns the chain.
func (d *DelegationIdentity) Delegations() []SignedDelegation {
	return append([]SignedDelegation(nil), d.chain...)
}

// delegator is an identity that signs through a delegation chain.
type delegator interface {
	Delegations() []SignedDelegation
}

// encodeChain returns the envelope's sender_delegation.
func encodeChain(chain []SignedDelegation) ([]wireSignedDelegation, error) {
	out := make([]wireSignedDelegation, len(chain))
	for i, sd := range chain {
		raw, err := sd.Delegation.encode()
		if err != nil {
			return nil, fmt.Errorf("delegation %d: %w", i, err)
		}
		out[i] = wireSignedDelegation{Delegation: raw, Signature: sd.Signature}
	}
	return out, nil
}
