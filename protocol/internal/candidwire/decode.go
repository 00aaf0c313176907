package candidwire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of the decoder. Each is far above what an ic-websocket message needs; beyond them a
// message is refused rather than decoded.
const (
	// MaxMessageSize bounds a whole message: more than any IC ingress message or reply (a query
	// reply is at most 3 MiB).
	MaxMessageSize = 4 << 20
	// MaxDepth bounds the nesting of values (opt, vec, record, variant each add a level) and of
	// types (a group of mutually recursive types counts as its size).
	MaxDepth = 64
	// maxTableEntries and maxTableFields bound the type table: its entries, and the record fields,
	// variant cases, func arguments and results and service methods of all entries together.
	maxTableEntries = 2048
	maxTableFields  = 1 << 14
	maxPrincipalLen = 29
	// maxLEBLen bounds a LEB128 number: 10 bytes hold 64 bits.
	maxLEBLen = 10
	// The work budget: each value decoded or skipped costs one unit, and a message of n bytes
	// may spend baseWork + workPerByte*n units. As in Rust's candid quotas, this bounds the time
	// spent on values that take no bytes (null, reserved, records of them) and on skipping.
	baseWork    = 4096
	workPerByte = 4
	// Values kept in memory: a message of n bytes may produce baseValues + n of them, so memory
	// stays proportional to the input even for values that take no bytes.
	baseValues = 1024
)

const magic = "DIDL"

// coercionError is a wire value that does not fit the expected type. Inside an expected opt it is
// not an error: the opt reads as none (Rust candid's Error::Subtype, which its decoder recovers
// from in the same place). Every other error (malformed bytes, limits) is fatal. Its message is
// built only when asked for: a hostile message may cause many of them.
type coercionError struct {
	wire, expected Kind   // the kinds that do not match, or
	missing        string // the name of a missing record field, or
	unknownCase    uint32 // the id of a variant case the expected type lacks
	kind           uint8  // which of the three
}

const (
	kindMismatch uint8 = iota
	fieldMissing
	caseUnknown
)

func (e *coercionError) Error() string {
	switch e.kind {
	case fieldMissing:
		return "field " + e.missing + " is missing"
	case caseUnknown:
		return fmt.Sprintf("variant case %d is not expected", e.unknownCase)
	}
	return fmt.Sprintf("wire type %s does not fit %s", e.wire, e.expected)
}

func mismatch(w, e *Type) error {
	return &coercionError{wire: w.kind, expected: e.kind}
}

func isCoercion(err error) bool {
	var ce *coercionError
	return errors.As(err, &ce)
}

// pathError locates an error in the value: the record fields, vector elements and variant cases
// from the innermost out. Each level adds its step to the same error, so a failure deep in a
// value costs one allocation per level at most, not a message per level.
type pathError struct {
	steps []step
	err   error
}

type step struct {
	what  string // "field", "element" or "case"
	name  string // a field or case name, if known
	index uint64 // an element index, or a field or case id
}

func (e *pathError) Error() string {
	var b strings.Builder
	for i := len(e.steps) - 1; i >= 0; i-- {
		if n := len(e.steps); n > 8 && i == n-5 {
			// Outermost and innermost four steps only: the message stays short.
			fmt.Fprintf(&b, "… %d levels …: ", n-8)
			i = 3
		}
		s := e.steps[i]
		b.WriteString(s.what)
		b.WriteByte(' ')
		if s.name != "" {
			b.WriteString(s.name)
		} else {
			b.WriteString(strconv.FormatUint(s.index, 10))
		}
		b.WriteString(": ")
	}
	b.WriteString(e.err.Error())
	return b.String()
}

func (e *pathError) Unwrap() error { return e.err }

// at adds a step to err's location.
func at(err error, s step) error {
	if pe, ok := err.(*pathError); ok {
		pe.steps = append(pe.steps, s)
		return pe
	}
	return &pathError{steps: append(make([]step, 0, 4), s), err: err}
}

