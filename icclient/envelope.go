package icclient

import (
	"github.com/aviate-labs/agent-go/identity"
	"github.com/icws/icws/protocol"
)

// Request types of the IC HTTP interface.
const (
	RequestCall      = protocol.RequestCall
	RequestQuery     = protocol.RequestQuery
	RequestReadState = protocol.RequestReadState
)

// Request is the content of an envelope before signing. Sender is taken from the identity.
type Request = protocol.SignRequest

// SignEnvelope builds the CBOR envelope {content, sender_pubkey, sender_sig} of r signed by id
// (protocol.SignEnvelope) with the self-describe tag in front, as the IC HTTP interface takes it,
// and returns it with the request id. An anonymous identity produces an unsigned envelope.
func SignEnvelope(id identity.Identity, r Request) ([]byte, protocol.RequestID, error) {
	env, rid, err := protocol.SignEnvelope(id, r)
	if err != nil {
		return nil, protocol.RequestID{}, err
	}
	return append(append([]byte{}, protocol.SelfDescribeTag...), env...), rid, nil
}
