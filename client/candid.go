package client

import (
	"fmt"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/protocol"
)

// encodeOpenArg is Candid((CanisterWsOpenArguments,)), byte-identical to ic-websocket-js.
func encodeOpenArg(nonce uint64, gateway principal.Principal) ([]byte, error) {
	b, err := candid.Marshal([]any{protocol.CanisterWsOpenArguments{ClientNonce: nonce, GatewayPrincipal: gateway}})
	if err != nil {
		return nil, fmt.Errorf("encode ws_open argument: %w", err)
	}
	return b, nil
}

// encodeMessageArg is Candid((CanisterWsMessageArguments, opt null = none)). ic-websocket-js 0.5.0
// declares ws_message as IDL.Func([CanisterWsMessageArgumentsIdl, IDL.Opt(IDL.Null)]) and always
// sends [] for the second argument, so the wire type is `opt null`, not the app's type; a canister
// decoding `opt AppMessage` reads it as none. agent-go's idl.TypeOf would turn a nil pointer into
// the pointee's type (not an option), so the types are given explicitly.
func encodeMessageArg(m protocol.WebsocketMessage) ([]byte, error) {
	args := protocol.CanisterWsMessageArguments{Msg: m}
	typ, err := idl.TypeOf(args)
	if err != nil {
		return nil, fmt.Errorf("encode ws_message argument: %w", err)
	}
	b, err := candid.Encode([]idl.Type{typ, idl.NewOptionalType(new(idl.NullType))}, []any{args, nil})
	if err != nil {
		return nil, fmt.Errorf("encode ws_message argument: %w", err)
	}
	return b, nil
}

func encodeKeepAlive(lastIncoming uint64) ([]byte, error) {
	b, err := candid.Marshal([]any{protocol.WebsocketServiceMessageContent{
		KeepAliveMessage: &protocol.ClientKeepAliveMessageContent{LastIncomingSequenceNum: lastIncoming},
	}})
	if err != nil {
		return nil, fmt.Errorf("encode keep-alive: %w", err)
	}
	return b, nil
}

func decodeServiceMessage(content []byte) (protocol.WebsocketServiceMessageContent, error) {
	var sm protocol.WebsocketServiceMessageContent
	if err := candid.Unmarshal(content, []any{&sm}); err != nil {
		return sm, fmt.Errorf("decode service message: %w", err)
	}
	return sm, nil
}

// EncodeAppMessage is Candid((AppMessage,)), the payload the demo canister echoes.
func EncodeAppMessage(m protocol.AppMessage) ([]byte, error) {
	b, err := candid.Marshal([]any{m})
	if err != nil {
		return nil, fmt.Errorf("encode app message: %w", err)
	}
	return b, nil
}

// DecodeAppMessage reads a Candid AppMessage payload.
func DecodeAppMessage(content []byte) (protocol.AppMessage, error) {
	var m protocol.AppMessage
	if err := candid.Unmarshal(content, []any{&m}); err != nil {
		return m, fmt.Errorf("decode app message: %w", err)
	}
	return m, nil
}
