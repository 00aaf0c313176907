package client

import "github.com/icws/icws/protocol"

// EncodeAppMessage is Candid (AppMessage,), the payload the demo canister echoes; it is
// protocol.EncodeAppMessage, kept here for client users.
func EncodeAppMessage(m protocol.AppMessage) ([]byte, error) { return protocol.EncodeAppMessage(m) }

// DecodeAppMessage reads a Candid AppMessage payload; it is protocol.DecodeAppMessage.
func DecodeAppMessage(content []byte) (protocol.AppMessage, error) {
	return protocol.DecodeAppMessage(content)
}
