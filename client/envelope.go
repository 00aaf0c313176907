package client

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/protocol"
)

// callContent is the content map of a call, fields in the order agent-js writes them.
type callContent struct {
	RequestType   string `cbor:"request_type"`
	CanisterID    []byte `cbor:"canister_id"`
	MethodName    string `cbor:"method_name"`
	Arg           []byte `cbor:"arg"`
	Sender        []byte `cbor:"sender"`
	IngressExpiry uint64 `cbor:"ingress_expiry"`
	Nonce         []byte `cbor:"nonce"`
}

type envelope struct {
	Content      cbor.RawMessage `cbor:"content"`
	SenderPubkey []byte          `cbor:"sender_pubkey"`
	SenderSig    []byte          `cbor:"sender_sig"`
}

var requestDomain = []byte("\x0Aic-request")

// ingressExpiry mirrors agent-js 2.x Expiry(5 min): now + 5 min - 60 s of permitted drift, rounded
// down to the minute, so 3-4 minutes of validity.
func ingressExpiry(now time.Time) uint64 {
	t := now.Add(5*time.Minute - time.Minute).Truncate(time.Minute)
	return uint64(t.UnixNano())
}

// signCall builds the client frame {envelope: {content, sender_pubkey, sender_sig}} of a call, as
// ic-websocket-js's WsAgent does, and returns it with the request id.
func signCall(id identity.Identity, canister principal.Principal, method string, arg []byte, now time.Time) ([]byte, protocol.RequestID, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, protocol.RequestID{}, fmt.Errorf("sign %s: nonce: %w", method, err)
	}
	content, err := cbor.Marshal(callContent{
		RequestType:   "call",
		CanisterID:    canister.Raw,
		MethodName:    method,
		Arg:           arg,
		Sender:        id.Sender().Raw,
		IngressExpiry: ingressExpiry(now),
		Nonce:         nonce,
	})
	if err != nil {
		return nil, protocol.RequestID{}, fmt.Errorf("sign %s: encode content: %w", method, err)
	}
	rid, err := protocol.RequestIDOfContent(content)
	if err != nil {
		return nil, protocol.RequestID{}, fmt.Errorf("sign %s: %w", method, err)
	}
	env, err := cbor.Marshal(envelope{
		Content:      content,
		SenderPubkey: id.PublicKey(),
		SenderSig:    id.Sign(append(append([]byte{}, requestDomain...), rid[:]...)),
	})
	if err != nil {
		return nil, protocol.RequestID{}, fmt.Errorf("sign %s: encode envelope: %w", method, err)
	}
	frame, err := protocol.EncodeClientFrame(env)
	if err != nil {
		return nil, protocol.RequestID{}, fmt.Errorf("sign %s: %w", method, err)
	}
	return frame, rid, nil
}
