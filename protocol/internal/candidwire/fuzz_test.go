package candidwire

import (
	"bytes"
	"encoding/hex"
	"runtime/metrics"
	"testing"
)

// Messages produced by @dfinity/candid 2.4.1 with ic-websocket-js 0.5.0's IDL (ws_open,
// ws_message and a keep-alive service message).
var sdkMessages = []string{
	"4449444c016c02f3eec6b40268bbd1eacd0e780100011d3a5dfc5dcdec516df9f00c1cd2f3c8ea44e5e803f73b1acbe2b6ba9b02cb04fb711f010000",
	"4449444c056d7b6c02fa80a2940568bbd1eacd0e786c0588ecfba70178b99adecb0100ebb49ce90301d6a9bbae0a78e8f5c3be0a7e6c01c1b4cc02026e7f020304030000000000000003010203010104cb04fb711f01000000002a36fe9c97170000",
	"4449444c066c02fa80a2940568bbd1eacd0e786c01ebb49ce903006c01d888abb90a786b04cdc2dabb047fc9c68ea0057fd7aba29c0a7f999dafab0d7f6c01c49ff4e40f036b04fdbd95cc0101bfd397b409028ff2d1ef0a049eb7f0ad0b020105010500000000000000",
}

func addSeeds(f *testing.F) {
	for _, h := range sdkMessages {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	for _, in := range hostileInputs() {
		if len(in.data) < 64<<10 {
			f.Add(in.data)
		}
	}
	f.Add(wire("4449444c 02 6e 01 6c 02 00 7b 01 00 01 00", "01 01 01 02 01 03 00"))
	f.Add(wire("4449444c 03 6d 7b 6c 02 00 71 01 00 6b 02 00 7f 01 01 02 02 7e", "01 05 68656c6c6f 03 010203 01"))
	f.Add(wire("4449444c 02 6a 01 71 01 7e 01 01 69 01 01 66 00 02 00 01", "01 01 03 010203 01 66", "01 00"))
}

// allocated reports the bytes fn allocates, to within the heap's accounting granularity (a span),
// without stopping the world as runtime.ReadMemStats would on every input.
func allocated(fn func()) uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	before := sample[0].Value.Uint64()
	fn()
	metrics.Read(sample)
	return sample[0].Value.Uint64() - before
}

// allocBound is what decoding n bytes may allocate: values, types and copies all grow linearly
// with the input.
func allocBound(n int) uint64 { return 1<<20 + 256*uint64(n) }

func FuzzDecodeAny(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			types  []*Type
			values []Value
			err    error
		)
		if n := allocated(func() { types, values, err = DecodeAny(data) }); n > allocBound(len(data)) {
			t.Fatalf("decoding %d bytes allocated %d", len(data), n)
		}
		if err != nil {
			return
		}
		again, err := Encode(types, values)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		types2, values2, err := DecodeAny(again)
		if err != nil {
			t.Fatalf("re-encoded message %x does not decode: %v", again, err)
		}
		if len(values2) != len(values) {
			t.Fatalf("%d arguments, then %d", len(values), len(values2))
		}
		for i := range values {
			if types[i].String() != types2[i].String() || !equalValues(values[i], values2[i]) {
				t.Fatalf("argument %d: %s %+v, then %s %+v", i, types[i], values[i], types2[i], values2[i])
			}
		}
		if third, err := Encode(types2, values2); err != nil || !bytes.Equal(third, again) {
			t.Fatalf("encoding is not stable: %x then %x (%v)", again, third, err)
		}
	})
}

// fuzzExpected is a set of expected types that exercises every coercion.
func fuzzExpected() []*Type {
	nat64, text := Prim(KindNat64), Prim(KindText)
	key := Record(F("principal", Prim(KindPrincipal)), F("nonce", nat64))
	return []*Type{
		Record(F("key", key), F("n", Opt(Prim(KindBool))), F("blob", Blob()), F("items", Vec(Record(F("t", text), F("i", Prim(KindInt)))))),
		Opt(Variant(F("a", Prim(KindNull)), F("b", key), F("c", Opt(Opt(nat64))))),
		Vec(Opt(text)),
		Prim(KindReserved),
		Opt(Prim(KindFloat64)),
	}
}

func FuzzDecode(f *testing.F) {
	addSeeds(f)
	nat64, text := Prim(KindNat64), Prim(KindText)
	wireKey := Record(F("principal", Prim(KindPrincipal)), F("nonce", nat64), F("extra", text))
	ab := Variant(F("a", Prim(KindNull)), F("b", wireKey), F("d", Prim(KindInt8)))
	b, err := Encode([]*Type{
		Record(F("key", wireKey), F("blob", Blob()), F("items", Vec(Record(F("t", text), F("i", Prim(KindNat)), F("x", Prim(KindNull)))))),
		ab, Vec(text), Prim(KindNat16),
	}, []Value{
		RecordValue(Record(F("key", wireKey), F("blob", Blob()), F("items", Vec(Record(F("t", text), F("i", Prim(KindNat)), F("x", Prim(KindNull)))))),
			RecordValue(wireKey, BytesValue([]byte{1, 2}), NatValue(9), TextValue("e")), BytesValue([]byte("blob")),
			VecValue([]Value{RecordValue(Record(F("t", text), F("i", Prim(KindNat)), F("x", Prim(KindNull))), TextValue("t"), NatValue(3), NullValue())})),
		VariantValue(ab, "b", RecordValue(wireKey, BytesValue(nil), NatValue(1), TextValue(""))),
		VecValue([]Value{TextValue("x")}), NatValue(7),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	expected := fuzzExpected()
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			values []Value
			err    error
		)
		if n := allocated(func() { values, err = Decode(data, expected) }); n > allocBound(len(data)) {
			t.Fatalf("decoding %d bytes allocated %d", len(data), n)
		}
		if err != nil {
			return
		}
		again, err := Encode(expected, values)
		if err != nil {
			t.Fatalf("decoded values do not encode: %v", err)
		}
		values2, err := Decode(again, expected)
		if err != nil {
			t.Fatalf("re-encoded message %x does not decode: %v", again, err)
		}
		for i := range values {
			if !equalValues(values[i], values2[i]) {
				t.Fatalf("argument %d: %+v, then %+v", i, values[i], values2[i])
			}
		}
	})
}
