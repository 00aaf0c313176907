// Package cborread reads the small subset of CBOR that IC certificates and hash trees use, from a
// byte slice the sender controls: every length is checked against the bytes that are actually
// there before anything is sliced, nothing is allocated from a declared length, and nothing
// recurses.
package cborread

import (
	"errors"
	"fmt"
)

// Major types.
const (
	MajorUint   = 0
	MajorNegInt = 1
	MajorBytes  = 2
	MajorText   = 3
	MajorArray  = 4
	MajorMap    = 5
	MajorTag    = 6
	MajorSimple = 7
)

// SelfDescribeTag is tag 55799, which IC encoders may put in front of a document.
const SelfDescribeTag = 55799

// ErrTruncated is returned when an item runs past the end of the input.
var ErrTruncated = errors.New("cbor: truncated")

// Reader reads CBOR items in order from a byte slice. Slices it returns alias the input.
type Reader struct {
	data []byte
	pos  int
}

// New returns a Reader over data.
func New(data []byte) *Reader { return &Reader{data: data} }

// Remaining is the number of unread bytes.
func (r *Reader) Remaining() int { return len(r.data) - r.pos }

// Offset is the number of bytes read so far.
func (r *Reader) Offset() int { return r.pos }

// Head reads the initial byte of an item and its argument. Indefinite lengths and the reserved
// additional-information values are refused: IC encoders never produce them.
func (r *Reader) Head() (major byte, arg uint64, err error) {
	if r.pos >= len(r.data) {
		return 0, 0, ErrTruncated
	}
	b := r.data[r.pos]
	major, info := b>>5, b&0x1f
	r.pos++
	var size int
	switch {
	case info < 24:
		return major, uint64(info), nil
	case info == 24:
		size = 1
	case info == 25:
		size = 2
	case info == 26:
		size = 4
	case info == 27:
		size = 8
	case info == 31:
		return 0, 0, fmt.Errorf("cbor: indefinite length at offset %d is not supported", r.pos-1)
	default:
		return 0, 0, fmt.Errorf("cbor: reserved additional information %d at offset %d", info, r.pos-1)
	}
	if r.Remaining() < size {
		return 0, 0, ErrTruncated
	}
	for _, c := range r.data[r.pos : r.pos+size] {
		arg = arg<<8 | uint64(c)
	}
	r.pos += size
	return major, arg, nil
}

// expect reads a head and checks its major type.
func (r *Reader) expect(want byte, what string) (uint64, error) {
	start := r.pos
	major, arg, err := r.Head()
	if err != nil {
		return 0, err
	}
	if major != want {
		r.pos = start
		return 0, fmt.Errorf("cbor: want %s at offset %d, found major type %d", what, start, major)
	}
	return arg, nil
}

// take returns the next n bytes, n checked against what is left.
func (r *Reader) take(n uint64) ([]byte, error) {
	if n > uint64(r.Remaining()) {
		return nil, ErrTruncated
	}
	b := r.data[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b, nil
}

// Bytes reads a byte string.
func (r *Reader) Bytes() ([]byte, error) {
	n, err := r.expect(MajorBytes, "byte string")
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

// Text reads a text string (as bytes; UTF-8 validity is the caller's concern).
func (r *Reader) Text() ([]byte, error) {
	n, err := r.expect(MajorText, "text string")
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

// Uint reads an unsigned integer.
func (r *Reader) Uint() (uint64, error) { return r.expect(MajorUint, "unsigned integer") }

// ArrayHeader reads the head of a definite-length array and returns its element count, which is
// at most the number of bytes left (every element takes at least one).
func (r *Reader) ArrayHeader() (int, error) {
	n, err := r.expect(MajorArray, "array")
	if err != nil {
		return 0, err
	}
	if n > uint64(r.Remaining()) {
		return 0, ErrTruncated
	}
	return int(n), nil
}

// MapHeader reads the head of a definite-length map and returns its pair count, which is at most
// half the number of bytes left.
func (r *Reader) MapHeader() (int, error) {
	n, err := r.expect(MajorMap, "map")
	if err != nil {
		return 0, err
	}
	if n > uint64(r.Remaining())/2 {
		return 0, ErrTruncated
	}
	return int(n), nil
}

// PeekMajor returns the major type of the next item without reading it; false at the end.
func (r *Reader) PeekMajor() (byte, bool) {
	if r.pos >= len(r.data) {
		return 0, false
	}
	return r.data[r.pos] >> 5, true
}

// SkipSelfDescribe skips tag 55799 if it comes next.
func (r *Reader) SkipSelfDescribe() {
	if r.Remaining() >= 3 && r.data[r.pos] == 0xd9 && r.data[r.pos+1] == 0xd9 && r.data[r.pos+2] == 0xf7 {
		r.pos += 3
	}
}

// PeekNull reports whether the next item is null or undefined, and skips it if so.
func (r *Reader) PeekNull() bool {
	if r.pos < len(r.data) && (r.data[r.pos] == 0xf6 || r.data[r.pos] == 0xf7) {
		r.pos++
		return true
	}
	return false
}

// Skip reads past one complete item of any type, without recursion: it counts the items still
// owed by the arrays, maps and tags it has entered.
func (r *Reader) Skip() error {
	owed := 1
	for owed > 0 {
		owed--
		major, arg, err := r.Head()
		if err != nil {
			return err
		}
		switch major {
		case MajorBytes, MajorText:
			if _, err := r.take(arg); err != nil {
				return err
			}
		case MajorArray:
			if arg > uint64(r.Remaining()) {
				return ErrTruncated
			}
			owed += int(arg)
		case MajorMap:
			if arg > uint64(r.Remaining())/2 {
				return ErrTruncated
			}
			owed += 2 * int(arg)
		case MajorTag:
			owed++
		}
		// Counting is bounded by the input: every owed item needs at least one more byte.
		if owed > r.Remaining() {
			return ErrTruncated
		}
	}
	return nil
}

// End checks that every byte has been read.
func (r *Reader) End() error {
	if r.Remaining() != 0 {
		return fmt.Errorf("cbor: %d trailing bytes at offset %d", r.Remaining(), r.pos)
	}
	return nil
}
