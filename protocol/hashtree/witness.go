package hashtree

import (
	"crypto/sha256"

	"github.com/icws/icws/protocol/internal/cborwrite"
)

// Pruner cuts witnesses for single paths out of one tree: each keeps the path and replaces every
// subtree beside it by a Pruned node holding that subtree's root hash, so the witness has the
// tree's root hash and proves the same value at the path. A ws_get_messages answer carries one
// witness for its whole batch of messages; a witness per message is a fraction of its size. The
// Pruner hashes each subtree of the tree once, however many witnesses it cuts.
//
// A Pruner is for trees of at most MaxDepth levels (every tree Decode returns); it is not safe for
// concurrent use.
type Pruner struct {
	root *Node
	// digests and parents cover every node of the tree, filled on first use.
	digests map[*Node][32]byte
	parents map[*Node]*Node
	spine   []*Node // scratch: the nodes the current witness keeps
}

// NewPruner returns a Pruner for root.
func NewPruner(root *Node) *Pruner {
	return &Pruner{root: root}
}

// AppendWitness appends the CBOR encoding (as Encode) of the witness of path to out. ok is false,
// and out is returned unchanged, unless path is Found in the tree (by LookupSubtree); the witness
// then holds the same subtree at path, whole.
func (p *Pruner) AppendWitness(out []byte, path ...[]byte) ([]byte, bool) {
	if p.digests == nil {
		p.index()
	}
	// The labeled node of each path element, found as lookups find them.
	p.spine = p.spine[:0]
	n := p.root
	var last *Node
	for _, label := range path {
		t, st := findLabeled(n, label)
		if st != Found {
			return out, false
		}
		p.spine = append(p.spine, t)
		last, n = t, t.left
	}
	if last == nil {
		return n.AppendEncode(out), true
	}
	// Every fork between the root and the last labeled node stays a fork.
	for i, end := 0, len(p.spine); i < end; i++ {
		for a := p.parents[p.spine[i]]; a != nil && !p.kept(a); a = p.parents[a] {
			p.spine = append(p.spine, a)
		}
	}
	return p.appendKept(out, p.root, last, 0), true
}

func (p *Pruner) kept(n *Node) bool {
	for _, k := range p.spine {
		if k == n {
			return true
		}
	}
	return false
}

// appendKept encodes n, a node of the witness: kept nodes as they are, the subtree under last
// whole, everything else pruned.
func (p *Pruner) appendKept(out []byte, n, last *Node, depth int) []byte {
	if !p.kept(n) || depth > MaxDepth {
		return p.appendPruned(out, n)
	}
	switch n.kind {
	case Fork:
		out = append(out, 0x83, 0x01)
		out = p.appendKept(out, n.left, last, depth+1)
		return p.appendKept(out, n.right, last, depth+1)
	case Labeled:
		out = cborwrite.AppendBytes(append(out, 0x83, 0x02), n.data)
		if n == last {
			return n.left.AppendEncode(out)
		}
		return p.appendKept(out, n.left, last, depth+1)
	}
	return n.AppendEncode(out)
}

// appendPruned encodes the node that stands for n in a witness: its hash, unless n is as small.
func (p *Pruner) appendPruned(out []byte, n *Node) []byte {
	switch n.Kind() {
	case Empty, Pruned:
		return n.AppendEncode(out)
	}
	d := p.digests[n]
	out = append(out, 0x82, 0x04, 0x58, 32)
	return append(out, d[:]...)
}

// index computes the root hash and the parent of every node, without recursion, each once.
func (p *Pruner) index() {
	size := 0
	for todo := []*Node{p.root}; len(todo) > 0; {
		n := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if n != nil {
			size++
			todo = append(todo, n.left, n.right)
		}
	}
	p.digests = make(map[*Node][32]byte, size)
	p.parents = make(map[*Node]*Node, size)
	h := sha256.New()
	hashParts := func(parts ...[]byte) [32]byte {
		h.Reset()
		for _, part := range parts {
			h.Write(part)
		}
		var sum [32]byte
		h.Sum(sum[:0])
		return sum
	}
	digest := func(n *Node) [32]byte {
		if n == nil {
			return emptyDigest
		}
		return p.digests[n]
	}
	type step struct {
		n        *Node
		combined bool
	}
	todo := []step{{n: p.root}}
	for len(todo) > 0 {
		s := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		n := s.n
		if n == nil {
			continue
		}
		switch n.kind {
		case Fork:
			if !s.combined {
				p.parents[n.left], p.parents[n.right] = n, n
				todo = append(todo, step{n: n, combined: true}, step{n: n.right}, step{n: n.left})
				continue
			}
			l, r := digest(n.left), digest(n.right)
			p.digests[n] = hashParts(domainFork, l[:], r[:])
		case Labeled:
			if !s.combined {
				p.parents[n.left] = n
				todo = append(todo, step{n: n, combined: true}, step{n: n.left})
				continue
			}
			c := digest(n.left)
			p.digests[n] = hashParts(domainLabeled, n.data, c[:])
		case Leaf:
			p.digests[n] = hashParts(domainLeaf, n.data)
		case Pruned:
			p.digests[n] = [32]byte(n.data)
		default:
			p.digests[n] = emptyDigest
		}
	}
	delete(p.parents, nil)
}
