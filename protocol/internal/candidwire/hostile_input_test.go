package candidwire

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// wire concatenates hex strings and raw byte slices into a message.
func wire(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			h, err := hex.DecodeString(strings.ReplaceAll(p, " ", ""))
			if err != nil {
				panic(err)
			}
			b = append(b, h...)
		case []byte:
			b = append(b, p...)
		default:
			panic("wire: unsupported part")
		}
	}
	return b
}

func uleb(x uint64) []byte { return appendULEB(nil, x) }

func sleb(x int64) []byte { return appendSLEB(nil, x) }

// nestedOptTable is a type table of n entries, entry i being opt (i+1) and the last opt nat8,
// with one argument of type 0 and the value given.
func nestedOptTable(n int, value []byte) []byte {
	b := append([]byte(magic), uleb(uint64(n))...)
	for i := range n - 1 {
		b = append(b, 0x6e)
		b = append(b, sleb(int64(i+1))...)
	}
	b = append(b, 0x6e, 0x7b, 0x01, 0x00)
	return append(b, value...)
}

// fieldList is n record fields with ids 0..n-1, all null.
func fieldList(n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, uleb(uint64(i))...)
		b = append(b, 0x7f)
	}
	return b
}

// optCycle is a type table of n entries, entry i being opt (i+1 mod n), with one argument of type
// 0 whose value is none.
func optCycle(n int) []byte {
	b := append([]byte(magic), uleb(uint64(n))...)
	for i := range n {
		b = append(b, 0x6e)
		b = append(b, sleb(int64((i+1)%n))...)
	}
	return append(b, 0x01, 0x00, 0x00)
}

// Attack inputs that crash, or cost seconds and hundreds of MB in, agent-go's decoder.
func hostileInputs() []struct {
	name string
	data []byte
	want string
	// skippable: skipping accepts it (Rust candid reads nat and int of any size; only
	// decoding one into 64 bits refuses it).
	skippable bool
} {
	return []struct {
		name      string
		data      []byte
		want      string
		skippable bool
	}{
		{"principal length 2^50", wire("4449444c 00 01 68 01", uleb(1<<50)), "principal of", false},
		{"text length 2^50", wire("4449444c 00 01 71", uleb(1<<50)), "text length", false},
		{"blob length 2^50", wire("4449444c 01 6d 7b 01 00", uleb(1<<50)), "vector length", false},
		{"vec null of 50M", wire("4449444c 01 6d 7f 01 00", uleb(50_000_000)), "work budget", false},
		{"vec reserved of 50M", wire("4449444c 01 6d 70 01 00", uleb(50_000_000)), "work budget", false},
		{"vec empty record of 50M", wire("4449444c 02 6c 00 6d 00 01 01", uleb(50_000_000)), "work budget", false},
		{"vec vec null", wire("4449444c 02 6d 7f 6d 00 01 01 64", bytes.Repeat(uleb(4000), 100)), "too many values", false},
		{"vec of 2^63 nat64", wire("4449444c 01 6d 78 01 00", uleb(1<<63)), "vector length", false},
		{"type table of 2^40 entries", wire("4449444c", uleb(1<<40), "6e 7f"), "type table size", false},
		{"type table above the entry cap", wire("4449444c", uleb(20_000), bytes.Repeat([]byte{0x6e, 0x7f}, 20_000), "00"), "exceeds 2048", false},
		{"record of 2^32 fields", wire("4449444c 01 6c", uleb(1<<32), "00 7f"), "field count", false},
		{"table of 20000 fields", wire("4449444c 02 6c", uleb(10_000), fieldList(10_000), "6c", uleb(10_000), fieldList(10_000), "00"), "more than 16384", false},
		{"argument count 2^40", wire("4449444c 00", uleb(1<<40)), "argument count", false},
		{"nested opt table 10000 deep", nestedOptTable(10_000, bytes.Repeat([]byte{1}, 10_000)), "exceeds 2048", false},
		{"nested opt table 2000 deep", nestedOptTable(2000, bytes.Repeat([]byte{1}, 2000)), "nests more than 64", false},
		{"nested opt table 65 deep, value none", nestedOptTable(65, []byte{0}), "nests more than 64", false},
		{"opt cycle of 100 entries", optCycle(100), "nests more than 64", false},
		{"recursive opt value 100 deep", wire("4449444c 01 6e 00 01 00", bytes.Repeat([]byte{1}, 100), "00"), "nested deeper", false},
		{"recursive record never ends", wire("4449444c 01 6c 01 00 00 01 00"), "nested deeper", false},
		{"LEB128 of 11 bytes", wire("4449444c 00 01 7d", bytes.Repeat([]byte{0x80}, 10), "00"), "LEB128", false},
		{"LEB128 beyond 64 bits", wire("4449444c 00 01 7d ffffffffffffffffff7f"), "exceeds 64 bits", true},
		{"type index out of range", wire("4449444c 01 6e 05 01 00 00"), "out of a table", false},
		{"unknown opcode", wire("4449444c 00 01 60"), "not a type reference", false},
		{"future type", wire("4449444c 01 67 00 01 00"), "not a type constructor", false},
		{"unsorted fields", wire("4449444c 01 6c 02 02 7f 01 7f 01 00"), "not above", false},
		{"invalid UTF-8 text", wire("4449444c 00 01 71 02 c3 28"), "UTF-8", false},
		{"principal of 30 bytes", wire("4449444c 00 01 68 01 1e", bytes.Repeat([]byte{1}, 30)), "exceeds 29", false},
		{"opaque principal", wire("4449444c 00 01 68 00"), "transparent", false},
		{"bool 2", wire("4449444c 00 01 7e 02"), "neither 0 nor 1", false},
		{"vec bool with 2", wire("4449444c 01 6d 7e 01 00 02 01 02"), "neither 0 nor 1", false},
		{"opt flag 2", wire("4449444c 01 6e 7f 01 00 02"), "neither 0 nor 1", false},
		{"variant case out of range", wire("4449444c 01 6b 01 00 7f 01 00 05"), "variant case", false},
		{"empty value", wire("4449444c 00 01 6f"), "empty", false},
		{"trailing bytes", wire("4449444c 00 01 7f 00"), "after the last argument", false},
		{"truncated nat64", wire("4449444c 00 01 78 0102"), "truncated", false},
		{"no magic", wire("4449444d 00 00"), "DIDL", false},
		{"method of a non-func type", wire("4449444c 01 69 01 01 61 7f 00"), "non-function", false},
		{"message too large", append([]byte(magic), make([]byte, MaxMessageSize)...), "exceeds", false},
	}
}

