package wscanister

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/aviate-labs/agent-go/certification/hashtree"
)

// fromScratch builds a tree with the same keys in one go; the treap's shape depends only on the
// keys, so its hash must equal the incrementally maintained one.
func fromScratch(m map[string][32]byte) *certTree {
	var t certTree
	for k, v := range m {
		t.insert(k, v)
	}
	return &t
}

func TestCertTreeIncrementalMatchesScratch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var tree certTree
	m := map[string][32]byte{}
	if tree.rootHash() != emptyHash {
		t.Fatal("empty tree must hash as Empty")
	}
	for i := 0; i < 2000; i++ {
		k := fmt.Sprintf("gw%d_%020d", r.IntN(3), r.IntN(400))
		if r.IntN(3) == 0 {
			tree.delete(k)
			delete(m, k)
		} else {
			v := sha256.Sum256([]byte(fmt.Sprint(i)))
			tree.insert(k, v)
			m[k] = v
		}
		if i%97 == 0 {
			if got, want := tree.rootHash(), fromScratch(m).rootHash(); got != want {
				t.Fatalf("step %d: incremental %x != scratch %x", i, got, want)
			}
			if tree.len() != len(m) {
				t.Fatalf("step %d: %d keys, want %d", i, tree.len(), len(m))
			}
		}
	}
	for k := range m {
		tree.delete(k)
	}
	if tree.len() != 0 || tree.rootHash() != emptyHash {
		t.Fatal("tree not empty after deleting every key")
	}
}

func TestCertTreeWitness(t *testing.T) {
	var tree certTree
	var keys []string
	vals := map[string][32]byte{}
	for i := 0; i < 300; i++ {
		k := fmt.Sprintf("gw_%020d", i)
		keys = append(keys, k)
		vals[k] = sha256.Sum256([]byte(k))
		tree.insert(k, vals[k])
	}
	sort.Strings(keys)
	root := tree.rootHash()
	ranges := [][2]int{{0, 0}, {0, 49}, {50, 99}, {299, 299}, {137, 212}, {0, 299}}
	for _, rg := range ranges {
		first, last := keys[rg[0]], keys[rg[1]]
		w, err := tree.witness(first, last)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Reconstruct(); got != root {
			t.Fatalf("%v: witness root %x != %x", rg, got, root)
		}
		b, err := hashtree.Serialize(w)
		if err != nil {
			t.Fatal(err)
		}
		back, err := hashtree.Deserialize(b)
		if err != nil {
			t.Fatalf("%v: deserialize: %v", rg, err)
		}
		for i, k := range keys {
			leaf, err := hashtree.Lookup(back, hashtree.Label(k))
			in := i >= rg[0] && i <= rg[1]
			if in {
				v := vals[k]
				if err != nil || !bytes.Equal(leaf, v[:]) {
					t.Fatalf("%v: key %d not revealed: %v", rg, i, err)
				}
			} else if err == nil {
				t.Fatalf("%v: key %d outside the range revealed", rg, i)
			}
		}
		// Labels in every fork must be in order: collect labels left to right.
		var labels []string
		var walk func(n hashtree.Node)
		walk = func(n hashtree.Node) {
			switch n := n.(type) {
			case hashtree.Fork:
				walk(n.LeftTree)
				walk(n.RightTree)
			case hashtree.Labeled:
				labels = append(labels, string(n.Label))
			case hashtree.Empty:
				t.Fatal("Empty inside a witness")
			}
		}
		walk(back)
		if !sort.StringsAreSorted(labels) || len(labels) != rg[1]-rg[0]+1 {
			t.Fatalf("%v: labels %d sorted=%v", rg, len(labels), sort.StringsAreSorted(labels))
		}
	}
}

func BenchmarkCertTreeSend(b *testing.B) {
	// The steady state of a busy canister: insert at the end, delete at the front.
	var tree certTree
	const retained = 100000
	for i := 0; i < retained; i++ {
		tree.insert(fmt.Sprintf("gw_%020d", i), sha256.Sum256([]byte{byte(i)}))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tree.insert(fmt.Sprintf("gw_%020d", retained+i), sha256.Sum256([]byte{byte(i)}))
		tree.delete(fmt.Sprintf("gw_%020d", i))
		_ = tree.certifiedData()
	}
}

// agent-go decodes hash trees with fxamacker/cbor's default limit of 32 nested levels; a batch
// witness from a canister that retains many messages must stay under it.
func TestCertTreeWitnessDepth(t *testing.T) {
	var tree certTree
	const n = 10000
	for _, gw := range []string{"gwa", "gwb", "gwc"} {
		count := uint64(n)
		if gw != "gwb" {
			count = 100
		}
		for i := uint64(1 << 20); i < 1<<20+count; i++ {
			tree.insert(fmt.Sprintf("%s_%020d", gw, i), sha256.Sum256([]byte{byte(i)}))
		}
	}
	for _, start := range []uint64{1 << 20, 1<<20 + 12345, 1<<20 + n - 50} {
		w, err := tree.witness(fmt.Sprintf("gwb_%020d", start), fmt.Sprintf("gwb_%020d", start+49))
		if err != nil {
			t.Fatal(err)
		}
		full := hashtree.Labeled{Label: hashtree.Label("websocket"), Tree: w}
		b, err := hashtree.Serialize(full)
		if err != nil {
			t.Fatal(err)
		}
		back, err := hashtree.Deserialize(b)
		if err != nil {
			t.Fatalf("start %d: %v", start, err)
		}
		if got, want := back.Reconstruct(), tree.certifiedData(); got != want {
			t.Fatalf("start %d: root mismatch", start)
		}
		if d := depth(back); d > 24 {
			t.Fatalf("start %d: depth %d", start, d)
		}
	}
}

func depth(n hashtree.Node) int {
	switch n := n.(type) {
	case hashtree.Fork:
		return 1 + max(depth(n.LeftTree), depth(n.RightTree))
	case hashtree.Labeled:
		return 1 + depth(n.Tree)
	}
	return 1
}
