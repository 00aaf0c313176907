package wscanister

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/fxamacker/cbor/v2"
)

// shape prints a tree as key(color)[left right], "-" for a missing child.
func shape(n *rbNode) string {
	if n == nil {
		return "-"
	}
	c := "B"
	if n.red {
		c = "R"
	}
	if n.left == nil && n.right == nil {
		return n.key + c
	}
	return fmt.Sprintf("%s%s[%s %s]", n.key, c, shape(n.left), shape(n.right))
}

// witnessShape prints a witness: F(l r) for a fork, the label for a revealed entry, label? for a
// label whose value is pruned, P for a pruned subtree, E for Empty.
func witnessShape(n hashtree.Node) string {
	switch n := n.(type) {
	case hashtree.Fork:
		return "F(" + witnessShape(n.LeftTree) + " " + witnessShape(n.RightTree) + ")"
	case hashtree.Labeled:
		switch n.Tree.(type) {
		case hashtree.Leaf:
			return string(n.Label)
		case hashtree.Pruned:
			return string(n.Label) + "?"
		}
		return string(n.Label) + "{" + witnessShape(n.Tree) + "}"
	case hashtree.Pruned:
		return "P"
	case hashtree.Empty:
		return "E"
	}
	return fmt.Sprintf("%T", n)
}

func valueOf(key string) [32]byte { return sha256.Sum256([]byte("value of " + key)) }

func treeOf(keys ...string) *rbTree {
	var t rbTree
	for _, k := range keys {
		t.insert(k, valueOf(k))
	}
	return &t
}

// The shapes below are derived by hand from ic-certification 2.6's insert and delete (the 2-3
// left-leaning red-black tree): keys inserted in increasing order, as the CDK inserts message keys.
func TestRBTreeShapesInAscendingInsertion(t *testing.T) {
	want := []string{
		"aB",
		"bB[aR -]",
		"bB[aB cB]",
		"bB[aB dB[cR -]]",
		"dB[bR[aB cB] eB]",
		"dB[bR[aB cB] fB[eR -]]",
		"dB[bB[aB cB] fB[eB gB]]",
	}
	var tree rbTree
	for i, w := range want {
		k := string(rune('a' + i))
		tree.insert(k, valueOf(k))
		if got := shape(tree.root); got != w {
			t.Fatalf("after inserting %q: %s, want %s", k, got, w)
		}
	}
}

func TestRBTreeShapesAfterDelete(t *testing.T) {
	tests := []struct {
		name   string
		delete []string
		want   string
	}{
		{"front", []string{"a"}, "fB[dR[cB[bR -] eB] gB]"},
		{"front twice", []string{"a", "b"}, "fB[dR[cB eB] gB]"},
		{"root", []string{"d"}, "eB[bR[aB cB] gB[fR -]]"},
		{"back", []string{"g"}, "dB[bR[aB cB] fB[eR -]]"},
		{"absent", []string{"0", "h", "cc"}, "dB[bB[aB cB] fB[eB gB]]"},
		{"all", []string{"a", "b", "c", "d", "e", "f", "g"}, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree := treeOf("a", "b", "c", "d", "e", "f", "g")
			for _, k := range tt.delete {
				tree.delete(k)
			}
			if got := shape(tree.root); got != tt.want {
				t.Fatalf("%s, want %s", got, tt.want)
			}
			checkTree(t, tree, nil)
		})
	}
}