func fieldStep(f Field) step { return step{what: "field", name: f.Name, index: uint64(f.ID)} }

var (
	errTruncated = errors.New("message truncated")
	errDepth     = fmt.Errorf("nested deeper than %d levels", MaxDepth)
	errWork      = errors.New("decoding work budget exhausted")
	errValues    = errors.New("too many values for the message size")
)

// Decode decodes a Candid message as the arguments (or results) of the expected types. Like Rust's
// candid: wire arguments beyond the expected ones are skipped (but must be well-formed); a missing
// trailing argument reads as none if its expected type is opt, null or reserved; bytes after the
// last argument are an error.
func Decode(data []byte, expected []*Type) ([]Value, error) {
	out, err := decode(data, expected, false)
	if err != nil {
		return nil, fmt.Errorf("candid: %w", err)
	}
	return out, nil
}

// DecodeShared is Decode whose blob, text and principal values are sub-slices of data instead of
// copies: for a caller that owns data, does not change it and lets the values keep it alive (a
// query reply of many messages is then not copied a second time).
func DecodeShared(data []byte, expected []*Type) ([]Value, error) {
	out, err := decode(data, expected, true)
	if err != nil {
		return nil, fmt.Errorf("candid: %w", err)
	}
	return out, nil
}

func decode(data []byte, expected []*Type, share bool) ([]Value, error) {
	d, wire, err := newDecoder(data)
	if err != nil {
		return nil, err
	}
	d.share = share
	out := make([]Value, len(expected))
	for i, e := range expected {
		if i >= len(wire) {
			if !e.kind.optional() {
				return nil, fmt.Errorf("argument %d (%s) is missing", i, e.kind)
			}
			out[i] = Value{t: e}
			continue
		}
		if out[i], err = d.value(wire[i], e, 0); err != nil {
			return nil, fmt.Errorf("argument %d: %w", i, err)
		}
	}
	for i := len(expected); i < len(wire); i++ {
		if err := d.skip(wire[i], 0); err != nil {
			return nil, fmt.Errorf("extra argument %d: %w", i, err)
		}
	}
	return out, d.end()
}

// DecodeAny decodes a Candid message as its own type table describes it.
func DecodeAny(data []byte) ([]*Type, []Value, error) {
	d, wire, err := newDecoder(data)
	if err == nil {
		err = d.keep(len(wire))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("candid: %w", err)
	}
	out := make([]Value, len(wire))
	for i, w := range wire {
		if out[i], err = d.value(w, w, 0); err != nil {
			return nil, nil, fmt.Errorf("candid: argument %d: %w", i, err)
		}
	}
	if err := d.end(); err != nil {
		return nil, nil, fmt.Errorf("candid: %w", err)
	}
	return wire, out, nil
}

// end checks that the arguments took the whole message.
func (d *decoder) end() error {
	if d.pos != len(d.data) {
		return fmt.Errorf("%d bytes after the last argument", len(d.data)-d.pos)
	}
	return nil
}

type decoder struct {
	data   []byte
	pos    int
	work   int // units left in the work budget
	values int // values that may still be materialised
	prims  [-KindPrincipal]Type
	share  bool // byte values alias data (DecodeShared)
}

// keepBytes is a byte value as the decoder returns it: a copy, or with share the bytes of data.
func (d *decoder) keepBytes(b []byte) []byte {
	if d.share {
		return b
	}
	return bytes.Clone(b)
}

func newDecoder(data []byte) (*decoder, []*Type, error) {
	if len(data) > MaxMessageSize {
		return nil, nil, fmt.Errorf("message of %d bytes exceeds %d", len(data), MaxMessageSize)
	}
	if !bytes.HasPrefix(data, []byte(magic)) {
		return nil, nil, errors.New("no DIDL header")
	}
	d := &decoder{data: data, pos: len(magic), work: baseWork + workPerByte*len(data), values: baseValues + len(data)}
	for i := range d.prims {
		k := Kind(-i - 1)
		d.prims[i] = Type{kind: k, zeroSized: k == KindNull || k == KindReserved}
	}
	wire, err := d.header()
	if err != nil {
		return nil, nil, err
	}
	return d, wire, nil
}

