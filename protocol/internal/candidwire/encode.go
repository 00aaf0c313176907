package candidwire

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// Encode writes values as a Candid message of the given argument types. The type table lists a
// type after the types it refers to, record fields and variant cases in id order, and structurally
// equal types once, in the order the types are first met: the layout @dfinity/candid produces, so
// that ic-websocket-js's own messages come out byte for byte.
func Encode(types []*Type, values []Value) ([]byte, error) {
	if len(types) != len(values) {
		return nil, fmt.Errorf("candid: %d types for %d values", len(types), len(values))
	}
	tb, refs, err := buildTable(types, nil)
	if err != nil {
		return nil, err
	}
	if tb.recursive {
		// Structural comparison of entries names each non-recursive type once, but a
		// recursive type can be spelled in many ways (`opt opt …` as a cycle of one entry or
		// of eight); name each type by its class so that a decoded message encodes the same way
		// whichever spelling it was read in.
		if tb, refs, err = buildTable(types, typeRepresentatives(types)); err != nil {
			return nil, err
		}
	}
	out := []byte(magic)
	out = appendULEB(out, uint64(len(tb.entries)))
	for _, e := range tb.entries {
		out = append(out, e...)
	}
	out = appendULEB(out, uint64(len(refs)))
	for _, r := range refs {
		out = appendSLEB(out, r)
	}
	for i, t := range types {
		if out, err = appendValue(out, t, values[i], 0); err != nil {
			return nil, fmt.Errorf("candid: argument %d: %w", i, err)
		}
	}
	if len(out) > MaxMessageSize {
		return nil, fmt.Errorf("candid: message of %d bytes exceeds %d", len(out), MaxMessageSize)
	}
	return out, nil
}

// buildTable writes the type table for types; rep, if not nil, maps each type to the
// representative of the types equal to it.
func buildTable(types []*Type, rep map[*Type]*Type) (*tableBuilder, []int64, error) {
	tb := &tableBuilder{rep: rep, index: map[*Type]int64{}, byEntry: map[string]int64{}, building: map[*Type]bool{}}
	refs := make([]int64, len(types))
	for i, t := range types {
		r, err := tb.ref(t)
		if err != nil {
			return nil, nil, fmt.Errorf("candid: argument %d: %w", i, err)
		}
		refs[i] = r
	}
	return tb, refs, nil
}

type tableBuilder struct {
	entries [][]byte
	rep     map[*Type]*Type
	index   map[*Type]int64
	byEntry map[string]int64
	// building holds the types whose entry is being built; meeting one again (a recursive
	// type) reserves its slot.
	building  map[*Type]bool
	recursive bool
}

// ref returns the reference to t, adding its entry (and those of the types it refers to) to the
// table. The recursion is bounded by the number of distinct types: a type met again while its
// entry is being built (a recursive type) gets its slot reserved instead.
func (tb *tableBuilder) ref(t *Type) (int64, error) {
	if t == nil {
		return 0, errors.New("nil type")
	}
	if t.kind.primitive() {
		return int64(t.kind), nil
	}
	if r, ok := tb.rep[t]; ok {
		t = r
	}
	if i, ok := tb.index[t]; ok {
		return i, nil
	}
	if tb.building[t] {
		tb.recursive = true
		i := int64(len(tb.entries))
		tb.entries = append(tb.entries, nil)
		tb.index[t] = i
		return i, nil
	}
	tb.building[t] = true
	defer delete(tb.building, t)
	entry := appendSLEB(nil, int64(t.kind))
	switch t.kind {
	case KindOpt, KindVec:
		r, err := tb.ref(t.elem)
		if err != nil {
			return 0, err
		}
		entry = appendSLEB(entry, r)
	case KindRecord, KindVariant:
		entry = appendULEB(entry, uint64(len(t.fields)))
		for _, f := range t.fields {
			r, err := tb.ref(f.Type)
			if err != nil {
				return 0, err
			}
			entry = appendSLEB(appendULEB(entry, uint64(f.ID)), r)
		}
	case KindFunc:
		for _, list := range [][]*Type{t.ref.args, t.ref.results} {
			entry = appendULEB(entry, uint64(len(list)))
			for _, a := range list {
				r, err := tb.ref(a)
				if err != nil {
					return 0, err
				}
				entry = appendSLEB(entry, r)
			}
		}
		entry = appendULEB(entry, uint64(len(t.ref.modes)))
		entry = append(entry, t.ref.modes...)
	case KindService:
		methods := sortedMethods(t)
		entry = appendULEB(entry, uint64(len(methods)))
		for _, m := range methods {
			r, err := tb.ref(m.Type)
			if err != nil {
				return 0, err
			}
			entry = appendULEB(entry, uint64(len(m.Name)))
			entry = appendSLEB(append(entry, m.Name...), r)
		}
	default:
		return 0, fmt.Errorf("cannot encode type %s", t.kind)
	}
	if i, ok := tb.index[t]; ok { // slot reserved by a recursive reference
		tb.entries[i] = entry
		return i, nil
	}
	if i, ok := tb.byEntry[string(entry)]; ok {
		tb.index[t] = i
		return i, nil
	}
	i := int64(len(tb.entries))
	tb.entries = append(tb.entries, entry)
	tb.index[t] = i
	tb.byEntry[string(entry)] = i
	return i, nil
}

