package hashtree

import (
	"crypto/sha256"

	"github.com/icws/icws/protocol/internal/cborwrite"
)

// Pruner cuts witnesses for single paths out of one tree: each keeps the path and replaces every
// subtree beside it by a Pruned node holding that subtree's root hash, so the witness has the
// tree's root hash and proves the same value at the path. A ws_get_messages answer carries one
// witness for its whole batch of messages; a witness per message is a fraction of its size. The
// Pruner hashes each subtree of the tree once, however many witnesses it cuts, and a witness then
// costs a walk over the path's labels and the encoding, without allocating.
//
// A Pruner is for trees of at most MaxDepth levels in which no subtree appears twice (every tree
// Decode returns); it is not safe for concurrent use.
type Pruner struct {
	root *Node
	// nodes is the tree flattened in pre-order (a parent before its children), filled on first
	// use; references between them are indexes into it.
	nodes []prunerNode
	ids   map[*Node]int32 // index of each node in nodes
	gen   uint32          // the current witness: nodes with kept == gen are on its path
	todo  []*Node         // scratch of findLabeledWith
}

// prunerNode is one node of the tree, with what the Pruner derives from it.
type prunerNode struct {
	n           *Node
	parent      int32 // -1 for the root
	left, right int32 // -1 for none (a nil subtree is the empty tree)
	digest      [32]byte
	kept        uint32
}

// NewPruner returns a Pruner for root.
func NewPruner(root *Node) *Pruner {
	return &Pruner{root: root}
}

// AppendWitness appends the CBOR encoding (as Encode) of the witness of path to out. ok is false,
// and out is returned unchanged, unless path is Found in the tree (by LookupSubtree); the witness
// then holds the same subtree at path, whole.
func (p *Pruner) AppendWitness(out []byte, path ...[]byte) ([]byte, bool) {
	if len(path) == 0 {
		return p.root.AppendEncode(out), true
	}
	if p.nodes == nil {
		p.index()
	}
	if len(p.nodes) == 0 {
		return out, false // a nil root: the empty tree proves every path absent
	}
	// The labeled node of each path element, found as lookups find them.
	i, last := int32(0), int32(-1)
	for _, label := range path {
		t, st := p.findLabeled(i, label)
		if st != Found {
			return out, false
		}
		last, i = t, p.nodes[t].left
	}
	// The witness keeps the last labeled node and every node above it; the labeled nodes of the
	// path are among them.
	p.gen++
	if p.gen == 0 { // wrapped: no node may still look kept
		for j := range p.nodes {
			p.nodes[j].kept = 0
		}
		p.gen = 1
	}
	for a := last; a >= 0; a = p.nodes[a].parent {
		p.nodes[a].kept = p.gen
	}
	return p.appendKept(out, 0, last, 0), true
}

// findLabeled is findLabeled from node i, answering with the labeled node's index.
func (p *Pruner) findLabeled(i int32, label []byte) (int32, LookupStatus) {
	if i < 0 {
		return -1, Absent // the empty tree, as findLabeled answers for it
	}
	t, st, todo := findLabeledWith(p.todo, p.nodes[i].n, label)
	p.todo = todo
	if st != Found {
		return -1, st
	}
	return p.ids[t], Found
}

// appendKept encodes node i of the witness: kept nodes as they are, the subtree under last whole,
// everything else pruned. depth counts the root as 0.
func (p *Pruner) appendKept(out []byte, i, last int32, depth int) []byte {
	if i < 0 || p.nodes[i].kept != p.gen || depth > MaxDepth {
		return p.appendPruned(out, i)
	}
	pn := &p.nodes[i]
	switch pn.n.kind {
	case Fork:
		out = append(out, 0x83, 0x01)
		out = p.appendKept(out, pn.left, last, depth+1)
		return p.appendKept(out, pn.right, last, depth+1)
	case Labeled:
		out = cborwrite.AppendBytes(append(out, 0x83, 0x02), pn.n.data)
		if i == last {
			return pn.n.left.AppendEncode(out)
		}
		return p.appendKept(out, pn.left, last, depth+1)
	}
	return pn.n.AppendEncode(out)
}

// appendPruned encodes the node that stands for node i in a witness: its hash, unless the node is
// as small.
func (p *Pruner) appendPruned(out []byte, i int32) []byte {
	if i < 0 {
		return (*Node)(nil).AppendEncode(out)
	}
	switch p.nodes[i].n.Kind() {
	case Empty, Pruned:
		return p.nodes[i].n.AppendEncode(out)
	}
	out = append(out, 0x82, 0x04, 0x58, 32)
	return append(out, p.nodes[i].digest[:]...)
}

// index flattens the tree and computes the root hash of every subtree, without recursion, each
// once.
func (p *Pruner) index() {
	type step struct {
		n      *Node
		parent int32
		right  bool // the right subtree of its parent
	}
	todo := []step{{n: p.root, parent: -1}}
	size := 0
	for len(todo) > 0 {
		n := todo[len(todo)-1].n
		todo = todo[:len(todo)-1]
		if n != nil {
			size++
			todo = append(todo, step{n: n.left}, step{n: n.right})
		}
	}
	p.nodes = make([]prunerNode, 0, size)
	p.ids = make(map[*Node]int32, size)
	todo = append(todo, step{n: p.root, parent: -1})
	for len(todo) > 0 {
		s := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if s.n == nil {
			continue // stays -1 in its parent: the empty tree
		}
		i := int32(len(p.nodes))
		p.ids[s.n] = i
		p.nodes = append(p.nodes, prunerNode{n: s.n, parent: s.parent, left: -1, right: -1})
		if s.parent >= 0 {
			if s.right {
				p.nodes[s.parent].right = i
			} else {
				p.nodes[s.parent].left = i
			}
		}
		switch s.n.kind {
		case Fork:
			todo = append(todo, step{n: s.n.right, parent: i, right: true}, step{n: s.n.left, parent: i})
		case Labeled:
			todo = append(todo, step{n: s.n.left, parent: i})
		}
	}
	h := sha256.New()
	var buf [64]byte
	hashParts := func(dst *[32]byte, parts ...[]byte) {
		h.Reset()
		for _, part := range parts {
			h.Write(part)
		}
		h.Sum(buf[:0])
		copy(dst[:], buf[:32])
	}
	digest := func(i int32) *[32]byte {
		if i < 0 {
			return &emptyDigest
		}
		return &p.nodes[i].digest
	}
	// Children come after their parent: hashing from the end finds every child's digest done.
	for i := len(p.nodes) - 1; i >= 0; i-- {
		pn := &p.nodes[i]
		switch pn.n.kind {
		case Fork:
			hashParts(&pn.digest, domainFork, digest(pn.left)[:], digest(pn.right)[:])
		case Labeled:
			hashParts(&pn.digest, domainLabeled, pn.n.data, digest(pn.left)[:])
		case Leaf:
			hashParts(&pn.digest, domainLeaf, pn.n.data)
		case Pruned:
			pn.digest = [32]byte(pn.n.data)
		default:
			pn.digest = emptyDigest
		}
	}
}