// --- reading primitives ---

func (d *decoder) remaining() int { return len(d.data) - d.pos }

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || n > d.remaining() {
		return nil, errTruncated
	}
	b := d.data[d.pos : d.pos+n : d.pos+n]
	d.pos += n
	return b, nil
}

func (d *decoder) byte() (byte, error) {
	if d.pos >= len(d.data) {
		return 0, errTruncated
	}
	c := d.data[d.pos]
	d.pos++
	return c, nil
}

// uleb reads an unsigned LEB128 number of at most 10 bytes that fits 64 bits.
func (d *decoder) uleb() (uint64, error) {
	var x uint64
	for i := range maxLEBLen {
		c, err := d.byte()
		if err != nil {
			return 0, err
		}
		if i == maxLEBLen-1 && c > 1 {
			return 0, errors.New("LEB128 number exceeds 64 bits")
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return x, nil
		}
	}
	return 0, errors.New("LEB128 number longer than 10 bytes")
}

// sleb reads a signed LEB128 number of at most 10 bytes that fits 64 bits.
func (d *decoder) sleb() (int64, error) {
	var x int64
	for i := range maxLEBLen {
		c, err := d.byte()
		if err != nil {
			return 0, err
		}
		if i == maxLEBLen-1 && c != 0 && c != 0x7f {
			return 0, errors.New("SLEB128 number exceeds 64 bits")
		}
		x |= int64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if shift := 7 * (i + 1); shift < 64 && c&0x40 != 0 {
				x |= -1 << shift
			}
			return x, nil
		}
	}
	return 0, errors.New("SLEB128 number longer than 10 bytes")
}

// skipLEB passes over a LEB128 or SLEB128 number of at most 10 bytes, whatever its value.
func (d *decoder) skipLEB() error {
	for range maxLEBLen {
		c, err := d.byte()
		if err != nil {
			return err
		}
		if c < 0x80 {
			return nil
		}
	}
	return errors.New("LEB128 number longer than 10 bytes")
}

// count reads a length or count that the rest of the message must be able to hold, each item
// taking at least perItem bytes.
func (d *decoder) count(what string, perItem int) (int, error) {
	n, err := d.uleb()
	if err != nil {
		return 0, err
	}
	if n > uint64(d.remaining()/perItem) {
		return 0, fmt.Errorf("%s %d exceeds the %d bytes left", what, n, d.remaining())
	}
	return int(n), nil
}

func (d *decoder) flag() (bool, error) {
	c, err := d.byte()
	switch {
	case err != nil:
		return false, err
	case c > 1:
		return false, fmt.Errorf("flag byte %#x is neither 0 nor 1", c)
	}
	return c == 1, nil
}

func (d *decoder) text() ([]byte, error) {
	n, err := d.count("text length", 1)
	if err != nil {
		return nil, err
	}
	b, err := d.take(n)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(b) {
		return nil, errors.New("text is not valid UTF-8")
	}
	return b, nil
}

// principal reads a principal reference: flag 1 (0 would be an opaque reference, which Candid
// does not support either), a length of at most 29 and the bytes.
func (d *decoder) principal() ([]byte, error) {
	c, err := d.byte()
	if err != nil {
		return nil, err
	}
	if c != 1 {
		return nil, errors.New("principal is not a transparent reference")
	}
	n, err := d.uleb()
	if err != nil {
		return nil, err
	}
	if n > maxPrincipalLen {
		return nil, fmt.Errorf("principal of %d bytes exceeds %d", n, maxPrincipalLen)
	}
	return d.take(int(n))
}

// spend charges the work budget.
func (d *decoder) spend(units int) error {
	if units > d.work {
		d.work = 0
		return errWork
	}
	d.work -= units
	return nil
}

// keep reserves room for n materialised values.
func (d *decoder) keep(n int) error {
	if n > d.values {
		return errValues
	}
	d.values -= n
	return nil
}