// Witness shapes for the perfect tree dB[bB[aB cB] fB[eB gB]], derived by hand from
// value_range and three_way_fork: Empty sides drop out, an all-pruned (middle, right) pair
// becomes one Pruned.
func TestRBTreeValueRangeShapes(t *testing.T) {
	tree := treeOf("a", "b", "c", "d", "e", "f", "g")
	tests := []struct {
		first, last string
		want        string
	}{
		{"c", "e", "F(F(P F(P c)) F(d F(e P)))"},
		{"a", "a", "F(F(a P) P)"},
		{"g", "g", "F(P F(P F(P F(P g))))"},
		{"d", "d", "F(P F(d P))"},
		{"a", "g", "F(F(a F(b c)) F(d F(e F(f g))))"},
		{"e", "g", "F(P F(P F(e F(f g))))"},
		// Absent bounds: the neighbours that bound the range (c below, f above) are revealed
		// with pruned values; beyond them everything is pruned.
		{"cc", "ee", "F(F(P F(P c?)) F(d F(e F(f? P))))"},
		{"0", "b", "F(F(a F(b P)) P)"},
		{"ff", "z", "F(P F(P F(P F(f? g))))"},
		{"0", "0", "F(F(a? P) P)"},
		{"z", "zz", "F(P F(P F(P F(P g?))))"},
		{"0", "z", "F(F(a F(b c)) F(d F(e F(f g))))"},
	}
	for _, tt := range tests {
		w := tree.valueRange(tt.first, tt.last)
		if got := witnessShape(w); got != tt.want {
			t.Errorf("valueRange(%q, %q) = %s, want %s", tt.first, tt.last, got, tt.want)
		}
		if w.Reconstruct() != tree.rootHash() {
			t.Errorf("valueRange(%q, %q): root hash differs", tt.first, tt.last)
		}
	}
}

func TestRBTreeEmpty(t *testing.T) {
	var tree rbTree
	if tree.rootHash() != emptyHash {
		t.Fatal("an empty tree must hash as Empty")
	}
	if w := tree.valueRange("a", "z"); witnessShape(w) != "E" {
		t.Fatalf("witness of an empty tree: %s, want Empty", witnessShape(w))
	}
	tree.delete("a")
	if tree.len() != 0 || tree.root != nil {
		t.Fatal("deleting from an empty tree changed it")
	}
}

// The label and value cases of ic-certification 2.6's own value_range test, on a tree of b, d, f.
func TestRBTreeValueRangeLabels(t *testing.T) {
	tree := treeOf("b", "d", "f")
	tests := []struct {
		first, last      string
		labels, revealed []string
	}{
		{"a", "a", []string{"b"}, nil},
		{"a", "b", []string{"b"}, []string{"b"}},
		{"f", "z", []string{"f"}, []string{"f"}},
		{"g", "z", []string{"f"}, nil},
		{"a", "z", []string{"b", "d", "f"}, []string{"b", "d", "f"}},
	}
	for _, tt := range tests {
		labels, revealed := witnessLabels(tree.valueRange(tt.first, tt.last))
		if !slices.Equal(labels, tt.labels) || !slices.Equal(revealed, tt.revealed) {
			t.Errorf("valueRange(%q, %q): labels %v revealed %v, want %v %v", tt.first, tt.last, labels, revealed, tt.labels, tt.revealed)
		}
	}
}

func witnessLabels(n hashtree.Node) (labels, revealed []string) {
	for _, it := range flatten(n) {
		if it.label != "" {
			labels = append(labels, it.label)
			if it.revealed {
				revealed = append(revealed, it.label)
			}
		}
	}
	return labels, revealed
}

// witnessItem is one leaf of a witness read left to right: a label (its value revealed or not),
// or an opaque pruned subtree (label "").
type witnessItem struct {
	label    string
	revealed bool
	value    []byte
}

func flatten(n hashtree.Node) []witnessItem {
	var out []witnessItem
	var walk func(hashtree.Node)
	walk = func(n hashtree.Node) {
		switch n := n.(type) {
		case hashtree.Fork:
			walk(n.LeftTree)
			walk(n.RightTree)
		case hashtree.Labeled:
			leaf, ok := n.Tree.(hashtree.Leaf)
			out = append(out, witnessItem{label: string(n.Label), revealed: ok, value: leaf})
		case hashtree.Pruned:
			out = append(out, witnessItem{})
		}
	}
	walk(n)
	return out
}

