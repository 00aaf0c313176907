package icclient

import (
	"errors"
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/protocol"
)

// Request types of the IC HTTP interface.
const (
	RequestCall      = "call"
	RequestQuery     = "query"
	RequestReadState = "read_state"
)

// Request is the content of an envelope before signing. Sender is taken from the identity.
type Request struct {
	Type          string
	Canister      principal.Principal // call and query
	Method        string              // call and query
	Arg           []byte              // call and query; nil is sent as an empty blob
	Paths         [][][]byte          // read_state
	IngressExpiry time.Time
	Nonce         []byte // optional, at most 32 bytes
}

// requestSignDomain prefixes the request id in sender_sig (IC interface spec, "Authentication").
var requestSignDomain = []byte("\x0Aic-request")

// SignEnvelope builds the CBOR envelope {content, sender_pubkey, sender_sig} of r signed by id, and
// returns it with the request id. An anonymous identity produces an unsigned envelope.
func SignEnvelope(id identity.Identity, r Request) ([]byte, protocol.RequestID, error) {
	if id == nil {
		return nil, protocol.RequestID{}, errors.New("sign envelope: no identity")
	}
	if len(r.Nonce) > 32 {
		return nil, protocol.RequestID{}, fmt.Errorf("sign envelope: nonce of %d bytes (at most 32)", len(r.Nonce))
	}
	if r.IngressExpiry.IsZero() {
		return nil, protocol.RequestID{}, errors.New("sign envelope: no ingress expiry")
	}
	sender := id.Sender()
	// wire is what goes on the wire; hashed mirrors it with the types HashOfMap understands.
	wire := map[string]any{
		"request_type":   r.Type,
		"sender":         sender.Raw,
		"ingress_expiry": uint64(r.IngressExpiry.UnixNano()),
	}
	if len(r.Nonce) > 0 {
		wire["nonce"] = r.Nonce
	}
	switch r.Type {
	case RequestCall, RequestQuery:
		if len(r.Canister.Raw) == 0 {
			return nil, protocol.RequestID{}, errors.New("sign envelope: no canister")
		}
		arg := r.Arg
		if arg == nil {
			arg = []byte{}
		}
		wire["canister_id"] = r.Canister.Raw
		wire["method_name"] = r.Method
		wire["arg"] = arg
	case RequestReadState:
		if r.Paths == nil {
			r.Paths = [][][]byte{}
		}
		wire["paths"] = r.Paths
	default:
		return nil, protocol.RequestID{}, fmt.Errorf("sign envelope: unknown request type %q", r.Type)
	}
	hashed := make(map[string]any, len(wire))
	for k, v := range wire {
		hashed[k] = v
	}
	if r.Type == RequestReadState {
		paths := make([]any, len(r.Paths))
		for i, p := range r.Paths {
			labels := make([]any, len(p))
			for j, l := range p {
				labels[j] = l
			}
			paths[i] = labels
		}
		hashed["paths"] = paths
	}
	rid, err := protocol.HashOfMap(hashed)
	if err != nil {
		return nil, protocol.RequestID{}, fmt.Errorf("sign envelope: request id: %w", err)
	}
	env := map[string]any{"content": wire}
	if !sender.IsAnonymous() {
		env["sender_pubkey"] = id.PublicKey()
		env["sender_sig"] = id.Sign(append(append([]byte{}, requestSignDomain...), rid[:]...))
	}
	b, err := cbor.Marshal(env)
	if err != nil {
		return nil, protocol.RequestID{}, fmt.Errorf("sign envelope: encode: %w", err)
	}
	return append(append([]byte{}, protocol.SelfDescribeTag...), b...), protocol.RequestID(rid), nil
}