// --- values ---

// value decodes a value of wire type w as expected type e.
func (d *decoder) value(w, e *Type, depth int) (Value, error) {
	if depth > MaxDepth {
		return Value{}, errDepth
	}
	if err := d.spend(1); err != nil {
		return Value{}, err
	}
	switch e.kind {
	case KindReserved:
		// Any value fits reserved; it is still read in full, so it must be well-formed.
		return Value{t: e}, d.skip(w, depth)
	case KindOpt:
		return d.opt(w, e, depth)
	}
	if w.kind != e.kind && !(e.kind == KindInt && w.kind == KindNat) {
		// No other coercion between primitive types: nat64 is not read from nat, nor nat from
		// nat64, and so on (Rust candid checks the two types are equal).
		return Value{}, mismatch(w, e)
	}
	v := Value{t: e}
	switch e.kind {
	case KindNull:
		return v, nil
	case KindEmpty:
		return Value{}, errors.New("a value of type empty cannot exist")
	case KindBool:
		b, err := d.flag()
		if b {
			v.n = 1
		}
		return v, err
	case KindNat:
		n, err := d.uleb()
		v.n = n
		return v, err
	case KindInt:
		if w.kind == KindNat {
			n, err := d.uleb()
			if err == nil && n > math.MaxInt64 {
				err = errors.New("nat does not fit a 64-bit int")
			}
			v.n = n
			return v, err
		}
		i, err := d.sleb()
		v.n = uint64(i)
		return v, err
	case KindNat8, KindNat16, KindNat32, KindNat64, KindInt8, KindInt16, KindInt32, KindInt64, KindFloat32, KindFloat64:
		b, err := d.take(e.kind.fixedSize())
		if err != nil {
			return Value{}, err
		}
		v.n = littleEndian(e.kind, b)
		return v, nil
	case KindText:
		b, err := d.text()
		v.b = d.keepBytes(b)
		return v, err
	case KindPrincipal:
		b, err := d.principal()
		v.b = d.keepBytes(b)
		return v, err
	case KindVec:
		return d.vec(w, e, depth)
	case KindRecord:
		return d.record(w, e, depth)
	case KindVariant:
		return d.variant(w, e, depth)
	case KindFunc, KindService:
		// References are only decoded as their own wire type (no protocol type holds one).
		if w != e {
			return Value{}, mismatch(w, e)
		}
		return d.reference(e)
	}
	return Value{}, fmt.Errorf("cannot decode %s", e.kind)
}

// littleEndian reads a fixed-size number; signed ones are sign-extended to 64 bits.
func littleEndian(k Kind, b []byte) uint64 {
	var x uint64
	for i := len(b) - 1; i >= 0; i-- {
		x = x<<8 | uint64(b[i])
	}
	switch k {
	case KindInt8:
		x = uint64(int64(int8(x)))
	case KindInt16:
		x = uint64(int64(int16(x)))
	case KindInt32:
		x = uint64(int64(int32(x)))
	}
	return x
}

// opt decodes an expected opt. As Rust candid 0.10 does: wire null or reserved read as none; a wire
// opt reads its flag and then its value; any other wire value is read as the opt's value (a "bare"
// value), unless the expected content is itself null, reserved or opt, in which case it is
// skipped and reads as none. A value that does not fit the content reads as none (the special opt
// rule) once it has been skipped.
func (d *decoder) opt(w, e *Type, depth int) (Value, error) {
	none := Value{t: e}
	switch w.kind {
	case KindNull, KindReserved:
		return none, nil
	case KindOpt:
		present, err := d.flag()
		if err != nil || !present {
			return none, err
		}
		return d.some(w.elem, e, depth+1)
	}
	if e.elem.kind.optional() {
		return none, d.skip(w, depth)
	}
	return d.some(w, e, depth+1)
}

