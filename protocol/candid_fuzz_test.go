package protocol

import (
	"runtime/metrics"
	"testing"
)

// candidSeeds are real encodings of every protocol type, the SDK's own bytes and the attack
// inputs: every Candid fuzz target starts from all of them.
func candidSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, c := range codecCases() {
		b, err := c.encode()
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	for _, h := range []string{refOpen, refMessage, refApp, refKeepAlive} {
		seeds = append(seeds, fromHex(h))
	}
	for _, b := range hostileArgs() {
		seeds = append(seeds, b)
	}
	return seeds
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

// fuzzCandid checks a typed decoder: it never panics, allocates in proportion to its input, and
// what it decodes encodes to bytes that decode to the same value.
func fuzzCandid[T any](f *testing.F, decode func([]byte) (T, error), encode func(T) ([]byte, error)) {
	for _, s := range candidSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			v   T
			err error
		)
		if n := allocated(func() { v, err = decode(data) }); n > 1<<20+256*uint64(len(data)) {
			t.Fatalf("decoding %d bytes allocated %d", len(data), n)
		}
		if err != nil {
			return
		}
		b, err := encode(v)
		if err != nil {
			t.Fatalf("decoded %s does not encode: %v", show(v), err)
		}
		again, err := decode(b)
		if err != nil {
			t.Fatalf("re-encoded %x does not decode: %v", b, err)
		}
		requireSame(t, again, v)
	})
}

func FuzzDecodeWsOpenArgs(f *testing.F) { fuzzCandid(f, DecodeWsOpenArgs, EncodeWsOpenArgs) }

func FuzzDecodeWsMessageArgs(f *testing.F) { fuzzCandid(f, DecodeWsMessageArgs, EncodeWsMessageArgs) }

func FuzzDecodeWsCloseArgs(f *testing.F) { fuzzCandid(f, DecodeWsCloseArgs, EncodeWsCloseArgs) }

func FuzzDecodeWsResult(f *testing.F) { fuzzCandid(f, DecodeWsResult, EncodeWsResult) }

func FuzzDecodeWsGetMessagesArgs(f *testing.F) {
	fuzzCandid(f, DecodeWsGetMessagesArgs, EncodeWsGetMessagesArgs)
}

func FuzzDecodeGetMessagesResult(f *testing.F) {
	fuzzCandid(f, DecodeGetMessagesResult, func(m CanisterOutputCertifiedMessages) ([]byte, error) {
		return EncodeGetMessagesResult(CanisterWsGetMessagesResult{Ok: &m})
	})
}

func FuzzDecodeServiceMessage(f *testing.F) {
	fuzzCandid(f, DecodeServiceMessage, EncodeServiceMessage)
}

func FuzzDecodeAppMessage(f *testing.F) { fuzzCandid(f, DecodeAppMessage, EncodeAppMessage) }