func appendValue(out []byte, t *Type, v Value, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return nil, errDepth
	}
	switch t.kind {
	case KindNull, KindReserved:
		return out, nil
	case KindBool:
		if v.n > 1 {
			return nil, errors.New("bool value is neither 0 nor 1")
		}
		return append(out, byte(v.n)), nil
	case KindNat:
		return appendULEB(out, v.n), nil
	case KindInt:
		return appendSLEB(out, int64(v.n)), nil
	case KindNat8, KindNat16, KindNat32, KindNat64, KindInt8, KindInt16, KindInt32, KindInt64, KindFloat32, KindFloat64:
		if !fits(t.kind, v.n) {
			return nil, fmt.Errorf("value %d does not fit %s", v.n, t.kind)
		}
		x := v.n
		for range t.kind.fixedSize() {
			out = append(out, byte(x))
			x >>= 8
		}
		return out, nil
	case KindText:
		if !utf8.Valid(v.b) {
			return nil, errors.New("text is not valid UTF-8")
		}
		return append(appendULEB(out, uint64(len(v.b))), v.b...), nil
	case KindPrincipal, KindService:
		return appendPrincipal(out, v.b)
	case KindFunc:
		if len(v.elems) != 1 {
			return nil, errors.New("func value without a method name")
		}
		out, err := appendPrincipal(append(out, 1), v.b)
		if err != nil {
			return nil, err
		}
		method := v.elems[0].b
		if !utf8.Valid(method) {
			return nil, errors.New("method name is not valid UTF-8")
		}
		return append(appendULEB(out, uint64(len(method))), method...), nil
	case KindOpt:
		switch len(v.elems) {
		case 0:
			return append(out, 0), nil
		case 1:
			return appendValue(append(out, 1), t.elem, v.elems[0], depth+1)
		}
		return nil, errors.New("opt value with several values")
	case KindVec:
		if size := t.elem.kind.fixedSize(); size > 0 && v.elems == nil {
			if len(v.b)%size != 0 {
				return nil, fmt.Errorf("packed %s vector of %d bytes", t.elem.kind, len(v.b))
			}
			if t.elem.kind == KindBool && !bools(v.b) {
				return nil, errors.New("bool value is neither 0 nor 1")
			}
			return append(appendULEB(out, uint64(len(v.b)/size)), v.b...), nil
		}
		out = appendULEB(out, uint64(len(v.elems)))
		var err error
		for i, el := range v.elems {
			if out, err = appendValue(out, t.elem, el, depth+1); err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
		}
		return out, nil
	case KindRecord:
		if len(v.elems) != len(t.fields) {
			return nil, fmt.Errorf("record value with %d fields for a type with %d", len(v.elems), len(t.fields))
		}
		var err error
		for i, f := range t.fields {
			if out, err = appendValue(out, f.Type, v.elems[i], depth+1); err != nil {
				return nil, fmt.Errorf("field %s: %w", fieldName(f), err)
			}
		}
		return out, nil
	case KindVariant:
		if v.n >= uint64(len(t.fields)) || len(v.elems) != 1 {
			return nil, errors.New("variant value without a case of its type")
		}
		f := t.fields[v.n]
		out, err := appendValue(appendULEB(out, v.n), f.Type, v.elems[0], depth+1)
		if err != nil {
			return nil, fmt.Errorf("case %s: %w", fieldName(f), err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot encode a value of %s", t.kind)
}

func appendPrincipal(out, p []byte) ([]byte, error) {
	if len(p) > maxPrincipalLen {
		return nil, fmt.Errorf("principal of %d bytes exceeds %d", len(p), maxPrincipalLen)
	}
	return append(append(out, 1, byte(len(p))), p...), nil
}

// fits reports whether n (two's complement for signed kinds) is a value of the fixed-size kind k.
func fits(k Kind, n uint64) bool {
	i := int64(n)
	switch k {
	case KindNat8:
		return n <= math.MaxUint8
	case KindNat16:
		return n <= math.MaxUint16
	case KindNat32, KindFloat32:
		return n <= math.MaxUint32
	case KindInt8:
		return i >= math.MinInt8 && i <= math.MaxInt8
	case KindInt16:
		return i >= math.MinInt16 && i <= math.MaxInt16
	case KindInt32:
		return i >= math.MinInt32 && i <= math.MaxInt32
	}
	return true
}

func appendULEB(out []byte, x uint64) []byte {
	for x >= 0x80 {
		out = append(out, byte(x)|0x80)
		x >>= 7
	}
	return append(out, byte(x))
}

func appendSLEB(out []byte, x int64) []byte {
	for {
		c := byte(x & 0x7f)
		x >>= 7
		if (x == 0 && c&0x40 == 0) || (x == -1 && c&0x40 != 0) {
			return append(out, c)
		}
		out = append(out, c|0x80)
	}
}