// proves tells what a witness proves about key: its value, that it is absent, or nothing.
func proves(items []witnessItem, key string) (value []byte, absent, known bool) {
	// The gap where key would be must be bounded by labels (or the edges) with no pruned
	// subtree in it for absence to be proven.
	i := 0
	for i < len(items) && (items[i].label == "" || items[i].label < key) {
		i++
	}
	if i < len(items) && items[i].label == key {
		if items[i].revealed {
			return items[i].value, false, true
		}
		return nil, false, false
	}
	// items[i] (if any) is the first label above key; what precedes it is a label below key,
	// the left edge, or a pruned subtree that could hide key.
	if i > 0 && items[i-1].label == "" {
		return nil, false, false
	}
	return nil, true, true
}

// checkTree verifies the red-black invariants, the key order, every cached hash and, if model is
// given, the contents.
func checkTree(t *testing.T, tree *rbTree, model map[string][32]byte) {
	t.Helper()
	if isRed(tree.root) {
		t.Fatal("red root")
	}
	var keys []string
	var walk func(n *rbNode) (blackHeight int, hash [32]byte)
	walk = func(n *rbNode) (int, [32]byte) {
		if n == nil {
			return 0, [32]byte{}
		}
		if isRed(n.right) {
			t.Fatalf("%q: red right child (the tree leans left)", n.key)
		}
		if n.red && isRed(n.left) {
			t.Fatalf("%q: red node with a red child", n.key)
		}
		lh, lhash := walk(n.left)
		keys = append(keys, n.key)
		rh, rhash := walk(n.right)
		if lh != rh {
			t.Fatalf("%q: black heights %d and %d", n.key, lh, rh)
		}
		data := labeledHash([]byte(n.key), leafHash(n.value[:]))
		if data != n.dataHash {
			t.Fatalf("%q: stale data hash", n.key)
		}
		h := data
		switch {
		case n.left != nil && n.right != nil:
			h = forkHash(lhash, forkHash(data, rhash))
		case n.left != nil:
			h = forkHash(lhash, data)
		case n.right != nil:
			h = forkHash(data, rhash)
		}
		if h != n.subtreeHash {
			t.Fatalf("%q: stale subtree hash", n.key)
		}
		if !n.red {
			lh++
		}
		return lh, h
	}
	walk(tree.root)
	if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
		t.Fatalf("keys out of order: %v", keys)
	}
	if len(keys) != tree.len() {
		t.Fatalf("len %d, %d keys", tree.len(), len(keys))
	}
	if full := fullWitness(tree.root).Reconstruct(); tree.root != nil && full != tree.rootHash() {
		t.Fatal("root hash differs from the full tree's")
	}
	if tree.root == nil && tree.rootHash() != emptyHash {
		t.Fatal("empty tree must hash as Empty")
	}
	if model == nil {
		return
	}
	if len(model) != len(keys) {
		t.Fatalf("%d keys, model has %d", len(keys), len(model))
	}
	for _, k := range keys {
		if v, ok := tree.get(k); !ok || v != model[k] {
			t.Fatalf("%q: got %x, model %x", k, v, model[k])
		}
	}
}

// checkWitness verifies that valueRange(first, last) hashes to the root, reveals exactly the
// model's entries in [first, last] and proves every other key of the range absent.
func checkWitness(t *testing.T, tree *rbTree, model map[string][32]byte, domain []string, first, last string) {
	t.Helper()
	w := tree.valueRange(first, last)
	if w.Reconstruct() != tree.rootHash() {
		t.Fatalf("[%q, %q]: witness root hash differs", first, last)
	}
	items := flatten(w)
	var labels []string
	for _, it := range items {
		if it.label != "" {
			labels = append(labels, it.label)
		}
	}
	if !slices.IsSorted(labels) || len(slices.Compact(slices.Clone(labels))) != len(labels) {
		t.Fatalf("[%q, %q]: labels not strictly increasing: %v", first, last, labels)
	}
	if hasEmptyInFork(w) {
		t.Fatalf("[%q, %q]: Empty inside a fork", first, last)
	}
	for _, k := range domain {
		v, absent, known := proves(items, k)
		_, present := model[k]
		inRange := first <= k && k <= last
		switch {
		case inRange && present:
			want := model[k]
			if !known || absent || !bytes.Equal(v, want[:]) {
				t.Fatalf("[%q, %q]: %q not revealed (known=%v absent=%v)", first, last, k, known, absent)
			}
		case inRange:
			if !absent {
				t.Fatalf("[%q, %q]: absence of %q not proven", first, last, k)
			}
		case present && v != nil:
			t.Fatalf("[%q, %q]: %q outside the range revealed", first, last, k)
		}
	}
}

