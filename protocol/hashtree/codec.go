package hashtree

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/icws/icws/protocol/internal/cborread"
	"github.com/icws/icws/protocol/internal/cborwrite"
)

// Decoder bounds. A ws_get_messages witness of ic-certification's RbTree takes up to two nodes per
// level of the red-black tree, about 70 nodes deep at 100,000 retained messages; a mainnet
// read_state answer has a few hundred nodes.
const (
	// MaxDepth is the deepest node Decode accepts, counting the root as depth 1: a leaf under 127
	// nested forks or labels is at depth 128.
	MaxDepth = 128
	// MaxNodes is the largest number of nodes Decode accepts.
	MaxNodes = 1 << 17
	// MaxInputBytes is the largest encoding Decode accepts.
	MaxInputBytes = 16 << 20
)

// Errors returned by Decode, wrapped with where the input went wrong.
var (
	ErrMalformed = errors.New("hash tree: malformed")
	ErrTooDeep   = fmt.Errorf("hash tree: deeper than %d nodes", MaxDepth)
	ErrTooLarge  = errors.New("hash tree: too large")
)

// Decode parses the CBOR encoding of a hash tree, with or without a leading self-describe tag.
// The returned tree does not alias data.
func Decode(data []byte) (*Node, error) {
	if len(data) > MaxInputBytes {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, len(data), MaxInputBytes)
	}
	r := cborread.New(bytes.Clone(data))
	r.SkipSelfDescribe()
	n, err := decodeFrom(r)
	if err != nil {
		return nil, err
	}
	if err := r.End(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return n, nil
}

// DecodeFrom parses one hash tree at r's position, leaving r after it. Slices of the tree alias
// r's input.
func DecodeFrom(r *cborread.Reader) (*Node, error) { return decodeFrom(r) }

// decodeFrom builds the tree in one pass with an explicit stack of the forks and labels still
// waiting for subtrees; the stack never exceeds MaxDepth.
func decodeFrom(r *cborread.Reader) (*Node, error) {
	var (
		open  []*Node // incomplete Fork and Labeled nodes, innermost last
		slab  []Node  // nodes are carved from slabs to allocate in bulk
		count int
		root  *Node
	)
	alloc := func() *Node {
		if len(slab) == cap(slab) {
			// Each node takes at least two bytes of input, so the input bounds the slab sizes.
			size := min(max(2*cap(slab), 16), 4096, r.Remaining()/2+1)
			slab = make([]Node, 0, size)
		}
		slab = slab[:len(slab)+1]
		return &slab[len(slab)-1]
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: offset %d: %s", ErrMalformed, r.Offset(), fmt.Sprintf(format, args...))
	}
	for {
		if len(open)+1 > MaxDepth {
			return nil, fmt.Errorf("%w (at offset %d)", ErrTooDeep, r.Offset())
		}
		if count++; count > MaxNodes {
			return nil, fmt.Errorf("%w: more than %d nodes", ErrTooLarge, MaxNodes)
		}
		size, err := r.ArrayHeader()
		if err != nil {
			return nil, fail("node: %v", err)
		}
		if size == 0 {
			return nil, fail("node: empty array")
		}
		tag, err := r.Uint()
		if err != nil {
			return nil, fail("node tag: %v", err)
		}
		if tag > uint64(Pruned) || size != arity[tag] {
			return nil, fail("node tag %d with %d elements", tag, size)
		}
		n := alloc()
		n.kind = Kind(tag)
		switch n.kind {
		case Fork:
			open = append(open, n)
			continue
		case Labeled:
			if n.data, err = r.Bytes(); err != nil {
				return nil, fail("label: %v", err)
			}
			open = append(open, n)
			continue
		case Leaf:
			if n.data, err = r.Bytes(); err != nil {
				return nil, fail("leaf: %v", err)
			}
		case Pruned:
			if n.data, err = r.Bytes(); err != nil {
				return nil, fail("pruned hash: %v", err)
			}
			if len(n.data) != 32 {
				return nil, fail("pruned hash of %d bytes", len(n.data))
			}
		}
		// n is complete: hang it under the innermost open node, closing every node it completes.
		for {
			if len(open) == 0 {
				root = n
				return root, nil
			}
			parent := open[len(open)-1]
			switch {
			case parent.kind == Labeled:
				parent.left = n
			case parent.left == nil:
				parent.left = n
				n = nil
			default:
				parent.right = n
			}
			if n == nil {
				break // the fork still waits for its right subtree
			}
			open = open[:len(open)-1]
			n = parent
		}
	}
}

// arity is the array length of each node kind's encoding.
var arity = [...]int{Empty: 1, Fork: 3, Labeled: 3, Leaf: 2, Pruned: 2}

// Encode returns the CBOR encoding of the tree, without self-describe tag.
func (n *Node) Encode() []byte { return n.AppendEncode(nil) }

// AppendEncode appends the CBOR encoding of the tree (as Encode) to out.
func (n *Node) AppendEncode(out []byte) []byte {
	todo := []*Node{n}
	for len(todo) > 0 {
		n := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch n.Kind() {
		case Empty:
			out = append(out, 0x81, 0x00)
		case Fork:
			out = append(out, 0x83, 0x01)
			todo = append(todo, n.right, n.left)
		case Labeled:
			out = cborwrite.AppendBytes(append(out, 0x83, 0x02), n.data)
			todo = append(todo, n.left)
		case Leaf:
			out = cborwrite.AppendBytes(append(out, 0x82, 0x03), n.data)
		case Pruned:
			out = cborwrite.AppendBytes(append(out, 0x82, 0x04), n.data)
		}
	}
	return out
}