func (d *decoder) some(w, e *Type, depth int) (Value, error) {
	start := d.pos
	if err := d.keep(1); err != nil {
		return Value{}, err
	}
	v, err := d.value(w, e.elem, depth)
	if err == nil {
		return Value{t: e, elems: []Value{v}}, nil
	}
	if !isCoercion(err) {
		return Value{}, err
	}
	// The budget spent on the attempt stays spent, as in Rust candid.
	d.pos = start
	if err := d.skip(w, depth); err != nil {
		return Value{}, err
	}
	return Value{t: e}, nil
}

func (d *decoder) vec(w, e *Type, depth int) (Value, error) {
	v := Value{t: e}
	if w.elem.kind == e.elem.kind {
		if size := w.elem.kind.fixedSize(); size > 0 {
			// Fixed-size numbers (blob among them) stay packed: one copy of their bytes.
			n, err := d.count("vector length", size)
			if err != nil {
				return Value{}, err
			}
			b, _ := d.take(n * size)
			if w.elem.kind == KindBool && !bools(b) {
				return Value{}, errors.New("bool byte is neither 0 nor 1")
			}
			v.b = d.keepBytes(b)
			return v, nil
		}
	}
	n, err := d.elements(w.elem)
	if err != nil {
		return Value{}, err
	}
	if err := d.keep(n); err != nil {
		return Value{}, err
	}
	// Grown as elements decode: a vector whose first element does not fit costs nothing.
	v.elems = make([]Value, 0, min(n, 256))
	for i := range n {
		el, err := d.value(w.elem, e.elem, depth+1)
		if err != nil {
			return Value{}, at(err, step{what: "element", index: uint64(i)})
		}
		v.elems = append(v.elems, el)
	}
	return v, nil
}

func bools(b []byte) bool {
	for _, c := range b {
		if c > 1 {
			return false
		}
	}
	return true
}

// elements reads a vector length for elements of wire type w: elements that take bytes must fit
// in what is left, and every element costs work, so the length is checked against the budget
// before any element is read.
func (d *decoder) elements(w *Type) (int, error) {
	n, err := d.uleb()
	if err != nil {
		return 0, err
	}
	if n > uint64(d.work) {
		return 0, fmt.Errorf("vector length %d exceeds the work budget: %w", n, errWork)
	}
	if !w.zeroSized && n > uint64(d.remaining()) {
		return 0, fmt.Errorf("vector length %d exceeds the %d bytes left", n, d.remaining())
	}
	return int(n), nil
}

// record matches wire fields to expected fields by id (both are sorted): wire fields the type
// does not expect are skipped; expected fields not on the wire must be opt, null or reserved.
func (d *decoder) record(w, e *Type, depth int) (Value, error) {
	if err := d.keep(len(e.fields)); err != nil {
		return Value{}, err
	}
	v := Value{t: e, elems: make([]Value, len(e.fields))}
	ei := 0
	for _, wf := range w.fields {
		for ; ei < len(e.fields) && e.fields[ei].ID < wf.ID; ei++ {
			if err := absent(e.fields[ei]); err != nil {
				return Value{}, err
			}
			v.elems[ei] = Value{t: e.fields[ei].Type}
		}
		if ei < len(e.fields) && e.fields[ei].ID == wf.ID {
			f, err := d.value(wf.Type, e.fields[ei].Type, depth+1)
			if err != nil {
				return Value{}, at(err, fieldStep(e.fields[ei]))
			}
			v.elems[ei] = f
			ei++
			continue
		}
		if err := d.skip(wf.Type, depth+1); err != nil {
			return Value{}, at(err, fieldStep(wf))
		}
	}
	for ; ei < len(e.fields); ei++ {
		if err := absent(e.fields[ei]); err != nil {
			return Value{}, err
		}
		v.elems[ei] = Value{t: e.fields[ei].Type}
	}
	return v, nil
}

func absent(f Field) error {
	if f.Type.kind.optional() {
		return nil
	}
	return &coercionError{kind: fieldMissing, missing: fieldName(f)}
}

