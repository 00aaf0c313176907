package cborwrite

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// Every head length, checked against a general CBOR encoder in canonical mode.
func TestItemsMatchCanonicalCBOR(t *testing.T) {
	enc, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 23, 24, 255, 256, 65535, 65536, 1 << 20} {
		b := bytes.Repeat([]byte{7}, n)
		want, _ := enc.Marshal(b)
		if got := AppendBytes(nil, b); !bytes.Equal(got, want) {
			t.Errorf("bytes of %d: % x…, want % x…", n, got[:min(len(got), 9)], want[:min(len(want), 9)])
		}
		s := strings.Repeat("a", n)
		want, _ = enc.Marshal(s)
		if got := AppendText(nil, s); !bytes.Equal(got, want) {
			t.Errorf("text of %d: % x…, want % x…", n, got[:min(len(got), 9)], want[:min(len(want), 9)])
		}
	}
	for _, n := range []uint64{0, 23, 24, 1 << 8, 1 << 16, 1 << 32, 1<<64 - 1} {
		want, _ := enc.Marshal(n)
		if got := AppendHead(nil, 0, n); !bytes.Equal(got, want) {
			t.Errorf("uint %d: % x, want % x", n, got, want)
		}
	}
	want, _ := enc.Marshal([]int{1, 2, 3})
	if got := append(AppendArrayHead(nil, 3), 1, 2, 3); !bytes.Equal(got, want) {
		t.Errorf("array: % x, want % x", got, want)
	}
}
