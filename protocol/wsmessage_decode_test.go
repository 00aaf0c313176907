package protocol

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/aviate-labs/agent-go/principal"
)

func wsMessageSeeds(t testing.TB) [][]byte {
	t.Helper()
	var seeds [][]byte
	for _, m := range []WebsocketMessage{
		{ClientKey: ClientKey{ClientPrincipal: principal.Principal{Raw: bytes.Repeat([]byte{7}, 29)}, ClientNonce: 1 << 40}, SequenceNum: 3, Timestamp: 1_700_000_000_000_000_000, Content: []byte("hello")},
		{ClientKey: ClientKey{ClientPrincipal: principal.Principal{Raw: []byte{4}}}, SequenceNum: 1, IsServiceMessage: true, Content: []byte{}},
	} {
		b, err := EncodeWebsocketMessageCBOR(m)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b, StripSelfDescribe(b))
	}
	return seeds
}

func TestWebsocketMessageFastPathTakesWhatCanistersWrite(t *testing.T) {
	for _, b := range wsMessageSeeds(t) {
		fast, ok := decodeWebsocketMessageFast(b)
		if !ok {
			t.Fatalf("fast path refused %x", b)
		}
		general, err := decodeWebsocketMessageGeneral(b)
		if err != nil || !reflect.DeepEqual(fast, general) {
			t.Fatalf("%x: fast %+v, general %+v (%v)", b, fast, general, err)
		}
	}
}

func TestWebsocketMessageFastPathLeavesTheRestToTheGeneralDecoder(t *testing.T) {
	tests := []struct {
		name string
		cbor []byte
	}{
		{"indefinite map", []byte{0xbf, 0x69, 't', 'i', 'm', 'e', 's', 't', 'a', 'm', 'p', 0x01, 0xff}},
		{"duplicate field", []byte{0xa2, 0x69, 't', 'i', 'm', 'e', 's', 't', 'a', 'm', 'p', 0x01, 0x69, 't', 'i', 'm', 'e', 's', 't', 'a', 'm', 'p', 0x02}},
		{"unknown field", []byte{0xa1, 0x63, 'f', 'o', 'o', 0x01}},
		{"two-byte simple true", []byte{0xa1, 0x72, 'i', 's', '_', 's', 'e', 'r', 'v', 'i', 'c', 'e', '_', 'm', 'e', 's', 's', 'a', 'g', 'e', 0xf8, 0x15}},
		{"trailing byte", []byte{0xa0, 0x00}},
		{"not a map", []byte{0x80}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := decodeWebsocketMessageFast(tt.cbor); ok {
				t.Fatalf("fast path accepted %x", tt.cbor)
			}
		})
	}
}

// FuzzWebsocketMessageFastPath checks that the fast path accepts only what the general decoder
// accepts, and decodes it to the same message.
func FuzzWebsocketMessageFastPath(f *testing.F) {
	for _, b := range wsMessageSeeds(f) {
		f.Add(b)
	}
	zero, err := EncodeWebsocketMessageCBOR(WebsocketMessage{}) // nil byte strings are written as null
	if err != nil {
		f.Fatal(err)
	}
	f.Add(zero)
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := decodeWebsocketMessageFast(b)
		if !ok {
			return
		}
		general, err := decodeWebsocketMessageGeneral(b)
		if err != nil {
			t.Fatalf("fast path accepted %x, the general decoder refused it: %v", b, err)
		}
		if !reflect.DeepEqual(fast, general) {
			t.Fatalf("%x: fast %+v, general %+v", b, fast, general)
		}
	})
}

// BenchmarkDecodeWebsocketMessage decodes a canister message as the poller does for every
// message it publishes.
func BenchmarkDecodeWebsocketMessage(b *testing.B) {
	m := WebsocketMessage{ClientKey: ClientKey{ClientPrincipal: principal.Principal{Raw: bytes.Repeat([]byte{7}, 29)}, ClientNonce: 1 << 40},
		SequenceNum: 12345, Timestamp: 1_700_000_000_000_000_000, Content: bytes.Repeat([]byte{1}, 1024)}
	enc, err := EncodeWebsocketMessageCBOR(m)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeWebsocketMessageCBOR(enc); err != nil {
			b.Fatal(err)
		}
	}
}
