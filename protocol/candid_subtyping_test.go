package protocol

import (
	"strings"
	"testing"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/idl"
	cw "github.com/icws/icws/protocol/internal/candidwire"
)

// A newer ic-websocket-js or CDK that adds record fields, variant cases and opt fields: what it
// sends must still decode, as the CDK's Rust candid decodes it.
var (
	natT, textT, boolT, nullT = cw.Prim(cw.KindNat64), cw.Prim(cw.KindText), cw.Prim(cw.KindBool), cw.Prim(cw.KindNull)
	principalT                = cw.Prim(cw.KindPrincipal)

	newerClientKey = cw.Record(
		cw.F("client_principal", principalT), cw.F("client_nonce", natT),
		cw.F("client_label", textT), cw.F("client_flags", cw.Opt(natT)),
	)
	newerMessage = cw.Record(
		cw.F("client_key", newerClientKey), cw.F("sequence_num", natT), cw.F("timestamp", natT),
		cw.F("is_service_message", boolT), cw.F("content", cw.Blob()),
		cw.F("priority", cw.Prim(cw.KindNat8)), cw.F("trace_id", cw.Opt(textT)), cw.F("marker", nullT),
		cw.F("anything", cw.Prim(cw.KindReserved)),
	)
	newerMessageArgs = cw.Record(cw.F("msg", newerMessage), cw.F("extensions", cw.Vec(textT)))
	newerAppMessage  = cw.Record(cw.F("text", textT), cw.F("timestamp", natT), cw.F("lang", cw.Opt(textT)))
)

func newerKey(k ClientKey, flags cw.Value) cw.Value {
	return cw.RecordValue(newerClientKey, cw.BytesValue(k.ClientPrincipal.Raw), cw.NatValue(k.ClientNonce), cw.TextValue("label"), flags)
}

func newerMsg(m WebsocketMessage, traceID cw.Value) cw.Value {
	return cw.RecordValue(newerMessage, newerKey(m.ClientKey, cw.Some(cw.NatValue(3))), cw.NatValue(m.SequenceNum), cw.NatValue(m.Timestamp),
		cw.BoolValue(m.IsServiceMessage), cw.BytesValue(m.Content), cw.NatValue(9), traceID, cw.NullValue(), cw.NullValue())
}

