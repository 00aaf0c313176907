package hashtree_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	agenttree "github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/icws/icws/protocol/hashtree"
)

// randomTree builds a well-formed tree (sorted labels, balanced forks, empty trees only as whole
// subtrees) of up to depth levels and prunes some subtrees, as the IC does when it answers a
// read_state request.
func randomTree(rng *rand.Rand, depth int) *hashtree.Node {
	if depth == 0 || rng.IntN(4) == 0 {
		switch rng.IntN(6) {
		case 0:
			return hashtree.NewEmpty()
		case 1:
			var h [32]byte
			h[0] = byte(rng.IntN(256))
			return hashtree.NewPruned(h)
		}
		return hashtree.NewLeaf([]byte{byte(rng.IntN(256))})
	}
	var ls []string
	for range 1 + rng.IntN(4) {
		ls = append(ls, string(rune('a'+rng.IntN(6))))
	}
	slices.Sort(ls)
	ls = slices.Compact(ls)
	nodes := make([]*hashtree.Node, len(ls))
	for i, l := range ls {
		nodes[i] = hashtree.NewLabeled([]byte(l), randomTree(rng, depth-1))
	}
	var join func([]*hashtree.Node) *hashtree.Node
	join = func(ns []*hashtree.Node) *hashtree.Node {
		if len(ns) == 1 {
			if rng.IntN(5) == 0 {
				return hashtree.NewPruned(ns[0].Digest())
			}
			return ns[0]
		}
		mid := len(ns) / 2
		f := hashtree.NewFork(join(ns[:mid]), join(ns[mid:]))
		if rng.IntN(8) == 0 {
			return hashtree.NewPruned(f.Digest())
		}
		return f
	}
	return join(nodes)
}

func agentStatus(err error) hashtree.LookupStatus {
	if err == nil {
		return hashtree.Found
	}
	var le agenttree.LookupError
	if !errors.As(err, &le) {
		return 0
	}
	switch le.Type {
	case agenttree.LookupResultAbsent:
		return hashtree.Absent
	case agenttree.LookupResultUnknown:
		return hashtree.Unknown
	case agenttree.LookupResultError:
		return hashtree.NotAValue
	}
	return 0
}

// On the well-formed, pruned trees the IC produces, this package and agent-go (whose lookup is
// the one agent-js and agent-rs use) agree on every root hash and on found / absent / unknown.
func TestAgreesWithAgentGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		tree := randomTree(rng, 4)
		raw := tree.Encode()
		theirs, err := agenttree.Deserialize(raw)
		if err != nil {
			t.Fatalf("tree %d: agent-go cannot decode %x: %v", i, raw, err)
		}
		if theirs.Reconstruct() != tree.Digest() {
			t.Fatalf("tree %d: root hashes differ", i)
		}
		for range 20 {
			var path [][]byte
			var theirPath []agenttree.Label
			for range 1 + rng.IntN(4) {
				l := []byte{byte('a' + rng.IntN(7))}
				path = append(path, l)
				theirPath = append(theirPath, l)
			}
			v, st := tree.Lookup(path...)
			tv, terr := agenttree.Lookup(theirs, theirPath...)
			if ts := agentStatus(terr); ts != st || string(v) != string(tv) {
				t.Fatalf("tree %d %x, path %q: ours %s %x, agent-go %s %x (%v)", i, raw, path, st, v, ts, tv, terr)
			}
		}
	}
}

func ExampleNode_Lookup() {
	tree := hashtree.NewFork(
		hashtree.NewLabeled([]byte("a"), hashtree.NewLeaf([]byte("hello"))),
		hashtree.NewPruned([32]byte{}),
	)
	v, st := tree.Lookup([]byte("a"))
	fmt.Println(string(v), st)
	_, st = tree.Lookup([]byte("b"))
	fmt.Println(st)
	// Output:
	// hello found
	// unknown
}
