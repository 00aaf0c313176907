package candidwire

import "math"

// Value is a Candid value of a known type: the expected type it was decoded to, or the type given
// to its constructor. Its accessors assume that type; on another kind they return zero values.
type Value struct {
	t *Type
	// n holds bool (0 or 1), nat and natN, int and intN (two's complement), the bits of a
	// float32 or float64, and a variant's case as an index into its type's sorted fields.
	n uint64
	// b holds text, principal and blob bytes, the packed little-endian elements of a vec of
	// fixed-size numbers, and a func's principal.
	b []byte
	// elems holds an opt's value (none: empty), a vec's elements, a record's fields in sorted
	// id order, a variant's payload, and a func's method name (as text).
	elems []Value
}

// Type returns the value's type (nil for the zero Value).
func (v Value) Type() *Type { return v.t }

// Bool returns a bool.
func (v Value) Bool() bool { return v.n == 1 }

// Nat returns a nat, nat8, nat16, nat32 or nat64.
func (v Value) Nat() uint64 { return v.n }

// Int returns an int, int8, int16, int32 or int64.
func (v Value) Int() int64 { return int64(v.n) }

// Float returns a float32 or float64.
func (v Value) Float() float64 {
	if v.t != nil && v.t.kind == KindFloat32 {
		return float64(math.Float32frombits(uint32(v.n)))
	}
	return math.Float64frombits(v.n)
}

// Text returns a text.
func (v Value) Text() string { return string(v.b) }

// Bytes returns a blob (vec nat8), a principal's bytes, or the packed little-endian elements of a
// vec of another fixed-size number type.
func (v Value) Bytes() []byte { return v.b }

// Opt returns an opt's value and whether there is one.
func (v Value) Opt() (Value, bool) {
	if len(v.elems) == 0 {
		return Value{}, false
	}
	return v.elems[0], true
}

// Len returns the number of elements of a vec.
func (v Value) Len() int {
	if v.t != nil && v.t.kind == KindVec {
		if size := v.t.elem.kind.fixedSize(); size > 0 && v.elems == nil {
			return len(v.b) / size
		}
	}
	return len(v.elems)
}

// Elems returns the elements of a vec whose elements are not fixed-size numbers (see Bytes).
func (v Value) Elems() []Value { return v.elems }

// Field returns the record field with the given name, or the zero Value if the record's type has
// none.
func (v Value) Field(name string) Value {
	if v.t == nil {
		return Value{}
	}
	i, ok := v.t.fieldIndex(Hash(name))
	if !ok || i >= len(v.elems) {
		return Value{}
	}
	return v.elems[i]
}

// FieldAt returns the i-th record field in id order.
func (v Value) FieldAt(i int) Value {
	if i < 0 || i >= len(v.elems) {
		return Value{}
	}
	return v.elems[i]
}

// Case returns a variant's case (as declared in its type) and its payload.
func (v Value) Case() (Field, Value) {
	if v.t == nil || v.n >= uint64(len(v.t.fields)) || len(v.elems) != 1 {
		return Field{}, Value{}
	}
	return v.t.fields[v.n], v.elems[0]
}

// The constructors below build values to encode. Values of primitive types need no type; the
// encoder checks each against the type it is encoded as.

// NullValue returns the value of null and of reserved.
func NullValue() Value { return Value{} }

// BoolValue returns a bool value.
func BoolValue(b bool) Value {
	if b {
		return Value{n: 1}
	}
	return Value{}
}

// NatValue returns a value of nat, nat8, nat16, nat32 or nat64.
func NatValue(n uint64) Value { return Value{n: n} }

// IntValue returns a value of int, int8, int16, int32 or int64.
func IntValue(i int64) Value { return Value{n: uint64(i)} }

// Float64Value returns a float64 value.
func Float64Value(f float64) Value { return Value{n: math.Float64bits(f)} }

// Float32Value returns a float32 value.
func Float32Value(f float32) Value { return Value{n: uint64(math.Float32bits(f))} }

// TextValue returns a text value.
func TextValue(s string) Value { return Value{b: []byte(s)} }

// BytesValue returns a blob or principal value.
func BytesValue(b []byte) Value { return Value{b: b} }

// Some returns an opt value holding v.
func Some(v Value) Value { return Value{elems: []Value{v}} }

// None returns the empty opt value.
func None() Value { return Value{} }

// VecValue returns a vec value with the given elements.
func VecValue(elems []Value) Value { return Value{elems: elems} }

// RecordValue returns a value of record type t with its fields in the order t was declared with.
// The encoder rejects it if the count does not match.
func RecordValue(t *Type, fields ...Value) Value {
	v := Value{t: t}
	if t == nil || t.kind != KindRecord || len(fields) != len(t.fields) {
		v.elems = fields // wrong shape: the encoder reports it
		return v
	}
	if t.declared == nil {
		v.elems = fields // a type read from the wire: fields in id order already
		return v
	}
	v.elems = make([]Value, len(fields))
	for i, f := range fields {
		v.elems[t.declared[i]] = f
	}
	return v
}

// VariantValue returns the value of variant type t whose case is name, with its payload. The
// encoder rejects it if t has no such case.
func VariantValue(t *Type, name string, payload Value) Value {
	v := Value{t: t, n: math.MaxUint64, elems: []Value{payload}}
	if t != nil {
		if i, ok := t.fieldIndex(Hash(name)); ok {
			v.n = uint64(i)
		}
	}
	return v
}