func TestHostileInputsAreRefused(t *testing.T) {
	for _, tt := range hostileInputs() {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := DecodeAny(tt.data)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeAny: err = %v, want it to mention %q", err, tt.want)
			}
			// A typed decode reads the header and skips the arguments: refused too.
			if _, err := Decode(tt.data, nil); (err == nil) != tt.skippable {
				t.Fatalf("Decode with no expected argument: err = %v", err)
			}
		})
	}
}

// The special opt rule recovers from a value that does not fit, never from malformed bytes or
// exhausted limits.
func TestOptDoesNotHideMalformedInput(t *testing.T) {
	expected := []*Type{Opt(Record(F("a", Prim(KindNat64))))}
	tests := []struct {
		name string
		data []byte
	}{
		{"vec null of 50M under opt", wire("4449444c 02 6d 7f 6e 00 01 01 01", uleb(50_000_000))},
		{"invalid UTF-8 under opt", wire("4449444c 01 6e 71 01 00 01 02 c3 28")},
		{"truncated under opt", wire("4449444c 01 6e 78 01 00 01 0102")},
		{"deep recursion under opt", wire("4449444c 01 6e 00 01 00", bytes.Repeat([]byte{1}, 100), "00")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.data, expected); err == nil {
				t.Fatal("decoded")
			}
		})
	}
}

func TestRecursiveTypesDecode(t *testing.T) {
	// type list = opt record { 0 : nat8; 1 : list }, the list 1, 2, 3.
	data := wire("4449444c 02 6e 01 6c 02 00 7b 01 00 01 00", "01 01 01 02 01 03 00")
	types, values, err := DecodeAny(data)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for v, ok := values[0].Opt(); ok; v, ok = v.FieldAt(1).Opt() {
		got = append(got, v.FieldAt(0).Nat())
	}
	if len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("list = %v", got)
	}
	again, err := Encode(types, values)
	if err != nil || !bytes.Equal(again, data) {
		t.Fatalf("re-encoded %x, %v; want %x", again, err, data)
	}
}

func TestTruncatedMessagesAreRefused(t *testing.T) {
	valid := [][]byte{
		wire("4449444c 02 6e 01 6c 02 00 7b 01 00 01 00", "01 01 01 02 01 03 00"),
		wire("4449444c 03 6d 7b 6c 02 00 71 01 00 6b 02 00 7f 01 01 02 02 7e", "01 05 68656c6c6f 03 010203 01"),
	}
	for _, data := range valid {
		if _, _, err := DecodeAny(data); err != nil {
			t.Fatalf("valid message %x: %v", data, err)
		}
		for n := range len(data) {
			if _, _, err := DecodeAny(data[:n]); err == nil {
				t.Fatalf("prefix of %d bytes of %x decoded", n, data)
			}
		}
	}
}