func encodeWire(t *testing.T, types []*cw.Type, values ...cw.Value) []byte {
	t.Helper()
	b, err := cw.Encode(types, values)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWsMessageArgsFromNewerSDK(t *testing.T) {
	msg := WebsocketMessage{ClientKey: testKey(3), SequenceNum: 9, Timestamp: 99, Content: []byte("payload")}
	app := cw.RecordValue(newerAppMessage, cw.TextValue("hi"), cw.NatValue(1), cw.None())
	third := cw.Record(cw.F("unexpected", textT))
	tests := []struct {
		name   string
		types  []*cw.Type
		values []cw.Value
	}{
		{"extra fields, opt field none", []*cw.Type{newerMessageArgs},
			[]cw.Value{cw.RecordValue(newerMessageArgs, newerMsg(msg, cw.None()), cw.VecValue([]cw.Value{cw.TextValue("x")}))}},
		{"extra fields, opt field set", []*cw.Type{newerMessageArgs},
			[]cw.Value{cw.RecordValue(newerMessageArgs, newerMsg(msg, cw.Some(cw.TextValue("t"))), cw.VecValue(nil))}},
		{"second argument none, typed opt null", []*cw.Type{newerMessageArgs, cw.Opt(nullT)},
			[]cw.Value{cw.RecordValue(newerMessageArgs, newerMsg(msg, cw.None()), cw.VecValue(nil)), cw.None()}},
		{"second argument an app message", []*cw.Type{newerMessageArgs, cw.Opt(newerAppMessage)},
			[]cw.Value{cw.RecordValue(newerMessageArgs, newerMsg(msg, cw.None()), cw.VecValue(nil)), cw.Some(app)}},
		{"second argument null", []*cw.Type{newerMessageArgs, nullT},
			[]cw.Value{cw.RecordValue(newerMessageArgs, newerMsg(msg, cw.None()), cw.VecValue(nil)), cw.NullValue()}},
		// Rust candid reads a bare value for the CDK's opt AppMessage: it does not fit, so none.
		{"second argument a bare nat64", []*cw.Type{newerMessageArgs, natT},
			[]cw.Value{cw.RecordValue(newerMessageArgs, newerMsg(msg, cw.None()), cw.VecValue(nil)), cw.NatValue(5)}},
		{"third unexpected argument", []*cw.Type{newerMessageArgs, cw.Opt(nullT), third},
			[]cw.Value{cw.RecordValue(newerMessageArgs, newerMsg(msg, cw.None()), cw.VecValue(nil)), cw.None(), cw.RecordValue(third, cw.TextValue("?"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeWsMessageArgs(encodeWire(t, tt.types, tt.values...))
			if err != nil {
				t.Fatal(err)
			}
			requireSame(t, got, msg)
		})
	}
}

func TestWsMessageArgsRefused(t *testing.T) {
	msg := WebsocketMessage{ClientKey: testKey(3), SequenceNum: 9, Timestamp: 99, Content: []byte("payload")}
	good := encodeWire(t, []*cw.Type{newerMessageArgs}, cw.RecordValue(newerMessageArgs, newerMsg(msg, cw.None()), cw.VecValue(nil)))
	noSeq := cw.Record(cw.F("msg", cw.Record(cw.F("client_key", newerClientKey), cw.F("timestamp", natT),
		cw.F("is_service_message", boolT), cw.F("content", cw.Blob()))))
	seqAsNat := cw.Record(cw.F("msg", cw.Record(cw.F("client_key", newerClientKey), cw.F("sequence_num", cw.Prim(cw.KindNat)),
		cw.F("timestamp", natT), cw.F("is_service_message", boolT), cw.F("content", cw.Blob()))))
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"no arguments", encodeWire(t, nil), "missing"},
		{"sequence_num missing", encodeWire(t, []*cw.Type{noSeq}, cw.RecordValue(noSeq, cw.RecordValue(noSeq.Fields()[0].Type,
			newerKey(msg.ClientKey, cw.None()), cw.NatValue(1), cw.BoolValue(false), cw.BytesValue(nil)))), "sequence_num is missing"},
		{"sequence_num as nat", encodeWire(t, []*cw.Type{seqAsNat}, cw.RecordValue(seqAsNat, cw.RecordValue(seqAsNat.Fields()[0].Type,
			newerKey(msg.ClientKey, cw.None()), cw.NatValue(1), cw.NatValue(1), cw.BoolValue(false), cw.BytesValue(nil)))), "does not fit"},
		{"second argument malformed", append(good[:len(good):len(good)], 0x99), "after the last argument"},
		{"text", encodeWire(t, []*cw.Type{textT}, cw.TextValue("x")), "does not fit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeWsMessageArgs(tt.data); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestOtherArgumentsFromNewerSDK(t *testing.T) {
	key := testKey(4)
	openT := cw.Record(cw.F("client_nonce", natT), cw.F("gateway_principal", principalT), cw.F("resume_token", cw.Opt(cw.Blob())))
	closeT := cw.Record(cw.F("client_key", newerClientKey), cw.F("reason", cw.Opt(textT)))
	getT := cw.Record(cw.F("nonce", natT), cw.F("max", cw.Opt(natT)))
	extra := cw.Prim(cw.KindInt)

	t.Run("ws_open", func(t *testing.T) {
		got, err := DecodeWsOpenArgs(encodeWire(t, []*cw.Type{openT, extra},
			cw.RecordValue(openT, cw.NatValue(5), cw.BytesValue([]byte{1, 2}), cw.Some(cw.BytesValue([]byte{3}))), cw.IntValue(-1)))
		if err != nil || got.ClientNonce != 5 || string(got.GatewayPrincipal.Raw) != "\x01\x02" {
			t.Fatalf("%+v, %v", got, err)
		}
	})
	t.Run("ws_close", func(t *testing.T) {
		got, err := DecodeWsCloseArgs(encodeWire(t, []*cw.Type{closeT}, cw.RecordValue(closeT, newerKey(key, cw.None()), cw.None())))
		if err != nil || !got.ClientKey.Equal(key) {
			t.Fatalf("%+v, %v", got, err)
		}
	})
	t.Run("ws_get_messages", func(t *testing.T) {
		got, err := DecodeWsGetMessagesArgs(encodeWire(t, []*cw.Type{getT}, cw.RecordValue(getT, cw.NatValue(17), cw.Some(cw.NatValue(3)))))
		if err != nil || got.Nonce != 17 {
			t.Fatalf("%+v, %v", got, err)
		}
	})
	t.Run("app message", func(t *testing.T) {
		got, err := DecodeAppMessage(encodeWire(t, []*cw.Type{newerAppMessage}, cw.RecordValue(newerAppMessage, cw.TextValue("hi"), cw.NatValue(2), cw.Some(cw.TextValue("en")))))
		if err != nil || got != (AppMessage{Text: "hi", Timestamp: 2}) {
			t.Fatalf("%+v, %v", got, err)
		}
	})
}

func TestGetMessagesReplyFromAnyCDK(t *testing.T) {
	key := testKey(5)
	newerOutput := cw.Record(cw.F("client_key", newerClientKey), cw.F("key", textT), cw.F("content", cw.Blob()), cw.F("timestamp", natT))
	msgs := cw.VecValue([]cw.Value{cw.RecordValue(newerOutput, newerKey(key, cw.None()), cw.TextValue("gw_00000000000000000001"), cw.BytesValue([]byte{7}), cw.NatValue(1))})
	wantMsgs := []CanisterOutputMessage{{ClientKey: key, Key: "gw_00000000000000000001", Content: []byte{7}}}
	// reply builds variant { Ok : record { messages; cert; tree; <end field>; next : nat64 }; Err; Pending }.
	reply := func(t *testing.T, endField *cw.Field, end cw.Value) []byte {
		fields := []cw.Field{cw.F("messages", cw.Vec(newerOutput)), cw.F("cert", cw.Blob()), cw.F("tree", cw.Blob()), cw.F("next", natT)}
		values := []cw.Value{msgs, cw.BytesValue([]byte("c")), cw.BytesValue([]byte("t")), cw.NatValue(2)}
		if endField != nil {
			fields = append(fields, *endField)
			values = append(values, end)
		}
		ok := cw.Record(fields...)
		res := cw.Variant(cw.F("Ok", ok), cw.F("Err", textT), cw.F("Pending", nullT))
		return encodeWire(t, []*cw.Type{res}, cw.VariantValue(res, "Ok", cw.RecordValue(ok, values...)))
	}
	field := func(t *cw.Type) *cw.Field { f := cw.F("is_end_of_queue", t); return &f }
	tests := []struct {
		name    string
		data    []byte
		wantEnd bool
	}{
		{"bool false (CDK 0.3.1 and later)", reply(t, field(boolT), cw.BoolValue(false)), false},
		{"bool true", reply(t, field(boolT), cw.BoolValue(true)), true},
		{"opt bool false", reply(t, field(cw.Opt(boolT)), cw.Some(cw.BoolValue(false))), false},
		{"opt bool none", reply(t, field(cw.Opt(boolT)), cw.None()), true},
		{"null", reply(t, field(nullT), cw.NullValue()), true},
		{"absent (CDK before 0.3.1)", reply(t, nil, cw.Value{}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeGetMessagesResult(tt.data)
			if err != nil {
				t.Fatal(err)
			}
			requireSame(t, got, CanisterOutputCertifiedMessages{Messages: wantMsgs, Cert: []byte("c"), Tree: []byte("t"), IsEndOfQueue: tt.wantEnd})
		})
	}
	t.Run("Err", func(t *testing.T) {
		b, err := candid.Marshal([]any{CanisterWsGetMessagesResult{Err: ptr("boom")}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeGetMessagesResult(b); err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), ErrGetMessagesRefused.Error()) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unknown case", func(t *testing.T) {
		res := cw.Variant(cw.F("Ok", nullT), cw.F("Pending", nullT))
		if _, err := DecodeGetMessagesResult(encodeWire(t, []*cw.Type{res}, cw.VariantValue(res, "Pending", cw.NullValue()))); err == nil {
			t.Fatal("decoded")
		}
	})
	t.Run("garbage", func(t *testing.T) {
		if _, err := DecodeGetMessagesResult([]byte("garbage")); err == nil {
			t.Fatal("decoded")
		}
	})
}

func TestServiceMessagesFromNewerCDK(t *testing.T) {
	key := testKey(6)
	ackT := cw.Record(cw.F("last_incoming_sequence_num", natT), cw.F("sent_at", cw.Opt(natT)))
	reasonT := cw.Variant(cw.F("WrongSequenceNumber", nullT), cw.F("InvalidServiceMessage", nullT), cw.F("KeepAliveTimeout", nullT),
		cw.F("ClosedByApplication", nullT), cw.F("GatewayGone", nullT))
	closeT := cw.Record(cw.F("reason", reasonT), cw.F("detail", textT))
	openT := cw.Record(cw.F("client_key", newerClientKey))
	svcT := cw.Variant(cw.F("OpenMessage", openT), cw.F("AckMessage", ackT), cw.F("KeepAliveMessage", ackT), cw.F("CloseMessage", closeT),
		cw.F("PingMessage", cw.Record()))
	tests := []struct {
		name  string
		value cw.Value
		want  WebsocketServiceMessageContent
	}{
		{"open", cw.VariantValue(svcT, "OpenMessage", cw.RecordValue(openT, newerKey(key, cw.Some(cw.NatValue(1))))),
			WebsocketServiceMessageContent{OpenMessage: &CanisterOpenMessageContent{ClientKey: key}}},
		{"ack", cw.VariantValue(svcT, "AckMessage", cw.RecordValue(ackT, cw.NatValue(8), cw.Some(cw.NatValue(1)))),
			WebsocketServiceMessageContent{AckMessage: &CanisterAckMessageContent{LastIncomingSequenceNum: 8}}},
		{"keep-alive", cw.VariantValue(svcT, "KeepAliveMessage", cw.RecordValue(ackT, cw.NatValue(9), cw.None())),
			WebsocketServiceMessageContent{KeepAliveMessage: &ClientKeepAliveMessageContent{LastIncomingSequenceNum: 9}}},
		{"close", cw.VariantValue(svcT, "CloseMessage", cw.RecordValue(closeT, cw.VariantValue(reasonT, "KeepAliveTimeout", cw.NullValue()), cw.TextValue("d"))),
			WebsocketServiceMessageContent{CloseMessage: &CanisterCloseMessageContent{Reason: CloseMessageReason{KeepAliveTimeout: new(idl.Null)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeServiceMessage(encodeWire(t, []*cw.Type{svcT}, tt.value))
			if err != nil {
				t.Fatal(err)
			}
			requireSame(t, got, tt.want)
		})
	}
	for name, v := range map[string]cw.Value{
		"unknown case":   cw.VariantValue(svcT, "PingMessage", cw.RecordValue(cw.Record())),
		"unknown reason": cw.VariantValue(svcT, "CloseMessage", cw.RecordValue(closeT, cw.VariantValue(reasonT, "GatewayGone", cw.NullValue()), cw.TextValue(""))),
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := DecodeServiceMessage(encodeWire(t, []*cw.Type{svcT}, v)); err == nil {
				t.Fatalf("decoded %s", show(got))
			}
		})
	}
}
