package candidwire

import "fmt"

// header reads the type table and the argument types. Every count is checked against the bytes
// left before anything is allocated for it, and the table is checked for nesting depth.
func (d *decoder) header() ([]*Type, error) {
	n, err := d.count("type table size", 2)
	if err != nil {
		return nil, err
	}
	if n > maxTableEntries {
		return nil, fmt.Errorf("type table of %d entries exceeds %d", n, maxTableEntries)
	}
	tp := tableParser{d: d, table: make([]*Type, n), budget: maxTableFields}
	backing := make([]Type, n)
	for i := range tp.table {
		backing[i].entry = int32(i + 1)
		tp.table[i] = &backing[i]
	}
	for i := range tp.table {
		if err := tp.entry(i); err != nil {
			return nil, fmt.Errorf("type table entry %d: %w", i, err)
		}
	}
	if err := tp.validate(); err != nil {
		return nil, err
	}
	nargs, err := d.count("argument count", 1)
	if err != nil {
		return nil, err
	}
	args := make([]*Type, nargs)
	for i := range args {
		if args[i], _, err = tp.ref(); err != nil {
			return nil, fmt.Errorf("argument type %d: %w", i, err)
		}
	}
	return args, nil
}

type tableParser struct {
	d      *decoder
	table  []*Type
	budget int // fields, cases, func arguments and results and methods left
}

// ref reads a type reference: a table index, or the opcode of a primitive type. It returns the
// table index too (-1 for a primitive).
func (tp *tableParser) ref() (*Type, int, error) {
	x, err := tp.d.sleb()
	if err != nil {
		return nil, -1, err
	}
	switch {
	case x >= 0:
		if x >= int64(len(tp.table)) {
			return nil, -1, fmt.Errorf("type index %d out of a table of %d", x, len(tp.table))
		}
		return tp.table[x], int(x), nil
	case x >= int64(KindEmpty) || x == int64(KindPrincipal):
		return &tp.d.prims[-x-1], -1, nil
	}
	return nil, -1, fmt.Errorf("opcode %d is not a type reference", x)
}

// items reads a count of table items (fields, cases, arguments, methods), each at least perItem
// bytes long, and charges it to the table's budget.
func (tp *tableParser) items(what string, perItem int) (int, error) {
	n, err := tp.d.count(what, perItem)
	if err != nil {
		return 0, err
	}
	if n > tp.budget {
		return 0, fmt.Errorf("type table holds more than %d fields, arguments and methods", maxTableFields)
	}
	tp.budget -= n
	return n, nil
}

func (tp *tableParser) entry(i int) error {
	t := tp.table[i]
	op, err := tp.d.sleb()
	if err != nil {
		return err
	}
	switch Kind(op) {
	case KindOpt, KindVec:
		t.kind = Kind(op)
		elem, _, err := tp.ref()
		if err != nil {
			return err
		}
		t.elem = elem
	case KindRecord, KindVariant:
		t.kind = Kind(op)
		n, err := tp.items("field count", 2)
		if err != nil {
			return err
		}
		t.fields = make([]Field, n)
		for j := range t.fields {
			id, err := tp.d.uleb()
			if err != nil {
				return err
			}
			if id > 1<<32-1 {
				return fmt.Errorf("field id %d exceeds 32 bits", id)
			}
			if j > 0 && uint32(id) <= t.fields[j-1].ID {
				return fmt.Errorf("field id %d not above the previous %d", id, t.fields[j-1].ID)
			}
			ft, _, err := tp.ref()
			if err != nil {
				return err
			}
			t.fields[j] = Field{ID: uint32(id), Type: ft}
		}
	case KindFunc:
		t.kind = KindFunc
		t.ref = &refType{}
		for _, list := range []*[]*Type{&t.ref.args, &t.ref.results} {
			n, err := tp.items("func type length", 1)
			if err != nil {
				return err
			}
			*list = make([]*Type, n)
			for j := range *list {
				at, _, err := tp.ref()
				if err != nil {
					return err
				}
				(*list)[j] = at
			}
		}
		// Rust candid 0.10 reads at most one annotation: query (1), oneway (2) or
		// composite_query (3).
		n, err := tp.d.uleb()
		if err != nil {
			return err
		}
		if n > 1 {
			return fmt.Errorf("func type with %d annotations", n)
		}
		if n == 1 {
			m, err := tp.d.byte()
			if err != nil {
				return err
			}
			if m < 1 || m > 3 {
				return fmt.Errorf("unknown func annotation %d", m)
			}
			t.ref.modes = []byte{m}
		}
	case KindService:
		t.kind = KindService
		t.ref = &refType{}
		n, err := tp.items("method count", 2)
		if err != nil {
			return err
		}
		t.ref.methods = make([]Method, n)
		for j := range t.ref.methods {
			name, err := tp.d.text()
			if err != nil {
				return err
			}
			if j > 0 && string(name) <= t.ref.methods[j-1].Name {
				return fmt.Errorf("method %q not sorted after %q", name, t.ref.methods[j-1].Name)
			}
			mt, idx, err := tp.ref()
			if err != nil {
				return err
			}
			if idx < 0 {
				return fmt.Errorf("method %q has a non-function type", name)
			}
			t.ref.methods[j] = Method{Name: string(name), Type: mt}
		}
	default:
		// Primitive opcodes are not table entries; Rust candid would skip "future" types
		// (opcodes below -24), which no encoder produces: they are refused here.
		return fmt.Errorf("opcode %d is not a type constructor", op)
	}
	return nil
}

