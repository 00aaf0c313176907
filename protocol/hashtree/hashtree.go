// Package hashtree implements the IC's hash trees (the "HashTree" of the IC interface
// specification, section Certification): a bounded decoder for trees received from the network,
// the encoder, the root hash, and lookups with the specification's found / absent / unknown
// semantics.
//
// Every walk over a tree is iterative, so a deep tree costs heap, never goroutine stack, and the
// decoder refuses trees deeper than MaxDepth before building anything from them.
package hashtree

import (
	"bytes"
	"crypto/sha256"
)

// Kind is the type of a node; its value is the node's tag in the CBOR encoding.
type Kind uint8

// The five node kinds.
const (
	Empty   Kind = 0
	Fork    Kind = 1
	Labeled Kind = 2
	Leaf    Kind = 3
	Pruned  Kind = 4
)

func (k Kind) String() string {
	switch k {
	case Empty:
		return "empty"
	case Fork:
		return "fork"
	case Labeled:
		return "labeled"
	case Leaf:
		return "leaf"
	case Pruned:
		return "pruned"
	}
	return "unknown kind"
}

// Node is one node of a hash tree. The zero value and a nil *Node are both the empty tree. Nodes
// are immutable once built; decoded nodes share one copy of the input.
type Node struct {
	kind Kind
	// data is the label of a Labeled node, the value of a Leaf, the hash of a Pruned node.
	data []byte
	// left is the left subtree of a Fork and the subtree of a Labeled node; right is the right
	// subtree of a Fork.
	left, right *Node
}

// NewEmpty returns the empty tree.
func NewEmpty() *Node { return &Node{kind: Empty} }

// NewFork joins two trees. A nil subtree is the empty tree.
func NewFork(left, right *Node) *Node { return &Node{kind: Fork, left: left, right: right} }

// NewLabeled puts subtree under label. The label is copied.
func NewLabeled(label []byte, subtree *Node) *Node {
	return &Node{kind: Labeled, data: bytes.Clone(nonNil(label)), left: subtree}
}

// NewLeaf returns a leaf holding value (copied).
func NewLeaf(value []byte) *Node { return &Node{kind: Leaf, data: bytes.Clone(nonNil(value))} }

// NewPruned returns a pruned subtree standing for the subtree whose root hash is digest.
func NewPruned(digest [32]byte) *Node { return &Node{kind: Pruned, data: digest[:]} }

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Kind returns the node's kind.
func (n *Node) Kind() Kind {
	if n == nil {
		return Empty
	}
	return n.kind
}

// Label returns the label of a Labeled node, nil for other kinds. The caller must not modify it.
func (n *Node) Label() []byte {
	if n.Kind() != Labeled {
		return nil
	}
	return n.data
}

// Value returns the value of a Leaf, nil for other kinds. The caller must not modify it.
func (n *Node) Value() []byte {
	if n.Kind() != Leaf {
		return nil
	}
	return n.data
}

// Subtree returns the subtree of a Labeled node, nil for other kinds.
func (n *Node) Subtree() *Node {
	if n.Kind() != Labeled {
		return nil
	}
	return n.left
}

// Left returns the left subtree of a Fork, nil for other kinds.
func (n *Node) Left() *Node {
	if n.Kind() != Fork {
		return nil
	}
	return n.left
}

// Right returns the right subtree of a Fork, nil for other kinds.
func (n *Node) Right() *Node {
	if n.Kind() != Fork {
		return nil
	}
	return n.right
}

// Domain separators of the root hash: byte(len(s)) · s.
var (
	domainEmpty   = domainSep("ic-hashtree-empty")
	domainFork    = domainSep("ic-hashtree-fork")
	domainLabeled = domainSep("ic-hashtree-labeled")
	domainLeaf    = domainSep("ic-hashtree-leaf")
)

// emptyDigest is reconstruct(Empty).
var emptyDigest = sha256.Sum256(domainEmpty)

func domainSep(s string) []byte { return append([]byte{byte(len(s))}, s...) }

// Digest returns the root hash of the tree (the specification's reconstruct), computed without
// recursion.
func (n *Node) Digest() [32]byte {
	type step struct {
		n        *Node
		combined bool // children already hashed: combine them
	}
	h := sha256.New()
	sum := func(parts ...[]byte) [32]byte {
		h.Reset()
		for _, p := range parts {
			h.Write(p)
		}
		var out [32]byte
		h.Sum(out[:0])
		return out
	}
	// Stacks of a witness's depth stay off the heap; deeper trees grow them.
	todo := append(make([]step, 0, 64), step{n: n})
	done := make([][32]byte, 0, 64)
	for len(todo) > 0 {
		s := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch s.n.Kind() {
		case Empty:
			done = append(done, emptyDigest)
		case Leaf:
			done = append(done, sum(domainLeaf, s.n.data))
		case Pruned:
			done = append(done, [32]byte(s.n.data))
		case Labeled:
			if !s.combined {
				todo = append(todo, step{n: s.n, combined: true}, step{n: s.n.left})
				continue
			}
			child := done[len(done)-1]
			done[len(done)-1] = sum(domainLabeled, s.n.data, child[:])
		case Fork:
			if !s.combined {
				// The left subtree is hashed first, so its digest lies below the right one's.
				todo = append(todo, step{n: s.n, combined: true}, step{n: s.n.right}, step{n: s.n.left})
				continue
			}
			l, r := done[len(done)-2], done[len(done)-1]
			done = done[:len(done)-1]
			done[len(done)-1] = sum(domainFork, l[:], r[:])
		}
	}
	return done[0]
}
