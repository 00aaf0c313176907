package protocol

import (
	"encoding/hex"
	"math/big"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// The interface spec's worked example of a request id.
func TestRequestIDSpecExample(t *testing.T) {
	content := map[string]any{
		"request_type":   "call",
		"canister_id":    []byte{0, 0, 0, 0, 0, 0, 0x04, 0xD2},
		"method_name":    "hello",
		"arg":            []byte("DIDL\x00\xFD*"),
		"ingress_expiry": uint64(1685570400000000000),
		"sender":         []byte{0x04},
	}
	b, err := cbor.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	id, err := RequestIDOfContent(b)
	if err != nil {
		t.Fatal(err)
	}
	const want = "1d1091364d6bb8a6c16b203ee75467d59ead468f523eb058880ae8ec80e2b101"
	if got := hex.EncodeToString(id[:]); got != want {
		t.Fatalf("request id = %s, want %s", got, want)
	}
}

func TestLEB128(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"u0", uleb128(bigU(0)), "00"},
		{"u624485", uleb128(bigU(624485)), "e58e26"},
		{"s-123456", sleb128(bigS(-123456)), "c0bb78"},
		{"s63", sleb128(bigS(63)), "3f"},
		{"s64", sleb128(bigS(64)), "c000"},
		{"s-1", sleb128(bigS(-1)), "7f"},
	}
	for _, tt := range tests {
		if hex.EncodeToString(tt.got) != tt.want {
			t.Errorf("%s = %x, want %s", tt.name, tt.got, tt.want)
		}
	}
}

func bigU(v uint64) *big.Int { return new(big.Int).SetUint64(v) }
func bigS(v int64) *big.Int  { return big.NewInt(v) }
