package hashtree_test

import (
	"testing"

	"github.com/icws/icws/protocol/hashtree"
)

func FuzzDecode(f *testing.F) {
	f.Add(mustHex(f, specTreeHex))
	f.Add(mustHex(f, specPrunedHex))
	f.Add(append([]byte{0xd9, 0xd9, 0xf7}, chain(40).Encode()...))
	f.Add(rawChain(hashtree.MaxDepth + 1))
	f.Add([]byte{0x83, 0x01, 0x81, 0x00})
	f.Add([]byte{0x82, 0x03, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		tree, err := hashtree.Decode(data)
		if err != nil {
			return
		}
		again, err := hashtree.Decode(tree.Encode())
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		if again.Digest() != tree.Digest() {
			t.Fatal("re-encoding changed the root hash")
		}
		tree.Lookup([]byte("websocket"), []byte("k"))
		tree.LookupSubtree([]byte("a"))
		tree.Children()
		if (tree.WellFormed() == nil) != (again.WellFormed() == nil) {
			t.Fatal("re-encoding changed well-formedness")
		}
	})
}
