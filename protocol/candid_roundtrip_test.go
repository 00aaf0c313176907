package protocol

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
)

// sameValue compares two decoded values, treating nil and empty slices as equal (agent-go and
// our decoder differ there, Candid does not).
func sameValue(a, b reflect.Value) bool {
	if a.Kind() != b.Kind() {
		return false
	}
	switch a.Kind() {
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !sameValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return sameValue(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !sameValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	}
	return a.Equal(b)
}

func requireSame(t *testing.T, got, want any) {
	t.Helper()
	if !sameValue(reflect.ValueOf(got), reflect.ValueOf(want)) {
		t.Fatalf("got  %s\nwant %s", show(got), show(want))
	}
}

// show prints pointers' targets, which %+v does not below the top level.
func show(v any) string {
	return showValue(reflect.ValueOf(v))
}

func showValue(v reflect.Value) string {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return "nil"
		}
		return "&" + showValue(v.Elem())
	case reflect.Struct:
		s := v.Type().Name() + "{"
		for i := range v.NumField() {
			s += fmt.Sprintf("%s:%s ", v.Type().Field(i).Name, showValue(v.Field(i)))
		}
		return s + "}"
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return fmt.Sprintf("%x", v.Bytes())
		}
		s := "["
		for i := range v.Len() {
			s += showValue(v.Index(i)) + " "
		}
		return s + "]"
	}
	return fmt.Sprint(v.Interface())
}

func testKey(n byte) ClientKey {
	return ClientKey{ClientPrincipal: principal.Principal{Raw: []byte{n, 2, 3, 4, 5, 6, 7, 8, 9, 1}}, ClientNonce: uint64(n) << 40}
}

func ptr[T any](v T) *T { return &v }

// codecCase is one protocol value with its codec.
type codecCase struct {
	name   string
	value  any
	encode func() ([]byte, error)
	decode func([]byte) (any, error)
	// oracle, when set, is the argument list agent-go encodes to the same Candid value, and
	// into returns pointers for agent-go to decode our encoding into.
	oracle []any
	into   func() []any
}

func codecCases() []codecCase {
	key := testKey(7)
	gw := principal.Principal{Raw: []byte{9, 9, 9}}
	msg := WebsocketMessage{ClientKey: key, SequenceNum: 12, Timestamp: 1_700_000_000_000_000_000, IsServiceMessage: true, Content: []byte("content")}
	open := CanisterWsOpenArguments{ClientNonce: 77, GatewayPrincipal: gw}
	closeArgs := CanisterWsCloseArguments{ClientKey: key}
	getArgs := CanisterWsGetMessagesArguments{Nonce: 1 << 60}
	certified := CanisterOutputCertifiedMessages{
		Messages: []CanisterOutputMessage{
			{ClientKey: key, Key: MessageKey(gw, 1), Content: []byte{1}},
			{ClientKey: testKey(8), Key: MessageKey(gw, 2), Content: []byte{}},
		},
		Cert: []byte("cert"), Tree: []byte("tree"), IsEndOfQueue: false,
	}
	empty := CanisterOutputCertifiedMessages{Messages: []CanisterOutputMessage{}, Cert: []byte{}, Tree: []byte{}, IsEndOfQueue: true}
	app := AppMessage{Text: "héllo, wörld", Timestamp: 42}

	cases := []codecCase{
		{name: "ws_open", value: open,
			encode: func() ([]byte, error) { return EncodeWsOpenArgs(open) },
			decode: func(b []byte) (any, error) { return DecodeWsOpenArgs(b) },
			oracle: []any{open}, into: func() []any { return []any{new(CanisterWsOpenArguments)} }},
		{name: "ws_message", value: msg,
			encode: func() ([]byte, error) { return EncodeWsMessageArgs(msg) },
			decode: func(b []byte) (any, error) { return DecodeWsMessageArgs(b) },
			oracle: []any{CanisterWsMessageArguments{Msg: msg}}},
		{name: "ws_close", value: closeArgs,
			encode: func() ([]byte, error) { return EncodeWsCloseArgs(closeArgs) },
			decode: func(b []byte) (any, error) { return DecodeWsCloseArgs(b) },
			oracle: []any{closeArgs}, into: func() []any { return []any{new(CanisterWsCloseArguments)} }},
		{name: "ws_get_messages", value: getArgs,
			encode: func() ([]byte, error) { return EncodeWsGetMessagesArgs(getArgs) },
			decode: func(b []byte) (any, error) { return DecodeWsGetMessagesArgs(b) },
			oracle: []any{getArgs}, into: func() []any { return []any{new(CanisterWsGetMessagesArguments)} }},
		{name: "app message", value: app,
			encode: func() ([]byte, error) { return EncodeAppMessage(app) },
			decode: func(b []byte) (any, error) { return DecodeAppMessage(b) },
			oracle: []any{app}, into: func() []any { return []any{new(AppMessage)} }},
	}
	for _, r := range []CanisterWsResult{ResultOk(), ResultErr("Client with key x already has an open connection")} {
		cases = append(cases, codecCase{name: "result " + show(r), value: r,
			encode: func() ([]byte, error) { return EncodeWsResult(r) },
			decode: func(b []byte) (any, error) { return DecodeWsResult(b) },
			oracle: []any{r}, into: func() []any { return []any{new(CanisterWsResult)} }})
	}
	for _, m := range []CanisterOutputCertifiedMessages{certified, empty} {
		cases = append(cases, codecCase{name: fmt.Sprintf("ws_get_messages Ok with %d messages", len(m.Messages)), value: m,
			encode: func() ([]byte, error) { return EncodeGetMessagesResult(CanisterWsGetMessagesResult{Ok: &m}) },
			decode: func(b []byte) (any, error) { return DecodeGetMessagesResult(b) },
			oracle: []any{CanisterWsGetMessagesResult{Ok: &m}},
			into:   func() []any { return []any{new(CanisterWsGetMessagesResult)} }})
	}
	reasons := []CloseMessageReason{
		{WrongSequenceNumber: new(idl.Null)}, {InvalidServiceMessage: new(idl.Null)},
		{KeepAliveTimeout: new(idl.Null)}, {ClosedByApplication: new(idl.Null)},
	}
	services := []WebsocketServiceMessageContent{
		{OpenMessage: &CanisterOpenMessageContent{ClientKey: key}},
		{AckMessage: &CanisterAckMessageContent{LastIncomingSequenceNum: 5}},
		{KeepAliveMessage: &ClientKeepAliveMessageContent{LastIncomingSequenceNum: 6}},
	}
	for _, r := range reasons {
		services = append(services, WebsocketServiceMessageContent{CloseMessage: &CanisterCloseMessageContent{Reason: r}})
	}
	for _, s := range services {
		cases = append(cases, codecCase{name: "service " + show(s), value: s,
			encode: func() ([]byte, error) { return EncodeServiceMessage(s) },
			decode: func(b []byte) (any, error) { return DecodeServiceMessage(b) },
			oracle: []any{s}, into: func() []any { return []any{new(WebsocketServiceMessageContent)} }})
	}
	return cases
}

