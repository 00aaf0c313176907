// Package cborwrite appends the few CBOR items icws encodes by hand (frames, certificates, hash
// trees, canister signatures): the one place that knows how a CBOR head is laid out. Major types
// are cborread's.
package cborwrite

// AppendHead appends the head of a CBOR item of major type major (0-7) with argument n, in the
// shortest form, as canonical CBOR requires.
func AppendHead(out []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(out, m|byte(n))
	case n <= 0xff:
		return append(out, m|24, byte(n))
	case n <= 0xffff:
		return append(out, m|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(out, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// AppendBytes appends b as a CBOR byte string.
func AppendBytes(out, b []byte) []byte {
	return append(AppendHead(out, majorBytes, uint64(len(b))), b...)
}

// AppendText appends s as a CBOR text string.
func AppendText(out []byte, s string) []byte {
	return append(AppendHead(out, majorText, uint64(len(s))), s...)
}

// AppendArrayHead appends the head of an array of n items.
func AppendArrayHead(out []byte, n int) []byte {
	return AppendHead(out, majorArray, uint64(n))
}

const (
	majorBytes = 2
	majorText  = 3
	majorArray = 4
)
