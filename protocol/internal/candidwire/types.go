// Package candidwire encodes and decodes Candid messages (the "DIDL" binary format) with hard bounds,
// so that bytes from the network can be decoded without risk: the input size, the type table, every
// declared length and the nesting depth are checked against what the input can hold, and a work
// budget proportional to the input bounds the values decoded or skipped.
//
// Decoding follows Candid's subtyping as Rust's candid crate 0.10 (the version under
// ic-websocket-cdk 0.4.1) applies it when a canister decodes its arguments: record fields are
// matched by id, unknown fields are skipped, a missing opt, null or reserved field reads as none,
// and a value that does not fit an expected opt reads as none (the "special opt rule").
package candidwire

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Kind is a Candid type constructor. Its value is the constructor's opcode in the binary format.
type Kind int8

// The Candid type constructors.
const (
	KindNull      Kind = -1
	KindBool      Kind = -2
	KindNat       Kind = -3
	KindInt       Kind = -4
	KindNat8      Kind = -5
	KindNat16     Kind = -6
	KindNat32     Kind = -7
	KindNat64     Kind = -8
	KindInt8      Kind = -9
	KindInt16     Kind = -10
	KindInt32     Kind = -11
	KindInt64     Kind = -12
	KindFloat32   Kind = -13
	KindFloat64   Kind = -14
	KindText      Kind = -15
	KindReserved  Kind = -16
	KindEmpty     Kind = -17
	KindOpt       Kind = -18
	KindVec       Kind = -19
	KindRecord    Kind = -20
	KindVariant   Kind = -21
	KindFunc      Kind = -22
	KindService   Kind = -23
	KindPrincipal Kind = -24
)

func (k Kind) String() string {
	switch k {
	case KindNull:
		return "null"
	case KindBool:
		return "bool"
	case KindNat:
		return "nat"
	case KindInt:
		return "int"
	case KindNat8:
		return "nat8"
	case KindNat16:
		return "nat16"
	case KindNat32:
		return "nat32"
	case KindNat64:
		return "nat64"
	case KindInt8:
		return "int8"
	case KindInt16:
		return "int16"
	case KindInt32:
		return "int32"
	case KindInt64:
		return "int64"
	case KindFloat32:
		return "float32"
	case KindFloat64:
		return "float64"
	case KindText:
		return "text"
	case KindReserved:
		return "reserved"
	case KindEmpty:
		return "empty"
	case KindOpt:
		return "opt"
	case KindVec:
		return "vec"
	case KindRecord:
		return "record"
	case KindVariant:
		return "variant"
	case KindFunc:
		return "func"
	case KindService:
		return "service"
	case KindPrincipal:
		return "principal"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// primitive reports whether k is written as its opcode wherever a type is referenced (it has no
// type table entry).
func (k Kind) primitive() bool {
	return (k <= KindNull && k >= KindEmpty) || k == KindPrincipal
}

// fixedSize is the wire size of every value of k, or 0 when values of k vary in size.
func (k Kind) fixedSize() int {
	switch k {
	case KindBool, KindNat8, KindInt8:
		return 1
	case KindNat16, KindInt16:
		return 2
	case KindNat32, KindInt32, KindFloat32:
		return 4
	case KindNat64, KindInt64, KindFloat64:
		return 8
	}
	return 0
}

// optional reports whether a value of kind k may be absent: a record field or trailing argument of
// this kind that is not on the wire reads as none (opt), null or reserved.
func (k Kind) optional() bool {
	return k == KindOpt || k == KindNull || k == KindReserved
}

// Type is a Candid type. Types built with the constructors below are never modified; the decoder
// builds the types of a message's type table, which may be recursive.
type Type struct {
	kind   Kind
	elem   *Type   // opt, vec
	fields []Field // record, variant: sorted by id
	// declared maps the order in which the fields were given to Record or Variant to their
	// index in fields; nil for types read from the wire, whose fields come sorted.
	declared []int
	ref      *refType // func, service
	// zeroSized is set on wire types whose values may take no bytes (null, reserved and
	// records of those): a vector of them is bounded by the work budget, not by its bytes.
	zeroSized bool
	// entry is the type's index in the type table it was read from, plus one (0: not read
	// from a table).
	entry int32
}

// children calls fn with every type t refers to directly, until fn returns false.
func (t *Type) children(fn func(*Type) bool) bool {
	if t.elem != nil && !fn(t.elem) {
		return false
	}
	for _, f := range t.fields {
		if !fn(f.Type) {
			return false
		}
	}
	if t.ref != nil {
		for _, list := range [][]*Type{t.ref.args, t.ref.results} {
			for _, c := range list {
				if !fn(c) {
					return false
				}
			}
		}
		for _, m := range t.ref.methods {
			if !fn(m.Type) {
				return false
			}
		}
	}
	return true
}

// refType holds the parts of a func or service type.
type refType struct {
	args, results []*Type
	modes         []byte // func annotations: 1 query, 2 oneway, 3 composite_query
	methods       []Method
}

// Field is a record field or variant case.
type Field struct {
	Name string // empty for types read from the wire, which carry ids only
	ID   uint32
	Type *Type
}

// Method is a service method; its type is a func type.
type Method struct {
	Name string
	Type *Type
}

// Kind returns the type's constructor.
func (t *Type) Kind() Kind { return t.kind }

// Elem returns the element type of an opt or vec.
func (t *Type) Elem() *Type { return t.elem }

// Fields returns the fields of a record or the cases of a variant, sorted by id. The slice must
// not be modified.
func (t *Type) Fields() []Field { return t.fields }

// fieldIndex finds the field with the given id by binary search.
func (t *Type) fieldIndex(id uint32) (int, bool) {
	return slices.BinarySearchFunc(t.fields, id, func(f Field, id uint32) int { return cmp.Compare(f.ID, id) })
}

// Prim returns the primitive type of kind k (null, bool, nat, int, the sized numbers, float32,
// float64, text, reserved, empty or principal).
func Prim(k Kind) *Type {
	if !k.primitive() {
		panic("candidwire.Prim: " + k.String() + " is not a primitive type")
	}
	return &Type{kind: k, zeroSized: k == KindNull || k == KindReserved}
}

// Opt returns opt t.
func Opt(t *Type) *Type { return &Type{kind: KindOpt, elem: t} }

// Vec returns vec t.
func Vec(t *Type) *Type { return &Type{kind: KindVec, elem: t} }

// Blob returns blob, the same type as vec nat8.
func Blob() *Type { return Vec(Prim(KindNat8)) }

// F is a named record field or variant case; its id is the Candid hash of the name.
func F(name string, t *Type) Field { return Field{Name: name, ID: Hash(name), Type: t} }

// FieldID is a record field or variant case given by its id (as in tuples).
func FieldID(id uint32, t *Type) Field { return Field{ID: id, Type: t} }

// Record returns record { fields }. Values of the record list their fields in the order given
// here. It panics when two fields share an id, which is a programming error.
func Record(fields ...Field) *Type { return composite(KindRecord, fields) }

// Variant returns variant { cases }. It panics when two cases share an id.
func Variant(cases ...Field) *Type { return composite(KindVariant, cases) }

func composite(k Kind, fields []Field) *Type {
	order := make([]int, len(fields))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(fields[a].ID, fields[b].ID) })
	t := &Type{kind: k, fields: make([]Field, len(fields)), declared: make([]int, len(fields))}
	for sorted, i := range order {
		if sorted > 0 && fields[i].ID == t.fields[sorted-1].ID {
			panic(fmt.Sprintf("candidwire: %s fields %q and %q have the same id %d", k, t.fields[sorted-1].Name, fields[i].Name, fields[i].ID))
		}
		t.fields[sorted] = fields[i]
		t.declared[i] = sorted
	}
	return t
}

