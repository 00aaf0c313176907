package protocol

import (
	"fmt"

	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
)

// ClientKey identifies one client connection: the client's principal and a random nonce chosen by
// the client for this connection. Candid: record { client_principal : principal; client_nonce : nat64 }.
type ClientKey struct {
	ClientPrincipal principal.Principal `ic:"client_principal" cbor:"client_principal"`
	ClientNonce     uint64              `ic:"client_nonce" cbor:"client_nonce"`
}

// String is the human form used in logs: "<principal>_<nonce>".
func (k ClientKey) String() string {
	return fmt.Sprintf("%s_%d", k.ClientPrincipal.Encode(), k.ClientNonce)
}

// Equal reports whether both keys name the same client connection.
func (k ClientKey) Equal(o ClientKey) bool {
	return k.ClientNonce == o.ClientNonce && k.ClientPrincipal.Equal(o.ClientPrincipal)
}

// CanisterWsOpenArguments is the argument of ws_open.
type CanisterWsOpenArguments struct {
	ClientNonce      uint64              `ic:"client_nonce"`
	GatewayPrincipal principal.Principal `ic:"gateway_principal"`
}

// CanisterWsCloseArguments is the argument of ws_close.
type CanisterWsCloseArguments struct {
	ClientKey ClientKey `ic:"client_key"`
}

// WebsocketMessage is a message in either direction. As Candid it is the msg of ws_message; as CBOR
// (with the self-describe tag, field order as declared) it is the content of a canister message.
type WebsocketMessage struct {
	ClientKey        ClientKey `ic:"client_key" cbor:"client_key"`
	SequenceNum      uint64    `ic:"sequence_num" cbor:"sequence_num"`
	Timestamp        uint64    `ic:"timestamp" cbor:"timestamp"`
	IsServiceMessage bool      `ic:"is_service_message" cbor:"is_service_message"`
	Content          []byte    `ic:"content" cbor:"content"`
}

// CanisterWsMessageArguments is the first argument of ws_message.
type CanisterWsMessageArguments struct {
	Msg WebsocketMessage `ic:"msg"`
}

// CanisterWsGetMessagesArguments is the argument of ws_get_messages: the first queue nonce the
// gateway has not received yet (inclusive).
type CanisterWsGetMessagesArguments struct {
	Nonce uint64 `ic:"nonce"`
}

// CanisterOutputMessage is one queued message for a client, as returned by ws_get_messages.
type CanisterOutputMessage struct {
	ClientKey ClientKey `ic:"client_key"`
	Key       string    `ic:"key"`
	Content   []byte    `ic:"content"`
}

// CanisterOutputCertifiedMessages is the Ok value of ws_get_messages. IsEndOfQueue is declared as an
// option so that canisters built with CDK < 0.3.1 decode too; a missing value means true.
type CanisterOutputCertifiedMessages struct {
	Messages     []CanisterOutputMessage `ic:"messages"`
	Cert         []byte                  `ic:"cert"`
	Tree         []byte                  `ic:"tree"`
	IsEndOfQueue *bool                   `ic:"is_end_of_queue"`
}

// EndOfQueue applies the CDK < 0.3.1 default: no value means the queue was drained.
func (m CanisterOutputCertifiedMessages) EndOfQueue() bool {
	return m.IsEndOfQueue == nil || *m.IsEndOfQueue
}

// CanisterOutputCertifiedMessagesStrict is the same record with is_end_of_queue as the plain bool
// that ic-websocket-cdk 0.4.1 declares; the canister encodes its answers with it.
type CanisterOutputCertifiedMessagesStrict struct {
	Messages     []CanisterOutputMessage `ic:"messages"`
	Cert         []byte                  `ic:"cert"`
	Tree         []byte                  `ic:"tree"`
	IsEndOfQueue bool                    `ic:"is_end_of_queue"`
}

// CanisterWsResult is variant { Ok : null; Err : text }, the result of ws_open, ws_message and ws_close.
type CanisterWsResult struct {
	Ok  *idl.Null `ic:"Ok,variant"`
	Err *string   `ic:"Err,variant"`
}

// ResultOk and ResultErr build the two cases of CanisterWsResult.
func ResultOk() CanisterWsResult { return CanisterWsResult{Ok: new(idl.Null)} }

// ResultErr builds the Err case of CanisterWsResult.
func ResultErr(msg string) CanisterWsResult { return CanisterWsResult{Err: &msg} }

// CanisterWsGetMessagesResult is variant { Ok : CanisterOutputCertifiedMessages; Err : text } as
// decoded by a gateway.
type CanisterWsGetMessagesResult struct {
	Ok  *CanisterOutputCertifiedMessages `ic:"Ok,variant"`
	Err *string                          `ic:"Err,variant"`
}

// CanisterWsGetMessagesResultStrict is the same variant as the canister encodes it.
type CanisterWsGetMessagesResultStrict struct {
	Ok  *CanisterOutputCertifiedMessagesStrict `ic:"Ok,variant"`
	Err *string                                `ic:"Err,variant"`
}

// CloseMessageReason is variant { WrongSequenceNumber; InvalidServiceMessage; KeepAliveTimeout;
// ClosedByApplication }.
type CloseMessageReason struct {
	WrongSequenceNumber   *idl.Null `ic:"WrongSequenceNumber,variant"`
	InvalidServiceMessage *idl.Null `ic:"InvalidServiceMessage,variant"`
	KeepAliveTimeout      *idl.Null `ic:"KeepAliveTimeout,variant"`
	ClosedByApplication   *idl.Null `ic:"ClosedByApplication,variant"`
}

// String names the reason as the CDK does.
func (r CloseMessageReason) String() string {
	switch {
	case r.WrongSequenceNumber != nil:
		return "WrongSequenceNumber"
	case r.InvalidServiceMessage != nil:
		return "InvalidServiceMessage"
	case r.KeepAliveTimeout != nil:
		return "KeepAliveTimeout"
	case r.ClosedByApplication != nil:
		return "ClosedByApplication"
	}
	return "Unknown"
}

// CanisterOpenMessageContent is the payload of OpenMessage.
type CanisterOpenMessageContent struct {
	ClientKey ClientKey `ic:"client_key"`
}

// CanisterAckMessageContent is the payload of AckMessage.
type CanisterAckMessageContent struct {
	LastIncomingSequenceNum uint64 `ic:"last_incoming_sequence_num"`
}

// ClientKeepAliveMessageContent is the payload of KeepAliveMessage.
type ClientKeepAliveMessageContent struct {
	LastIncomingSequenceNum uint64 `ic:"last_incoming_sequence_num"`
}

// CanisterCloseMessageContent is the payload of CloseMessage.
type CanisterCloseMessageContent struct {
	Reason CloseMessageReason `ic:"reason"`
}

// WebsocketServiceMessageContent is the Candid content of a service message (is_service_message = true).
type WebsocketServiceMessageContent struct {
	OpenMessage      *CanisterOpenMessageContent    `ic:"OpenMessage,variant"`
	AckMessage       *CanisterAckMessageContent     `ic:"AckMessage,variant"`
	KeepAliveMessage *ClientKeepAliveMessageContent `ic:"KeepAliveMessage,variant"`
	CloseMessage     *CanisterCloseMessageContent   `ic:"CloseMessage,variant"`
}