func fieldName(f Field) string {
	if f.Name != "" {
		return f.Name
	}
	return fmt.Sprint(f.ID)
}

// variant reads the wire case; a case the expected type lacks is an error (a coercion error, so
// an enclosing opt reads as none).
func (d *decoder) variant(w, e *Type, depth int) (Value, error) {
	i, err := d.uleb()
	if err != nil {
		return Value{}, err
	}
	if i >= uint64(len(w.fields)) {
		return Value{}, fmt.Errorf("variant case %d of %d", i, len(w.fields))
	}
	wf := w.fields[i]
	ei, ok := e.fieldIndex(wf.ID)
	if !ok {
		return Value{}, &coercionError{kind: caseUnknown, unknownCase: wf.ID}
	}
	if err := d.keep(1); err != nil {
		return Value{}, err
	}
	p, err := d.value(wf.Type, e.fields[ei].Type, depth+1)
	if err != nil {
		cs := fieldStep(e.fields[ei])
		cs.what = "case"
		return Value{}, at(err, cs)
	}
	return Value{t: e, n: uint64(ei), elems: []Value{p}}, nil
}

// reference reads a func (flag, principal, method name) or service (principal) value.
func (d *decoder) reference(t *Type) (Value, error) {
	v := Value{t: t}
	if t.kind == KindFunc {
		transparent, err := d.flag()
		if err != nil {
			return Value{}, err
		}
		if !transparent {
			return Value{}, errors.New("opaque func reference")
		}
	}
	p, err := d.principal()
	if err != nil {
		return Value{}, err
	}
	v.b = bytes.Clone(p)
	if t.kind == KindFunc {
		m, err := d.text()
		if err != nil {
			return Value{}, err
		}
		if err := d.keep(1); err != nil {
			return Value{}, err
		}
		v.elems = []Value{{t: &d.prims[-KindText-1], b: bytes.Clone(m)}}
	}
	return v, nil
}

// skip reads a value of wire type w without keeping it; it must be well-formed all the same.
func (d *decoder) skip(w *Type, depth int) error {
	if depth > MaxDepth {
		return errDepth
	}
	if err := d.spend(1); err != nil {
		return err
	}
	switch w.kind {
	case KindNull, KindReserved:
		return nil
	case KindEmpty:
		return errors.New("a value of type empty cannot exist")
	case KindBool:
		_, err := d.flag()
		return err
	case KindNat, KindInt:
		return d.skipLEB()
	case KindNat8, KindNat16, KindNat32, KindNat64, KindInt8, KindInt16, KindInt32, KindInt64, KindFloat32, KindFloat64:
		_, err := d.take(w.kind.fixedSize())
		return err
	case KindText:
		_, err := d.text()
		return err
	case KindPrincipal:
		_, err := d.principal()
		return err
	case KindOpt:
		present, err := d.flag()
		if err != nil || !present {
			return err
		}
		return d.skip(w.elem, depth+1)
	case KindVec:
		if size := w.elem.kind.fixedSize(); size > 0 {
			n, err := d.count("vector length", size)
			if err != nil {
				return err
			}
			b, _ := d.take(n * size)
			if w.elem.kind == KindBool && !bools(b) {
				return errors.New("bool byte is neither 0 nor 1")
			}
			return nil
		}
		n, err := d.elements(w.elem)
		if err != nil {
			return err
		}
		for range n {
			if err := d.skip(w.elem, depth+1); err != nil {
				return err
			}
		}
		return nil
	case KindRecord:
		for _, f := range w.fields {
			if err := d.skip(f.Type, depth+1); err != nil {
				return err
			}
		}
		return nil
	case KindVariant:
		i, err := d.uleb()
		if err != nil {
			return err
		}
		if i >= uint64(len(w.fields)) {
			return fmt.Errorf("variant case %d of %d", i, len(w.fields))
		}
		return d.skip(w.fields[i].Type, depth+1)
	case KindFunc, KindService:
		_, err := d.reference(w)
		return err
	}
	return fmt.Errorf("cannot skip %s", w.kind)
}
