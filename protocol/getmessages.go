package protocol

import (
	"errors"
	"fmt"

	cw "github.com/icws/icws/protocol/internal/candidwire"
)

// ErrGetMessagesRefused wraps the Err text of a ws_get_messages answer.
var ErrGetMessagesRefused = errors.New("canister answered Err")

var (
	candidGetMessagesArgs = cw.Record(cw.F("nonce", cw.Prim(cw.KindNat64)))
	candidOutputMessage   = cw.Record(
		cw.F("client_key", candidClientKey),
		cw.F("key", cw.Prim(cw.KindText)),
		cw.F("content", cw.Blob()),
	)
	// The canister answers as ic-websocket-cdk 0.4.1 declares it: is_end_of_queue is a bool.
	candidCertifiedMessages = cw.Record(
		cw.F("messages", cw.Vec(candidOutputMessage)),
		cw.F("cert", cw.Blob()),
		cw.F("tree", cw.Blob()),
		cw.F("is_end_of_queue", cw.Prim(cw.KindBool)),
	)
	candidGetMessagesResult = cw.Variant(cw.F("Ok", candidCertifiedMessages), cw.F("Err", cw.Prim(cw.KindText)))
	// A gateway reads is_end_of_queue as opt bool: under Candid subtyping that takes the bool
	// of CDK 0.3.1 and later (a bare value read as present), an opt bool, and no field at all
	// (CDK before 0.3.1), which reads as none.
	candidCertifiedMessagesAnyCDK = cw.Record(
		cw.F("messages", cw.Vec(candidOutputMessage)),
		cw.F("cert", cw.Blob()),
		cw.F("tree", cw.Blob()),
		cw.F("is_end_of_queue", cw.Opt(cw.Prim(cw.KindBool))),
	)
	candidGetMessagesResultAnyCDK = cw.Variant(cw.F("Ok", candidCertifiedMessagesAnyCDK), cw.F("Err", cw.Prim(cw.KindText)))
)

// EncodeWsGetMessagesArgs is ws_get_messages's argument.
func EncodeWsGetMessagesArgs(a CanisterWsGetMessagesArguments) ([]byte, error) {
	return encodeCandid("ws_get_messages arguments", []*cw.Type{candidGetMessagesArgs},
		cw.RecordValue(candidGetMessagesArgs, cw.NatValue(a.Nonce)))
}

// DecodeWsGetMessagesArgs reads ws_get_messages's argument.
func DecodeWsGetMessagesArgs(arg []byte) (CanisterWsGetMessagesArguments, error) {
	v, err := decodeCandid("ws_get_messages arguments", arg, candidGetMessagesArgs)
	if err != nil {
		return CanisterWsGetMessagesArguments{}, err
	}
	return CanisterWsGetMessagesArguments{Nonce: v.Field("nonce").Nat()}, nil
}

// EncodeGetMessagesResult is a canister's ws_get_messages answer, as ic-websocket-cdk 0.4.1
// declares it. Exactly one of Ok and Err must be set.
func EncodeGetMessagesResult(r CanisterWsGetMessagesResult) ([]byte, error) {
	var v cw.Value
	switch {
	case r.Ok != nil && r.Err == nil:
		msgs := make([]cw.Value, len(r.Ok.Messages))
		for i, m := range r.Ok.Messages {
			msgs[i] = cw.RecordValue(candidOutputMessage, m.ClientKey.candid(), cw.TextValue(m.Key), cw.BytesValue(m.Content))
		}
		v = cw.VariantValue(candidGetMessagesResult, "Ok", cw.RecordValue(candidCertifiedMessages,
			cw.VecValue(msgs), cw.BytesValue(r.Ok.Cert), cw.BytesValue(r.Ok.Tree), cw.BoolValue(r.Ok.IsEndOfQueue)))
	case r.Err != nil && r.Ok == nil:
		v = cw.VariantValue(candidGetMessagesResult, "Err", cw.TextValue(*r.Err))
	default:
		return nil, errors.New("encode ws_get_messages result: exactly one of Ok and Err must be set")
	}
	return encodeCandid("ws_get_messages result", []*cw.Type{candidGetMessagesResult}, v)
}

// DecodeGetMessagesResult decodes a ws_get_messages reply from any CDK version: see
// CanisterOutputCertifiedMessages. A canister's Err answer is an error wrapping
// ErrGetMessagesRefused. The messages' contents, the certificate and the tree are sub-slices of
// reply, not copies: the caller must not change reply while it uses the result.
func DecodeGetMessagesResult(reply []byte) (CanisterOutputCertifiedMessages, error) {
	v, err := decodeCandidShared("ws_get_messages reply", reply, candidGetMessagesResultAnyCDK)
	if err != nil {
		return CanisterOutputCertifiedMessages{}, fmt.Errorf("ws_get_messages: %w", err)
	}
	f, p := v.Case()
	if f.Name == "Err" {
		return CanisterOutputCertifiedMessages{}, fmt.Errorf("ws_get_messages: %w: %s", ErrGetMessagesRefused, p.Text())
	}
	elems := p.Field("messages").Elems()
	out := CanisterOutputCertifiedMessages{
		Messages:     make([]CanisterOutputMessage, len(elems)),
		Cert:         p.Field("cert").Bytes(),
		Tree:         p.Field("tree").Bytes(),
		IsEndOfQueue: true,
	}
	for i, m := range elems {
		out.Messages[i] = CanisterOutputMessage{
			ClientKey: clientKeyFromCandid(m.Field("client_key")),
			Key:       m.Field("key").Text(),
			Content:   m.Field("content").Bytes(),
		}
	}
	if end, ok := p.Field("is_end_of_queue").Opt(); ok {
		out.IsEndOfQueue = end.Bool()
	}
	return out, nil
}
