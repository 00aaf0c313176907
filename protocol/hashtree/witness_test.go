package hashtree_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/icws/icws/internal/testkit/cputime"
	"github.com/icws/icws/protocol/hashtree"
)

// rangeTree is shaped like a ws_get_messages witness: "websocket" over a balanced fork tree of n
// labeled leaves, with pruned subtrees at both ends (the keys outside the batch).
func rangeTree(n int) *hashtree.Node {
	var build func(lo, hi int) *hashtree.Node
	build = func(lo, hi int) *hashtree.Node {
		if hi-lo == 1 {
			return lab(fmt.Sprintf("key-%04d", lo), leaf(fmt.Sprintf("hash of message %d", lo)))
		}
		mid := (lo + hi) / 2
		return fork(build(lo, mid), build(mid, hi))
	}
	messages := fork(hashtree.NewPruned([32]byte{7}), fork(build(0, n), hashtree.NewPruned([32]byte{8})))
	return fork(lab("other", leaf("x")), lab("websocket", messages))
}

func TestWitnessProvesOnePath(t *testing.T) {
	tree := rangeTree(50)
	p := hashtree.NewPruner(tree)
	full := len(tree.Encode())
	for i := 0; i < 50; i++ {
		key := []byte(fmt.Sprintf("key-%04d", i))
		w, ok := witness(t, p, []byte("websocket"), key)
		if !ok {
			t.Fatalf("no witness for %s", key)
		}
		if w.Digest() != tree.Digest() {
			t.Fatalf("witness of %s has another root hash", key)
		}
		v, st := w.Lookup([]byte("websocket"), key)
		if st != hashtree.Found || string(v) != fmt.Sprintf("hash of message %d", i) {
			t.Fatalf("witness of %s: lookup %s %q", key, st, v)
		}
		other := []byte(fmt.Sprintf("key-%04d", (i+1)%50))
		if _, st := w.Lookup([]byte("websocket"), other); st != hashtree.Unknown {
			t.Fatalf("witness of %s: %s is %s, want unknown", key, other, st)
		}
		if size := len(w.Encode()); size*4 > full {
			t.Fatalf("witness of %s: %d bytes of a %d-byte tree", key, size, full)
		}
	}
}

func TestWitnessRefusesPathsTheTreeDoesNotProve(t *testing.T) {
	unsorted := lab("websocket", fork(lab("c", leaf("3")), lab("a", leaf("1"))))
	tests := []struct {
		name string
		tree *hashtree.Node
		path []string
	}{
		{"absent label", rangeTree(4), []string{"websocket", "key-9999"}},
		{"absent first label", rangeTree(4), []string{"nope", "key-0001"}},
		{"path under a pruned subtree", fork(lab("a", leaf("1")), pruned()), []string{"b"}},
		// find_label stops at c: the tree proves a absent, however it goes on.
		{"label after a greater one", unsorted, []string{"websocket", "a"}},
		{"empty tree", hashtree.NewEmpty(), []string{"a"}},
		{"nil tree", nil, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := make([][]byte, len(tt.path))
			for i, l := range tt.path {
				path[i] = []byte(l)
			}
			if out, ok := hashtree.NewPruner(tt.tree).AppendWitness([]byte("x"), path...); ok || string(out) != "x" {
				t.Fatalf("witness %x for a path the tree does not prove", out)
			}
		})
	}
}

func TestWitnessOfTheEmptyPathIsTheTree(t *testing.T) {
	tree := rangeTree(3)
	w, ok := hashtree.NewPruner(tree).AppendWitness(nil)
	if !ok || !bytes.Equal(w, tree.Encode()) {
		t.Fatal("the empty path must keep the whole tree")
	}
}

func BenchmarkWitnessPerMessage(b *testing.B) {
	raw := rangeTree(50).Encode()
	keys := make([][]byte, 50)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("key-%04d", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	meter := cputime.Start()
	var out []byte
	for range b.N {
		tree, err := hashtree.Decode(raw)
		if err != nil {
			b.Fatal(err)
		}
		p := hashtree.NewPruner(tree)
		for _, k := range keys {
			out, _ = p.AppendWitness(out[:0], []byte("websocket"), k)
		}
	}
	meter.Report(b, len(keys), "msg")
}

// witness cuts the witness of path and decodes it back.
func witness(t testing.TB, p *hashtree.Pruner, path ...[]byte) (*hashtree.Node, bool) {
	t.Helper()
	raw, ok := p.AppendWitness(nil, path...)
	if !ok {
		return nil, false
	}
	w, err := hashtree.Decode(raw)
	if err != nil {
		t.Fatalf("witness of %q does not decode: %v", path, err)
	}
	return w, true
}
