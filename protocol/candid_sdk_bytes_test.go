package protocol

import (
	"encoding/hex"
	"testing"

	"github.com/aviate-labs/agent-go/principal"
)

// Reference bytes produced by @dfinity/candid 2.4.1 with ic-websocket-js 0.5.0's own IDL
// (ic-websocket-js 0.5.0, lib/cjs/idl.js: wsOpenIdl, wsMessageIdl,
// encodeWebsocketServiceMessageContent).
const (
	refOpen      = "4449444c016c02f3eec6b40268bbd1eacd0e780100011d3a5dfc5dcdec516df9f00c1cd2f3c8ea44e5e803f73b1acbe2b6ba9b02cb04fb711f010000"
	refMessage   = "4449444c056d7b6c02fa80a2940568bbd1eacd0e786c0588ecfba70178b99adecb0100ebb49ce90301d6a9bbae0a78e8f5c3be0a7e6c01c1b4cc02026e7f020304030000000000000003010203010104cb04fb711f01000000002a36fe9c97170000"
	refApp       = "4449444c016c02ad99e7e70471d6a9bbae0a7801000568656c6c6f00002a36fe9c9717"
	refKeepAlive = "4449444c066c02fa80a2940568bbd1eacd0e786c01ebb49ce903006c01d888abb90a786b04cdc2dabb047fc9c68ea0057fd7aba29c0a7f999dafab0d7f6c01c49ff4e40f036b04fdbd95cc0101bfd397b409028ff2d1ef0a049eb7f0ad0b020105010500000000000000"
)

var (
	refGateway = principal.MustDecode("7cio4-7j2lx-6f3tp-mkfw7-t4amd-tjphs-hkits-6qa7x-hmnmx-yvwxk-nqe")
	refKey     = ClientKey{ClientPrincipal: principal.MustDecode("2vxsx-fae"), ClientNonce: 1234567890123}
	refMsg     = WebsocketMessage{ClientKey: refKey, SequenceNum: 3, Timestamp: 1700000000000000000, Content: []byte{1, 2, 3}}
)

func TestCandidEncodingMatchesSDK(t *testing.T) {
	tests := []struct {
		name   string
		encode func() ([]byte, error)
		want   string
	}{
		{"ws_open", func() ([]byte, error) {
			return EncodeWsOpenArgs(CanisterWsOpenArguments{ClientNonce: refKey.ClientNonce, GatewayPrincipal: refGateway})
		}, refOpen},
		{"ws_message", func() ([]byte, error) { return EncodeWsMessageArgs(refMsg) }, refMessage},
		{"AppMessage", func() ([]byte, error) {
			return EncodeAppMessage(AppMessage{Text: "hello", Timestamp: 1700000000000000000})
		}, refApp},
		{"KeepAliveMessage", func() ([]byte, error) {
			return EncodeServiceMessage(WebsocketServiceMessageContent{KeepAliveMessage: &ClientKeepAliveMessageContent{LastIncomingSequenceNum: 5}})
		}, refKeepAlive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.encode()
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != tt.want {
				t.Errorf("\n got %x\nwant %s", got, tt.want)
			}
		})
	}
}

func TestCandidDecodesSDKBytes(t *testing.T) {
	b := mustHex(t, refOpen)
	open, err := DecodeWsOpenArgs(b)
	if err != nil || open.ClientNonce != refKey.ClientNonce || !open.GatewayPrincipal.Equal(refGateway) {
		t.Fatalf("ws_open = %+v, %v", open, err)
	}
	msg, err := DecodeWsMessageArgs(mustHex(t, refMessage))
	if err != nil || !msg.ClientKey.Equal(refKey) || msg.SequenceNum != 3 || msg.Timestamp != refMsg.Timestamp || string(msg.Content) != "\x01\x02\x03" || msg.IsServiceMessage {
		t.Fatalf("ws_message = %+v, %v", msg, err)
	}
	app, err := DecodeAppMessage(mustHex(t, refApp))
	if err != nil || app.Text != "hello" || app.Timestamp != 1700000000000000000 {
		t.Fatalf("app = %+v, %v", app, err)
	}
	sm, err := DecodeServiceMessage(mustHex(t, refKeepAlive))
	if err != nil || sm.KeepAliveMessage == nil || sm.KeepAliveMessage.LastIncomingSequenceNum != 5 {
		t.Fatalf("keep-alive = %+v, %v", sm, err)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