func hasEmptyInFork(n hashtree.Node) bool {
	switch n := n.(type) {
	case hashtree.Fork:
		_, le := n.LeftTree.(hashtree.Empty)
		_, re := n.RightTree.(hashtree.Empty)
		return le || re || hasEmptyInFork(n.LeftTree) || hasEmptyInFork(n.RightTree)
	case hashtree.Labeled:
		return hasEmptyInFork(n.Tree)
	}
	return false
}

func TestRBTreeRandomOperations(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 42))
			// A small key space so that inserts overwrite, deletes hit and miss, and ranges
			// have absent bounds.
			var domain []string
			for i := range 120 {
				domain = append(domain, fmt.Sprintf("k%03d", i*2))
			}
			probes := slices.Clone(domain)
			for i := range 121 {
				probes = append(probes, fmt.Sprintf("k%03d", i*2-1))
			}
			slices.Sort(probes)
			var tree rbTree
			model := map[string][32]byte{}
			for step := range 1000 {
				k := domain[r.IntN(len(domain))]
				if r.IntN(5) < 2 {
					tree.delete(k)
					delete(model, k)
				} else {
					v := sha256.Sum256(fmt.Appendf(nil, "%d/%d", seed, step))
					tree.insert(k, v)
					model[k] = v
				}
				checkTree(t, &tree, model)
				if step%10 == 0 {
					a, b := probes[r.IntN(len(probes))], probes[r.IntN(len(probes))]
					if a > b {
						a, b = b, a
					}
					checkWitness(t, &tree, model, probes, a, b)
				}
			}
		})
	}
}

// TestRBTreeQueueOperations runs the canister's pattern: keys inserted at the end, deleted at
// the front, witnesses over ranges of existing keys.
func TestRBTreeQueueOperations(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	var tree rbTree
	model := map[string][32]byte{}
	var domain []string
	front, next := 0, 0
	key := func(i int) string { return fmt.Sprintf("gw_%020d", i) }
	for range 1500 {
		for range r.IntN(4) {
			k := key(next)
			next++
			domain = append(domain, k)
			model[k] = valueOf(k)
			tree.insert(k, model[k])
		}
		for range r.IntN(4) {
			if front < next {
				tree.delete(key(front))
				delete(model, key(front))
				front++
			}
		}
		checkTree(t, &tree, model)
		if front < next {
			a := front + r.IntN(next-front)
			b := a + r.IntN(min(50, next-a))
			checkWitness(t, &tree, model, domain[max(0, a-3):min(len(domain), b+3)], key(a), key(b))
		}
	}
}

func messageKey(nonce int) string { return fmt.Sprintf("2vxsx-fae_%020d", nonce) }

// retainedTree holds n message keys of one gateway as a busy canister holds them: 2n inserted at
// the end, the first n deleted from the front as they age out.
func retainedTree(n int) *rbTree {
	var tree rbTree
	for i := range 2 * n {
		tree.insert(messageKey(i), valueOf(messageKey(i)))
		if i >= n {
			tree.delete(messageKey(i - n))
		}
	}
	return &tree
}

// newestWitness is what ws_get_messages certifies for the newest 50 of the keys up to nonce last.
func newestWitness(tree *rbTree, last int) hashtree.Labeled {
	return hashtree.Labeled{Label: hashtree.Label(labelWebsocket), Tree: tree.valueRange(messageKey(last-49), messageKey(last))}
}

// cborDepth is how deeply a witness's CBOR arrays nest, "websocket" label included: what a
// decoder's nesting limit is compared with.
func cborDepth(n hashtree.Node) int {
	switch n := n.(type) {
	case hashtree.Fork:
		return 1 + max(cborDepth(n.LeftTree), cborDepth(n.RightTree))
	case hashtree.Labeled:
		return 1 + cborDepth(n.Tree)
	}
	return 1
}

