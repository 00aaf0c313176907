package candidwire

import (
	"cmp"
	"encoding/binary"
	"slices"
)

// typeRepresentatives maps every type reachable from roots to one representative of the types
// that describe the same (possibly infinite) type. Structural comparison of table
// entries alone is not enough for recursive types: a table can spell `opt opt opt …` as a cycle
// of one entry or of eight, and re-encoding must not depend on which spelling was read, or a
// decoded message would not encode the same way twice.
//
// It refines a partition (Moore's algorithm): start from each type's own shape, then split
// classes by the classes of their children until nothing splits. Each round costs one pass over
// the types, and there are at most as many rounds as types.
func typeRepresentatives(roots []*Type) map[*Type]*Type {
	var nodes []*Type
	seen := map[*Type]bool{}
	stack := slices.Clone(roots)
	for len(stack) > 0 {
		t := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if t == nil || seen[t] {
			continue
		}
		seen[t] = true
		nodes = append(nodes, t)
		encodingChildren(t, func(c *Type) { stack = append(stack, c) })
	}
	class := make(map[*Type]int, len(nodes))
	count := numberBySignature(nodes, class, func(t *Type, sig []byte) []byte { return appendShape(sig, t) })
	for {
		next := make(map[*Type]int, len(nodes))
		n := numberBySignature(nodes, next, func(t *Type, sig []byte) []byte {
			sig = binary.AppendUvarint(sig, uint64(class[t]))
			encodingChildren(t, func(c *Type) { sig = binary.AppendUvarint(sig, uint64(class[c])) })
			return sig
		})
		class = next
		if n == count {
			break
		}
		count = n
	}
	first := make([]*Type, count)
	rep := make(map[*Type]*Type, len(nodes))
	for _, t := range nodes {
		if first[class[t]] == nil {
			first[class[t]] = t
		}
		rep[t] = first[class[t]]
	}
	return rep
}

// numberBySignature gives every node the number of its signature, in order of first appearance,
// and returns how many numbers it gave.
func numberBySignature(nodes []*Type, class map[*Type]int, signature func(*Type, []byte) []byte) int {
	ids := map[string]int{}
	var sig []byte
	for _, t := range nodes {
		sig = signature(t, sig[:0])
		id, ok := ids[string(sig)]
		if !ok {
			id = len(ids)
			ids[string(sig)] = id
		}
		class[t] = id
	}
	return len(ids)
}

// appendShape appends what a type's table entry holds besides its references to other types.
func appendShape(sig []byte, t *Type) []byte {
	sig = binary.AppendVarint(sig, int64(t.kind))
	switch t.kind {
	case KindRecord, KindVariant:
		sig = binary.AppendUvarint(sig, uint64(len(t.fields)))
		for _, f := range t.fields {
			sig = binary.AppendUvarint(sig, uint64(f.ID))
		}
	case KindFunc:
		sig = binary.AppendUvarint(sig, uint64(len(t.ref.args)))
		sig = binary.AppendUvarint(sig, uint64(len(t.ref.results)))
		sig = binary.AppendUvarint(sig, uint64(len(t.ref.modes)))
		sig = append(sig, t.ref.modes...)
	case KindService:
		methods := sortedMethods(t)
		sig = binary.AppendUvarint(sig, uint64(len(methods)))
		for _, m := range methods {
			sig = binary.AppendUvarint(sig, uint64(len(m.Name)))
			sig = append(sig, m.Name...)
		}
	}
	return sig
}

// encodingChildren calls fn with the types t's table entry refers to, in the entry's order.
func encodingChildren(t *Type, fn func(*Type)) {
	switch t.kind {
	case KindOpt, KindVec:
		fn(t.elem)
	case KindRecord, KindVariant:
		for _, f := range t.fields {
			fn(f.Type)
		}
	case KindFunc:
		for _, a := range t.ref.args {
			fn(a)
		}
		for _, r := range t.ref.results {
			fn(r)
		}
	case KindService:
		for _, m := range sortedMethods(t) {
			fn(m.Type)
		}
	}
}

// sortedMethods returns a service's methods in the order its table entry lists them.
func sortedMethods(t *Type) []Method {
	return slices.SortedFunc(slices.Values(t.ref.methods), func(a, b Method) int { return cmp.Compare(a.Name, b.Name) })
}