func TestCandidCodecsRoundTrip(t *testing.T) {
	for _, c := range codecCases() {
		t.Run(c.name, func(t *testing.T) {
			b, err := c.encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.decode(b)
			if err != nil {
				t.Fatal(err)
			}
			requireSame(t, got, c.value)
		})
	}
}

// agent-go's Candid encoder and decoder are an independent implementation: what it encodes we
// decode to the same value, and what we encode it decodes to the same value.
func TestCandidCodecsAgreeWithAgentGo(t *testing.T) {
	for _, c := range codecCases() {
		t.Run(c.name, func(t *testing.T) {
			theirs, err := candid.Marshal(c.oracle)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.decode(theirs)
			if err != nil {
				t.Fatalf("decode agent-go's %x: %v", theirs, err)
			}
			requireSame(t, got, c.value)

			ours, err := c.encode()
			if err != nil {
				t.Fatal(err)
			}
			if c.into == nil {
				// ws_message: two arguments, the second opt null; agent-go's generic decoder
				// reads the first.
				ts, vs, err := candid.Decode(ours)
				if err != nil || len(ts) != 2 {
					t.Fatalf("agent-go decodes %d arguments, %v", len(ts), err)
				}
				var a CanisterWsMessageArguments
				if err := idl.UnmarshalGo(ts[0], vs[0], &a); err != nil {
					t.Fatal(err)
				}
				requireSame(t, a.Msg, c.value)
				return
			}
			into := c.into()
			if err := candid.Unmarshal(ours, into); err != nil {
				t.Fatalf("agent-go decodes our %x: %v", ours, err)
			}
			back := reflect.ValueOf(into[0]).Elem().Interface()
			if r, ok := back.(CanisterWsGetMessagesResult); ok {
				back = *r.Ok
			}
			requireSame(t, back, c.value)
		})
	}
}

func TestCandidEncodersRefuseInvalidValues(t *testing.T) {
	tests := []struct {
		name   string
		encode func() ([]byte, error)
	}{
		{"result with neither case", func() ([]byte, error) { return EncodeWsResult(CanisterWsResult{}) }},
		{"result with both cases", func() ([]byte, error) {
			return EncodeWsResult(CanisterWsResult{Ok: new(idl.Null), Err: ptr("x")})
		}},
		{"service message with no case", func() ([]byte, error) { return EncodeServiceMessage(WebsocketServiceMessageContent{}) }},
		{"service message with two cases", func() ([]byte, error) {
			return EncodeServiceMessage(WebsocketServiceMessageContent{AckMessage: &CanisterAckMessageContent{}, KeepAliveMessage: &ClientKeepAliveMessageContent{}})
		}},
		{"close without a reason", func() ([]byte, error) {
			return EncodeServiceMessage(WebsocketServiceMessageContent{CloseMessage: &CanisterCloseMessageContent{}})
		}},
		{"get_messages result with neither case", func() ([]byte, error) {
			return EncodeGetMessagesResult(CanisterWsGetMessagesResult{})
		}},
		{"principal of 30 bytes", func() ([]byte, error) {
			return EncodeWsOpenArgs(CanisterWsOpenArguments{GatewayPrincipal: principal.Principal{Raw: make([]byte, 30)}})
		}},
		{"app text not UTF-8", func() ([]byte, error) { return EncodeAppMessage(AppMessage{Text: "\xc3\x28"}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := tt.encode(); err == nil {
				t.Fatalf("encoded %x", b)
			}
		})
	}
}
