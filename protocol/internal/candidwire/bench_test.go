package candidwire

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func benchmarkRefused(b *testing.B, data []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(data, []*Type{Record(F("a", Prim(KindNat64)))}); err == nil {
			b.Fatal("decoded")
		}
	}
}

// A 16-byte vec null of 50,000,000 elements, which costs agent-go seconds and hundreds of MB.
func BenchmarkRefuseVecNull50M(b *testing.B) {
	benchmarkRefused(b, wire("4449444c 01 6d 7f 01 00", uleb(50_000_000)))
}

// The same as DecodeAny reads it, and skipped as an extra argument.
func BenchmarkRefuseVecNull50MAny(b *testing.B) {
	data := wire("4449444c 01 6d 7f 01 00", uleb(50_000_000))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeAny(data); err == nil {
			b.Fatal("decoded")
		}
	}
}

func BenchmarkRefuseVecNull50MSkipped(b *testing.B) {
	data := wire("4449444c 01 6d 7f 01 00", uleb(50_000_000))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data, nil); err == nil {
			b.Fatal("decoded")
		}
	}
}

// The argument that panics agent-go (makeslice: len out of range).
func BenchmarkRefusePrincipal2p50(b *testing.B) {
	data := wire("4449444c 00 01 68 01", uleb(1<<50))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeAny(data); err == nil {
			b.Fatal("decoded")
		}
	}
}

// A type table of 10,000 nested opts (above the table's entry cap), and of 2,000 (as many as the
// cap allows).
func BenchmarkRefuseNestedOptTable10000(b *testing.B) {
	benchmarkRefused(b, nestedOptTable(10_000, bytes.Repeat([]byte{1}, 10_000)))
}

func BenchmarkRefuseNestedOptTable2000(b *testing.B) {
	benchmarkRefused(b, nestedOptTable(2000, bytes.Repeat([]byte{1}, 2000)))
}

// For scale: decoding a real ws_message argument.
func BenchmarkDecodeSDKMessage(b *testing.B) {
	data, _ := hex.DecodeString(sdkMessages[1])
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := DecodeAny(data); err != nil {
			b.Fatal(err)
		}
	}
}