// TestRBTreeWitnessDepth: once a canister retains many messages, the witness for the newest 50
// nests as deeply as a real canister's (two CBOR arrays per tree level), deeper than agent-go's
// decoder accepts (32 levels), and encoding it has no such limit. The keys are inserted in
// order, as by a canister that has sent 100,000 messages and not yet deleted any; the steady
// state of a busy canister (BenchmarkRBTreeWitness reports it) nests the same at these sizes.
func TestRBTreeWitnessDepth(t *testing.T) {
	dec, err := cbor.DecOptions{MaxNestedLevels: 256}.DecMode()
	if err != nil {
		t.Fatal(err)
	}
	// agent-go decodes at most 32 nested levels.
	checks := []struct{ retained, minDepth int }{{10_000, 0}, {40_000, 0}, {100_000, 33}}
	var tree rbTree
	value := valueOf("message") // values do not shape the tree
	for _, c := range checks {
		for i := tree.len(); i < c.retained; i++ {
			tree.insert(messageKey(i), value)
		}
		w := newestWitness(&tree, c.retained-1)
		if w.Reconstruct() != tree.certifiedData() {
			t.Fatalf("%d retained: witness does not hash to the certified data", c.retained)
		}
		if _, revealed := witnessLabels(w.Tree); len(revealed) != 50 {
			t.Fatalf("%d retained: %d entries revealed, want 50", c.retained, len(revealed))
		}
		d := cborDepth(w)
		t.Logf("%d retained messages (tree height %d): the witness for the newest 50 nests %d CBOR arrays", c.retained, height(tree.root), d)
		if d < c.minDepth {
			t.Fatalf("%d retained: depth %d, want at least %d", c.retained, d, c.minDepth)
		}
		b, err := hashtree.Serialize(w)
		if err != nil {
			t.Fatalf("%d retained: serialize: %v", c.retained, err)
		}
		var back any
		if err := dec.Unmarshal(b, &back); err != nil {
			t.Fatalf("%d retained: decode with 256 levels: %v", c.retained, err)
		}
		if nested := anyDepth(back); nested != d {
			t.Fatalf("%d retained: encoded depth %d, tree depth %d", c.retained, nested, d)
		}
		if again, err := cbor.Marshal(back); err != nil || !bytes.Equal(again, b) {
			t.Fatalf("%d retained: CBOR does not round-trip (%v)", c.retained, err)
		}
	}
}

func anyDepth(v any) int {
	a, ok := v.([]any)
	if !ok {
		return 0
	}
	d := 0
	for _, e := range a {
		d = max(d, anyDepth(e))
	}
	return 1 + d
}

func height(n *rbNode) int {
	if n == nil {
		return 0
	}
	return 1 + max(height(n.left), height(n.right))
}

// BenchmarkRBTreeSend is one send of a busy canister: insert at the end, delete at the front,
// new certified data.
func BenchmarkRBTreeSend(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tree := retainedTree(n)
			next := 2 * n
			value := valueOf("message")
			cpu := processCPU(b)
			for b.Loop() {
				tree.insert(messageKey(next), value)
				tree.delete(messageKey(next - n))
				next++
				_ = tree.certifiedData()
			}
			reportCPU(b, cpu)
		})
	}
}

// BenchmarkRBTreeWitness builds and encodes the witness of the newest 50 messages in a busy
// canister's steady state, and reports how deeply it nests.
func BenchmarkRBTreeWitness(b *testing.B) {
	for _, n := range []int{10_000, 40_000, 70_000, 80_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tree := retainedTree(n)
			var w hashtree.Labeled
			cpu := processCPU(b)
			for b.Loop() {
				w = newestWitness(tree, 2*n-1)
				if _, err := hashtree.Serialize(w); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
			b.ReportMetric(float64(cborDepth(w)), "levels")
		})
	}
}

// processCPU is the CPU time the test process has used. The benchmarks report CPU time per
// operation besides wall time, which on a shared machine mostly measures the other tenants.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64(processCPU(b)-since)/float64(b.N), "cpu-ns/op")
}
