package hashtree

import "bytes"

// LookupStatus is the outcome of a lookup, as the specification's lookup_path defines it.
type LookupStatus uint8

const (
	// Found: the path has a value (Lookup) or a subtree (LookupSubtree).
	Found LookupStatus = iota + 1
	// Absent: the tree proves that the path is not there.
	Absent
	// Unknown: the tree was pruned where the path would be, so it proves neither.
	Unknown
	// NotAValue: the path leads to a subtree where Lookup wants a value (the specification's
	// Error).
	NotAValue
)

func (s LookupStatus) String() string {
	switch s {
	case Found:
		return "found"
	case Absent:
		return "absent"
	case Unknown:
		return "unknown"
	case NotAValue:
		return "not a value"
	}
	return "invalid lookup status"
}

// Lookup returns the value at path. The status is Found with the value, or why there is none.
func (n *Node) Lookup(path ...[]byte) ([]byte, LookupStatus) {
	sub, st := n.LookupSubtree(path...)
	if st != Found {
		return nil, st
	}
	switch sub.Kind() {
	case Leaf:
		return sub.data, Found
	case Empty:
		return nil, Absent
	case Pruned:
		return nil, Unknown
	}
	return nil, NotAValue
}

// LookupSubtree returns the subtree at path (the tree itself for an empty path), or Absent or
// Unknown.
func (n *Node) LookupSubtree(path ...[]byte) (*Node, LookupStatus) {
	for _, label := range path {
		var st LookupStatus
		if n, st = findLabel(n, label); st != Found {
			return nil, st
		}
	}
	return n, Found
}

// findLabel is the specification's find_label(label, flatten_forks(n)): it walks the forks of n
// in order, skipping empty trees, and decides from the labeled nodes around where label would
// be. Where the agents (agent-js, agent-rs, agent-go) differ from the specification for an empty
// tree inside a fork (they call some such paths absent), this follows the specification, which
// answers unknown: the cautious reading.
func findLabel(n *Node, label []byte) (*Node, LookupStatus) {
	t, st := findLabeled(n, label)
	if st != Found {
		return nil, st
	}
	return t.left, Found
}

// findLabeled is findLabel returning the labeled node itself.
func findLabeled(n *Node, label []byte) (*Node, LookupStatus) {
	var stack [16]*Node
	t, st, _ := findLabeledWith(stack[:0], n, label)
	return t, st
}

// findLabeledWith is findLabeled walking with todo (its contents ignored) as its stack, which it
// returns for the next walk.
func findLabeledWith(todo []*Node, n *Node, label []byte) (*Node, LookupStatus, []*Node) {
	var (
		seen int  // nodes of the flattened list visited so far
		last Kind // kind of the previous one
	)
	todo = append(todo[:0], n)
	for len(todo) > 0 {
		t := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch t.Kind() {
		case Empty:
			continue
		case Fork:
			todo = append(todo, t.right, t.left)
			continue
		case Labeled:
			switch c := bytes.Compare(label, t.data); {
			case c == 0:
				return t, Found, todo
			case c < 0:
				// label would sit before t: proven absent only if nothing pruned sits before t
				// and after the previous label.
				if seen == 0 || last == Labeled {
					return nil, Absent, todo
				}
				return nil, Unknown, todo
			}
		}
		seen++
		last = t.Kind()
	}
	switch {
	case seen == 0, last == Labeled:
		return nil, Absent, todo
	case seen == 1 && last == Leaf:
		return nil, Absent, todo
	}
	return nil, Unknown, todo
}

// Children returns the labeled nodes directly under n (n's forks flattened), in order; complete
// is false when a pruned subtree or a leaf among them may hide others.
func (n *Node) Children() (children []*Node, complete bool) {
	complete = true
	todo := []*Node{n}
	for len(todo) > 0 {
		t := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch t.Kind() {
		case Fork:
			todo = append(todo, t.right, t.left)
		case Labeled:
			children = append(children, t)
		case Pruned, Leaf:
			complete = false
		}
	}
	return children, complete
}
