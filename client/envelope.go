package client

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/protocol"
)

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
	env, rid, err := protocol.SignEnvelope(id, protocol.SignRequest{
		Type:          protocol.RequestCall,
		Canister:      canister,
		Method:        method,
		Arg:           arg,
		IngressExpiry: time.Unix(0, int64(ingressExpiry(now))),
		Nonce:         nonce,
	})
	if err != nil {
		return nil, protocol.RequestID{}, fmt.Errorf("sign %s: %w", method, err)
	}
	frame, err := protocol.EncodeClientFrame(env)
	if err != nil {
		return nil, protocol.RequestID{}, fmt.Errorf("sign %s: %w", method, err)
	}
	return frame, rid, nil
}
