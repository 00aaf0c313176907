package protocol

import (
	"errors"
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// Request types of the IC HTTP interface.
const (
	RequestCall      = "call"
	RequestQuery     = "query"
	RequestReadState = "read_state"
)

// SignRequest is the content of an envelope before signing. Sender is taken from the identity.
type SignRequest struct {
	Type          string
	Canister      principal.Principal // call and query
	Method        string              // call and query
	Arg           []byte              // call and query; nil is sent as an empty blob
	Paths         [][][]byte          // read_state
	IngressExpiry time.Time
	Nonce         []byte // optional, at most 32 bytes
}

type readStateContent struct {
	RequestType   string     `cbor:"request_type"`
	Paths         [][][]byte `cbor:"paths"`
	Sender        []byte     `cbor:"sender"`
	IngressExpiry uint64     `cbor:"ingress_expiry"`
	Nonce         []byte     `cbor:"nonce,omitempty"`
}

// signedEnvelope is {content, sender_pubkey, sender_sig, sender_delegation}; an anonymous sender
// leaves out the keys, an identity without a delegation chain the last one.
type signedEnvelope struct {
	Content          cbor.RawMessage        `cbor:"content"`
	SenderPubkey     []byte                 `cbor:"sender_pubkey,omitempty"`
	SenderSig        []byte                 `cbor:"sender_sig,omitempty"`
	SenderDelegation []wireSignedDelegation `cbor:"sender_delegation,omitempty"`
}

// requestSignDomain prefixes the request id in sender_sig (IC interface spec, "Authentication").
var requestSignDomain = []byte("\x0Aic-request")

// SignEnvelope encodes the envelope {content, sender_pubkey, sender_sig} of r signed by id, without
// the self-describe tag (as it goes inside a client frame), and returns it with the request id.
// An anonymous identity produces an unsigned envelope; a DelegationIdentity adds its chain as
// sender_delegation.
func SignEnvelope(id identity.Identity, r SignRequest) ([]byte, RequestID, error) {
	if id == nil {
		return nil, RequestID{}, errors.New("sign envelope: no identity")
	}
	if len(r.Nonce) > 32 {
		return nil, RequestID{}, fmt.Errorf("sign envelope: nonce of %d bytes (at most 32)", len(r.Nonce))
	}
	if r.IngressExpiry.IsZero() {
		return nil, RequestID{}, errors.New("sign envelope: no ingress expiry")
	}
	sender := id.Sender()
	var content any
	switch r.Type {
	case RequestCall, RequestQuery:
		if len(r.Canister.Raw) == 0 {
			return nil, RequestID{}, errors.New("sign envelope: no canister")
		}
		arg := r.Arg
		if arg == nil {
			arg = []byte{}
		}
		content = EnvelopeContent{
			RequestType:   r.Type,
			CanisterID:    r.Canister.Raw,
			MethodName:    r.Method,
			Arg:           arg,
			Sender:        sender.Raw,
			IngressExpiry: uint64(r.IngressExpiry.UnixNano()),
			Nonce:         r.Nonce,
		}
	case RequestReadState:
		paths := r.Paths
		if paths == nil {
			paths = [][][]byte{}
		}
		content = readStateContent{
			RequestType:   r.Type,
			Paths:         paths,
			Sender:        sender.Raw,
			IngressExpiry: uint64(r.IngressExpiry.UnixNano()),
			Nonce:         r.Nonce,
		}
	default:
		return nil, RequestID{}, fmt.Errorf("sign envelope: unknown request type %q", r.Type)
	}
	raw, err := cbor.Marshal(content)
	if err != nil {
		return nil, RequestID{}, fmt.Errorf("sign envelope: encode content: %w", err)
	}
	// Hashing the encoded content, not the struct, proves the id is of the bytes that are sent.
	rid, err := RequestIDOfContent(raw)
	if err != nil {
		return nil, RequestID{}, fmt.Errorf("sign envelope: %w", err)
	}
	env := signedEnvelope{Content: raw}
	if !sender.IsAnonymous() {
		env.SenderPubkey = id.PublicKey()
		env.SenderSig = id.Sign(append(append([]byte{}, requestSignDomain...), rid[:]...))
		if d, ok := id.(delegator); ok {
			if env.SenderDelegation, err = encodeChain(d.Delegations()); err != nil {
				return nil, RequestID{}, fmt.Errorf("sign envelope: %w", err)
			}
		}
	}
	b, err := cbor.Marshal(env)
	if err != nil {
		return nil, RequestID{}, fmt.Errorf("sign envelope: encode: %w", err)
	}
	return b, rid, nil
}
