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
		checkWitnesses(t, tree)
	})
}

// checkWitnesses cuts a witness for every path of one or two labels the tree proves, and checks
// that it has the tree's root hash and proves the same subtree there.
func checkWitnesses(t *testing.T, tree *hashtree.Node) {
	p := hashtree.NewPruner(tree)
	root := tree.Digest()
	check := func(path ...[]byte) {
		want, st := tree.LookupSubtree(path...)
		w, ok := witness(t, p, path...)
		if ok != (st == hashtree.Found) {
			t.Fatalf("path %q: lookup %s, witness %v", path, st, ok)
		}
		if !ok {
			return
		}
		if w.Digest() != root {
			t.Fatalf("witness of %q has another root hash", path)
		}
		got, st := w.LookupSubtree(path...)
		if st != hashtree.Found || got.Digest() != want.Digest() {
			t.Fatalf("witness of %q: lookup %s", path, st)
		}
	}
	kids, _ := tree.Children()
	for _, k := range kids {
		check(k.Label())
		grand, _ := k.Subtree().Children()
		for _, g := range grand {
			check(k.Label(), g.Label())
		}
	}
}
