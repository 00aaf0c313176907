package protocol

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	cw "github.com/icws/icws/protocol/internal/candidwire"
)

func lebOf(x uint64) []byte {
	var b []byte
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}

func slebOf(x int64) []byte {
	var b []byte
	for {
		c := byte(x & 0x7f)
		x >>= 7
		if (x == 0 && c&0x40 == 0) || (x == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func fromHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// hostileArgs are Candid arguments that crash agent-go v0.8.0's decoder or make it allocate
// and work from declared lengths.
func hostileArgs() map[string][]byte {
	// A type table of n entries, entry i being opt (i+1), and a value nested as deep.
	nestedOpt := func(n int) []byte {
		b := append([]byte("DIDL"), lebOf(uint64(n))...)
		for i := range n - 1 {
			b = append(b, 0x6e)
			b = append(b, slebOf(int64(i+1))...)
		}
		b = append(b, 0x6e, 0x7b, 0x01, 0x00)
		return append(b, bytes.Repeat([]byte{1}, n)...)
	}
	return map[string][]byte{
		"principal length 2^50 (makeslice panic)": append(fromHex("4449444c 00 01 68 01"), lebOf(1<<50)...),
		"vec null of 50M in 16 bytes":             append(fromHex("4449444c 01 6d 7f 01 00"), lebOf(50_000_000)...),
		"nested opt type table 10000 deep":        nestedOpt(10_000),
		"nested opt type table 2000 deep":         nestedOpt(2000),
		"blob length 2^62":                        append(fromHex("4449444c 01 6d 7b 01 00"), lebOf(1<<62)...),
		"record of 2^31 fields":                   append(append(fromHex("4449444c 01 6c"), lebOf(1<<31)...), 0x00, 0x7f),
	}
}

// typedDecoders are every protocol Candid decoder, as fed from the network.
func typedDecoders() map[string]func([]byte) error {
	return map[string]func([]byte) error{
		"ws_open":         func(b []byte) error { _, err := DecodeWsOpenArgs(b); return err },
		"ws_message":      func(b []byte) error { _, err := DecodeWsMessageArgs(b); return err },
		"ws_close":        func(b []byte) error { _, err := DecodeWsCloseArgs(b); return err },
		"result":          func(b []byte) error { _, err := DecodeWsResult(b); return err },
		"ws_get_messages": func(b []byte) error { _, err := DecodeWsGetMessagesArgs(b); return err },
		"get_messages reply": func(b []byte) error {
			_, err := DecodeGetMessagesResult(b)
			return err
		},
		"service message": func(b []byte) error { _, err := DecodeServiceMessage(b); return err },
		"app message":     func(b []byte) error { _, err := DecodeAppMessage(b); return err },
	}
}

func TestHostileCandidArgsAreRefused(t *testing.T) {
	for argName, arg := range hostileArgs() {
		for decName, decode := range typedDecoders() {
			t.Run(argName+"/"+decName, func(t *testing.T) {
				if err := decode(arg); err == nil {
					t.Fatal("decoded")
				}
			})
		}
	}
}

// The vec null attack in an unknown field of ws_message's argument and as its second or third
// argument: what the decoder skips is read within the same limits.
func TestHostileSkippedValuesAreRefused(t *testing.T) {
	first := cw.RecordValue(candidWsMessageArgs, refMsg.candid())
	// An extra field with the largest id comes last in the record's value.
	withField := cw.Record(cw.F("msg", candidWebsocketMessage), cw.FieldID(1<<32-1, cw.Vec(nullT)))
	tests := []struct {
		name   string
		types  []*cw.Type
		values []cw.Value
	}{
		{"extra field", []*cw.Type{withField}, []cw.Value{cw.RecordValue(withField, refMsg.candid(), cw.VecValue(nil))}},
		{"second argument", []*cw.Type{candidWsMessageArgs, cw.Vec(nullT)}, []cw.Value{first, cw.VecValue(nil)}},
		{"third argument", []*cw.Type{candidWsMessageArgs, candidOptNull, cw.Vec(nullT)}, []cw.Value{first, cw.None(), cw.VecValue(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encodeWire(t, tt.types, tt.values...)
			if _, err := DecodeWsMessageArgs(b); err != nil {
				t.Fatalf("valid arguments: %v", err)
			}
			// The message ends with the last argument's vector length, 0: make it 50M.
			attack := append(b[:len(b)-1:len(b)-1], lebOf(50_000_000)...)
			if _, err := DecodeWsMessageArgs(attack); err == nil || !strings.Contains(err.Error(), "work budget") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestTruncatedCandidIsRefused(t *testing.T) {
	for _, c := range codecCases() {
		t.Run(c.name, func(t *testing.T) {
			b, err := c.encode()
			if err != nil {
				t.Fatal(err)
			}
			for n := range len(b) {
				if got, err := c.decode(b[:n]); err == nil {
					t.Fatalf("the first %d of %d bytes decoded to %s", n, len(b), show(got))
				}
			}
		})
	}
}

// The attacks through the edge's entry point, DecodeWsMessageArgs: each is refused in
// microseconds, with a few KB allocated whatever the length it declares.
func BenchmarkDecodeWsMessageArgsHostile(b *testing.B) {
	args := hostileArgs()
	for _, name := range []string{"principal length 2^50 (makeslice panic)", "vec null of 50M in 16 bytes", "nested opt type table 10000 deep", "nested opt type table 2000 deep"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeWsMessageArgs(args[name]); err == nil {
					b.Fatal("decoded")
				}
			}
		})
	}
	// The 50M vec null as a skipped second argument: the decoder must read it, and refuses it.
	first := cw.RecordValue(candidWsMessageArgs, refMsg.candid())
	valid, err := cw.Encode([]*cw.Type{candidWsMessageArgs, cw.Vec(nullT)}, []cw.Value{first, cw.VecValue(nil)})
	if err != nil {
		b.Fatal(err)
	}
	attack := append(valid[:len(valid)-1:len(valid)-1], lebOf(50_000_000)...)
	b.Run("vec null of 50M as second argument", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeWsMessageArgs(attack); err == nil {
				b.Fatal("decoded")
			}
		}
	})
}

// For scale: the SDK's own ws_message argument.
func BenchmarkDecodeWsMessageArgs(b *testing.B) {
	data := fromHex(refMessage)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeWsMessageArgs(data); err != nil {
			b.Fatal(err)
		}
	}
}
