package hashtree

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrNotWellFormed is returned (wrapped) by WellFormed.
var ErrNotWellFormed = errors.New("hash tree: not well formed")

// WellFormed checks that n is well formed as the specification defines it (section
// Certification): in the forks flattened under every node, labels strictly increase and no leaf
// stands beside them; a leaf is well formed only as a whole (sub)tree. Lookups reason from that
// order when they prove a path absent, so a tree that breaks it must not be believed; the IC only
// produces well-formed trees.
func (n *Node) WellFormed() error {
	// forests are the nodes whose flattened forks still need checking.
	forests := []*Node{n}
	var flat []*Node
	for len(forests) > 0 {
		t := forests[len(forests)-1]
		forests = forests[:len(forests)-1]
		if t.Kind() == Leaf {
			continue
		}
		var prev []byte
		seen := false
		flat = append(flat[:0], t)
		for len(flat) > 0 {
			x := flat[len(flat)-1]
			flat = flat[:len(flat)-1]
			switch x.Kind() {
			case Fork:
				flat = append(flat, x.right, x.left)
			case Leaf:
				return fmt.Errorf("%w: a leaf beside other nodes", ErrNotWellFormed)
			case Labeled:
				if seen && bytes.Compare(prev, x.data) >= 0 {
					return fmt.Errorf("%w: label %x after %x", ErrNotWellFormed, x.data, prev)
				}
				prev, seen = x.data, true
				forests = append(forests, x.left)
			}
		}
	}
	return nil
}
