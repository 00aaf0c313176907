package protocol

import (
	"errors"
	"fmt"

	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
	cw "github.com/icws/icws/protocol/internal/candidwire"
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

// CanisterOutputCertifiedMessages is the Ok value of ws_get_messages. ic-websocket-cdk 0.3.1 and
// later declare is_end_of_queue as bool; DecodeGetMessagesResult also reads the older CDKs, which
// have no such field (or an opt bool), and then sets true: the queue was drained.
type CanisterOutputCertifiedMessages struct {
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

// CanisterWsGetMessagesResult is variant { Ok : CanisterOutputCertifiedMessages; Err : text }.
type CanisterWsGetMessagesResult struct {
	Ok  *CanisterOutputCertifiedMessages `ic:"Ok,variant"`
	Err *string                          `ic:"Err,variant"`
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

// The Candid types of ic-websocket-cdk 0.4.1's interface. Encoding writes exactly these; decoding
// reads them under Candid subtyping (see candidwire), so a peer that adds record fields or sends
// absent or null opt fields still decodes.
var (
	candidClientKey = cw.Record(
		cw.F("client_principal", cw.Prim(cw.KindPrincipal)),
		cw.F("client_nonce", cw.Prim(cw.KindNat64)),
	)
	candidWsOpenArgs = cw.Record(
		cw.F("client_nonce", cw.Prim(cw.KindNat64)),
		cw.F("gateway_principal", cw.Prim(cw.KindPrincipal)),
	)
	candidWebsocketMessage = cw.Record(
		cw.F("client_key", candidClientKey),
		cw.F("sequence_num", cw.Prim(cw.KindNat64)),
		cw.F("timestamp", cw.Prim(cw.KindNat64)),
		cw.F("is_service_message", cw.Prim(cw.KindBool)),
		cw.F("content", cw.Blob()),
	)
	candidWsMessageArgs = cw.Record(cw.F("msg", candidWebsocketMessage))
	// candidOptNull is how ic-websocket-js 0.5.0 types ws_message's second argument
	// (IDL.Opt(IDL.Null)), always sent as none.
	candidOptNull     = cw.Opt(cw.Prim(cw.KindNull))
	candidWsCloseArgs = cw.Record(cw.F("client_key", candidClientKey))
	candidWsResult    = cw.Variant(cw.F("Ok", cw.Prim(cw.KindNull)), cw.F("Err", cw.Prim(cw.KindText)))
	candidCloseReason = cw.Variant(
		cw.F("WrongSequenceNumber", cw.Prim(cw.KindNull)),
		cw.F("InvalidServiceMessage", cw.Prim(cw.KindNull)),
		cw.F("KeepAliveTimeout", cw.Prim(cw.KindNull)),
		cw.F("ClosedByApplication", cw.Prim(cw.KindNull)),
	)
	// Ack and keep-alive contents have the same record type.
	candidLastIncoming   = cw.Record(cw.F("last_incoming_sequence_num", cw.Prim(cw.KindNat64)))
	candidOpenContent    = cw.Record(cw.F("client_key", candidClientKey))
	candidCloseContent   = cw.Record(cw.F("reason", candidCloseReason))
	candidServiceMessage = cw.Variant(
		cw.F("OpenMessage", candidOpenContent),
		cw.F("AckMessage", candidLastIncoming),
		cw.F("KeepAliveMessage", candidLastIncoming),
		cw.F("CloseMessage", candidCloseContent),
	)
)

func encodeCandid(what string, types []*cw.Type, values ...cw.Value) ([]byte, error) {
	b, err := cw.Encode(types, values)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", what, err)
	}
	return b, nil
}

// decodeCandid decodes one expected value; further arguments on the wire are skipped.
func decodeCandid(what string, data []byte, t *cw.Type) (cw.Value, error) {
	vs, err := cw.Decode(data, []*cw.Type{t})
	if err != nil {
		return cw.Value{}, fmt.Errorf("decode %s: %w", what, err)
	}
	return vs[0], nil
}

// decodeCandidShared is decodeCandid with byte values aliasing data (cw.DecodeShared).
func decodeCandidShared(what string, data []byte, t *cw.Type) (cw.Value, error) {
	vs, err := cw.DecodeShared(data, []*cw.Type{t})
	if err != nil {
		return cw.Value{}, fmt.Errorf("decode %s: %w", what, err)
	}
	return vs[0], nil
}

func (k ClientKey) candid() cw.Value {
	return cw.RecordValue(candidClientKey, cw.BytesValue(k.ClientPrincipal.Raw), cw.NatValue(k.ClientNonce))
}

func clientKeyFromCandid(v cw.Value) ClientKey {
	return ClientKey{
		ClientPrincipal: principal.Principal{Raw: v.Field("client_principal").Bytes()},
		ClientNonce:     v.Field("client_nonce").Nat(),
	}
}

// EncodeWsOpenArgs is ws_open's argument, Candid (CanisterWsOpenArguments), byte for byte as
// ic-websocket-js 0.5.0 encodes it.
func EncodeWsOpenArgs(a CanisterWsOpenArguments) ([]byte, error) {
	return encodeCandid("ws_open arguments", []*cw.Type{candidWsOpenArgs},
		cw.RecordValue(candidWsOpenArgs, cw.NatValue(a.ClientNonce), cw.BytesValue(a.GatewayPrincipal.Raw)))
}

// DecodeWsOpenArgs reads ws_open's argument.
func DecodeWsOpenArgs(arg []byte) (CanisterWsOpenArguments, error) {
	v, err := decodeCandid("ws_open arguments", arg, candidWsOpenArgs)
	if err != nil {
		return CanisterWsOpenArguments{}, err
	}
	return CanisterWsOpenArguments{
		ClientNonce:      v.Field("client_nonce").Nat(),
		GatewayPrincipal: principal.Principal{Raw: v.Field("gateway_principal").Bytes()},
	}, nil
}

func (m WebsocketMessage) candid() cw.Value {
	return cw.RecordValue(candidWebsocketMessage,
		m.ClientKey.candid(), cw.NatValue(m.SequenceNum), cw.NatValue(m.Timestamp),
		cw.BoolValue(m.IsServiceMessage), cw.BytesValue(m.Content))
}

func websocketMessageFromCandid(v cw.Value) WebsocketMessage {
	return WebsocketMessage{
		ClientKey:        clientKeyFromCandid(v.Field("client_key")),
		SequenceNum:      v.Field("sequence_num").Nat(),
		Timestamp:        v.Field("timestamp").Nat(),
		IsServiceMessage: v.Field("is_service_message").Bool(),
		Content:          v.Field("content").Bytes(),
	}
}

// EncodeWsMessageArgs is ws_message's arguments as ic-websocket-js 0.5.0 sends them, byte for
// byte: (CanisterWsMessageArguments, opt null), the second being none. The SDK declares the
// second argument as IDL.Opt(IDL.Null) whatever the application's message type is; the CDK
// declares it as opt of that type and reads none.
func EncodeWsMessageArgs(m WebsocketMessage) ([]byte, error) {
	return encodeCandid("ws_message arguments", []*cw.Type{candidWsMessageArgs, candidOptNull},
		cw.RecordValue(candidWsMessageArgs, m.candid()), cw.None())
}

// DecodeWsMessageArgs reads the message of ws_message's arguments. The CDK declares a second
// argument, opt of the application's message type, and ignores it. Rust candid accepts any
// well-formed value there (null or reserved read as none; a value of another type reads as none
// by the special opt rule) and skips arguments beyond the declared ones, so this decoder skips
// every argument after the first, checking only that it is well-formed: it accepts exactly what
// the CDK accepts, whatever the application's type.
func DecodeWsMessageArgs(arg []byte) (WebsocketMessage, error) {
	v, err := decodeCandid("ws_message arguments", arg, candidWsMessageArgs)
	if err != nil {
		return WebsocketMessage{}, err
	}
	return websocketMessageFromCandid(v.Field("msg")), nil
}

// EncodeWsCloseArgs is ws_close's argument, Candid (CanisterWsCloseArguments).
func EncodeWsCloseArgs(a CanisterWsCloseArguments) ([]byte, error) {
	return encodeCandid("ws_close arguments", []*cw.Type{candidWsCloseArgs},
		cw.RecordValue(candidWsCloseArgs, a.ClientKey.candid()))
}

// DecodeWsCloseArgs reads ws_close's argument.
func DecodeWsCloseArgs(arg []byte) (CanisterWsCloseArguments, error) {
	v, err := decodeCandid("ws_close arguments", arg, candidWsCloseArgs)
	if err != nil {
		return CanisterWsCloseArguments{}, err
	}
	return CanisterWsCloseArguments{ClientKey: clientKeyFromCandid(v.Field("client_key"))}, nil
}

// EncodeWsResult is the reply of ws_open, ws_message and ws_close. Exactly one of Ok and Err must
// be set.
func EncodeWsResult(r CanisterWsResult) ([]byte, error) {
	var v cw.Value
	switch {
	case r.Ok != nil && r.Err == nil:
		v = cw.VariantValue(candidWsResult, "Ok", cw.NullValue())
	case r.Err != nil && r.Ok == nil:
		v = cw.VariantValue(candidWsResult, "Err", cw.TextValue(*r.Err))
	default:
		return nil, errors.New("encode result: exactly one of Ok and Err must be set")
	}
	return encodeCandid("result", []*cw.Type{candidWsResult}, v)
}

// DecodeWsResult reads the reply of ws_open, ws_message or ws_close.
func DecodeWsResult(reply []byte) (CanisterWsResult, error) {
	v, err := decodeCandid("result", reply, candidWsResult)
	if err != nil {
		return CanisterWsResult{}, err
	}
	f, payload := v.Case()
	if f.Name == "Err" {
		return ResultErr(payload.Text()), nil
	}
	return ResultOk(), nil
}

func (r CloseMessageReason) candid() (cw.Value, error) {
	set, name := 0, ""
	for _, c := range []struct {
		name string
		on   bool
	}{
		{"WrongSequenceNumber", r.WrongSequenceNumber != nil},
		{"InvalidServiceMessage", r.InvalidServiceMessage != nil},
		{"KeepAliveTimeout", r.KeepAliveTimeout != nil},
		{"ClosedByApplication", r.ClosedByApplication != nil},
	} {
		if c.on {
			set, name = set+1, c.name
		}
	}
	if set != 1 {
		return cw.Value{}, fmt.Errorf("close reason with %d cases set, want 1", set)
	}
	return cw.VariantValue(candidCloseReason, name, cw.NullValue()), nil
}

func closeReasonFromCandid(v cw.Value) CloseMessageReason {
	var r CloseMessageReason
	f, _ := v.Case()
	switch f.Name {
	case "WrongSequenceNumber":
		r.WrongSequenceNumber = new(idl.Null)
	case "InvalidServiceMessage":
		r.InvalidServiceMessage = new(idl.Null)
	case "KeepAliveTimeout":
		r.KeepAliveTimeout = new(idl.Null)
	case "ClosedByApplication":
		r.ClosedByApplication = new(idl.Null)
	}
	return r
}

// EncodeServiceMessage is the Candid content of a service message. Exactly one case must be set.
func EncodeServiceMessage(m WebsocketServiceMessageContent) ([]byte, error) {
	cases := 0
	var v cw.Value
	if m.OpenMessage != nil {
		cases++
		v = cw.VariantValue(candidServiceMessage, "OpenMessage",
			cw.RecordValue(candidOpenContent, m.OpenMessage.ClientKey.candid()))
	}
	if m.AckMessage != nil {
		cases++
		v = cw.VariantValue(candidServiceMessage, "AckMessage",
			cw.RecordValue(candidLastIncoming, cw.NatValue(m.AckMessage.LastIncomingSequenceNum)))
	}
	if m.KeepAliveMessage != nil {
		cases++
		v = cw.VariantValue(candidServiceMessage, "KeepAliveMessage",
			cw.RecordValue(candidLastIncoming, cw.NatValue(m.KeepAliveMessage.LastIncomingSequenceNum)))
	}
	if m.CloseMessage != nil {
		cases++
		reason, err := m.CloseMessage.Reason.candid()
		if err != nil {
			return nil, fmt.Errorf("encode service message: %w", err)
		}
		v = cw.VariantValue(candidServiceMessage, "CloseMessage",
			cw.RecordValue(candidCloseContent, reason))
	}
	if cases != 1 {
		return nil, fmt.Errorf("encode service message: %d cases set, want 1", cases)
	}
	return encodeCandid("service message", []*cw.Type{candidServiceMessage}, v)
}

// DecodeServiceMessage reads the Candid content of a service message.
func DecodeServiceMessage(content []byte) (WebsocketServiceMessageContent, error) {
	v, err := decodeCandid("service message", content, candidServiceMessage)
	if err != nil {
		return WebsocketServiceMessageContent{}, err
	}
	var m WebsocketServiceMessageContent
	f, p := v.Case()
	switch f.Name {
	case "OpenMessage":
		m.OpenMessage = &CanisterOpenMessageContent{ClientKey: clientKeyFromCandid(p.Field("client_key"))}
	case "AckMessage":
		m.AckMessage = &CanisterAckMessageContent{LastIncomingSequenceNum: p.Field("last_incoming_sequence_num").Nat()}
	case "KeepAliveMessage":
		m.KeepAliveMessage = &ClientKeepAliveMessageContent{LastIncomingSequenceNum: p.Field("last_incoming_sequence_num").Nat()}
	case "CloseMessage":
		m.CloseMessage = &CanisterCloseMessageContent{Reason: closeReasonFromCandid(p.Field("reason"))}
	}
	return m, nil
}