// Hash is the Candid id of a field name: the name's bytes folded as h = h*223 + b mod 2^32.
func Hash(name string) uint32 {
	var h uint32
	for i := 0; i < len(name); i++ {
		h = h*223 + uint32(name[i])
	}
	return h
}

// String renders the type in Candid syntax, with nested types shown down to a small depth (error
// messages stay short whatever the wire declared).
func (t *Type) String() string {
	var b strings.Builder
	t.write(&b, 3)
	return b.String()
}

func (t *Type) write(b *strings.Builder, depth int) {
	switch {
	case t == nil:
		b.WriteString("<nil>")
		return
	case t.kind.primitive():
		b.WriteString(t.kind.String())
		return
	case depth == 0:
		b.WriteString(t.kind.String())
		b.WriteString(" {…}")
		return
	}
	switch t.kind {
	case KindOpt, KindVec:
		b.WriteString(t.kind.String())
		b.WriteByte(' ')
		t.elem.write(b, depth-1)
	case KindRecord, KindVariant:
		b.WriteString(t.kind.String())
		b.WriteString(" {")
		for i, f := range t.fields {
			if i == 8 {
				fmt.Fprintf(b, " …%d more;", len(t.fields)-i)
				break
			}
			if f.Name != "" {
				b.WriteString(" " + f.Name)
			} else {
				b.WriteString(" " + strconv.FormatUint(uint64(f.ID), 10))
			}
			if t.kind == KindRecord || f.Type.kind != KindNull {
				b.WriteString(" : ")
				f.Type.write(b, depth-1)
			}
			b.WriteByte(';')
		}
		b.WriteString(" }")
	default:
		b.WriteString(t.kind.String())
		b.WriteString(" {…}")
	}
}