// validate checks what needs the whole table: service methods have func types, no type nests
// deeper than MaxDepth (a group of mutually recursive entries counts as its size), and which
// record types take no bytes.
func (tp *tableParser) validate() error {
	for i, t := range tp.table {
		if t.kind != KindService {
			continue
		}
		for _, m := range t.ref.methods {
			if m.Type.kind != KindFunc {
				return fmt.Errorf("type table entry %d: method %q has a non-function type", i, m.Name)
			}
		}
	}
	if err := tp.checkDepth(); err != nil {
		return err
	}
	tp.markZeroSized()
	return nil
}

// checkDepth bounds how deep the table's types nest: no path through the table may visit more
// than MaxDepth distinct entries. Such a path passes through the strongly connected components
// in order, so this also bounds each group of mutually recursive entries to MaxDepth members. A
// depth-first search that gives up beyond MaxDepth levels checks it in time linear in the table.
func (tp *tableParser) checkDepth() error {
	const (
		unvisited = iota
		onPath
		finished
	)
	// longest[i] is the number of entries on the longest path from entry i that the search
	// found, which is exact for entries outside cycles and at least the length of the paths
	// that leave entry i's cycle otherwise.
	state := make([]uint8, len(tp.table))
	longest := make([]int32, len(tp.table))
	var visit func(t *Type, depth int) (int32, error)
	visit = func(t *Type, depth int) (int32, error) {
		i := t.entry - 1
		if depth > MaxDepth {
			return 0, fmt.Errorf("type table entry %d nests more than %d levels", i, MaxDepth)
		}
		switch state[i] {
		case onPath:
			return 0, nil
		case finished:
			if int(longest[i])+depth-1 > MaxDepth {
				return 0, fmt.Errorf("type table entry %d nests more than %d levels", i, MaxDepth)
			}
			return longest[i], nil
		}
		state[i] = onPath
		var below int32
		var err error
		t.children(func(c *Type) bool {
			if c.entry == 0 {
				return true
			}
			var n int32
			n, err = visit(c, depth+1)
			below = max(below, n)
			return err == nil
		})
		if err != nil {
			return 0, err
		}
		state[i], longest[i] = finished, below+1
		return below + 1, nil
	}
	for _, t := range tp.table {
		if _, err := visit(t, 1); err != nil {
			return err
		}
	}
	return nil
}

// markZeroSized sets zeroSized on record entries whose every field may take no bytes. A record
// reached again while being examined counts as zero-sized, the conservative choice: a vector of
// it is then bounded by the work budget alone.
func (tp *tableParser) markZeroSized() {
	const (
		unknown = iota
		visiting
		done
	)
	state := make([]uint8, len(tp.table))
	var zero func(t *Type) bool
	zero = func(t *Type) bool {
		if t.entry == 0 {
			return t.zeroSized // a primitive
		}
		i := t.entry - 1
		switch {
		case state[i] == visiting:
			return true
		case state[i] == done || t.kind != KindRecord:
			return t.zeroSized
		}
		state[i] = visiting
		z := true
		for _, f := range t.fields {
			if z = zero(f.Type); !z {
				break
			}
		}
		t.zeroSized = z
		state[i] = done
		return z
	}
	for _, t := range tp.table {
		zero(t)
	}
}
