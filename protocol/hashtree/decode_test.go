package hashtree_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/icws/icws/protocol/hashtree"
)

// chain returns a tree of the given depth: depth-1 nested nodes (forks with a pruned right side,
// or labels, alternating as in an RbTree witness) over a leaf.
func chain(depth int) *hashtree.Node {
	n := leaf("v")
	for i := depth - 1; i > 0; i-- {
		if i%2 == 0 {
			n = lab(fmt.Sprintf("k%03d", i), n)
		} else {
			n = fork(n, pruned())
		}
	}
	return n
}

// rawChain encodes a chain of depth nested forks by hand, so depths beyond what Encode is given
// can be tried: [1, [1, ... [0] ...], [0]].
func rawChain(depth int) []byte {
	var b bytes.Buffer
	for range depth - 1 {
		b.Write([]byte{0x83, 0x01})
	}
	b.Write([]byte{0x81, 0x00})
	for range depth - 1 {
		b.Write([]byte{0x81, 0x00})
	}
	return b.Bytes()
}

func TestDecodeDepthLimit(t *testing.T) {
	for _, depth := range []int{1, 2, 33, 64, hashtree.MaxDepth} {
		tree := chain(depth)
		back, err := hashtree.Decode(tree.Encode())
		if err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
		if back.Digest() != tree.Digest() {
			t.Fatalf("depth %d: digest changed", depth)
		}
		if _, err := hashtree.Decode(rawChain(depth)); err != nil {
			t.Fatalf("fork chain of depth %d: %v", depth, err)
		}
	}
	for _, depth := range []int{hashtree.MaxDepth + 1, hashtree.MaxDepth + 2, 10_000, 1_000_000} {
		for name, raw := range map[string][]byte{"mixed": chain(min(depth, 10_000)).Encode(), "forks": rawChain(depth)} {
			_, err := hashtree.Decode(raw)
			if !errors.Is(err, hashtree.ErrTooDeep) {
				t.Fatalf("%s depth %d: error %v, want ErrTooDeep", name, depth, err)
			}
		}
	}
}

func TestDecodeRefusesMalformed(t *testing.T) {
	tests := []struct {
		name string
		hex  []byte
	}{
		{"empty input", nil},
		{"not an array", []byte{0x01}},
		{"empty array", []byte{0x80}},
		{"unknown tag", []byte{0x81, 0x05}},
		{"empty with an extra element", []byte{0x82, 0x00, 0x00}},
		{"fork missing a subtree", []byte{0x82, 0x01, 0x81, 0x00}},
		{"truncated fork", []byte{0x83, 0x01, 0x81, 0x00}},
		{"label is text", []byte{0x83, 0x02, 0x61, 'a', 0x81, 0x00}},
		{"leaf longer than the input", []byte{0x82, 0x03, 0x5a, 0xff, 0xff, 0xff, 0xff}},
		{"leaf length of 2^64-1", []byte{0x82, 0x03, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"array count of 2^64-1", []byte{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00}},
		{"short pruned hash", []byte{0x82, 0x04, 0x41, 0x00}},
		{"indefinite array", []byte{0x9f, 0x00, 0xff}},
		{"indefinite leaf", []byte{0x82, 0x03, 0x5f, 0x41, 0x00, 0xff}},
		{"trailing bytes", []byte{0x81, 0x00, 0x00}},
		{"tag is negative", []byte{0x81, 0x20}},
		{"tag is huge", []byte{0x81, 0x1b, 0, 0, 0, 1, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n, err := hashtree.Decode(tt.hex); !errors.Is(err, hashtree.ErrMalformed) {
				t.Fatalf("Decode = %v, %v; want ErrMalformed", n, err)
			}
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	if _, err := hashtree.Decode(make([]byte, hashtree.MaxInputBytes+1)); !errors.Is(err, hashtree.ErrTooLarge) {
		t.Fatalf("oversized input: %v", err)
	}
	// A balanced tree of empty leaves just over MaxNodes nodes.
	var b bytes.Buffer
	var build func(n int)
	build = func(n int) {
		if n == 1 {
			b.Write([]byte{0x81, 0x00})
			return
		}
		b.Write([]byte{0x83, 0x01})
		build(n / 2)
		build(n - n/2)
	}
	build(hashtree.MaxNodes/2 + 1) // leaves; the forks bring the node count above MaxNodes
	if _, err := hashtree.Decode(b.Bytes()); !errors.Is(err, hashtree.ErrTooLarge) {
		t.Fatalf("too many nodes: %v", err)
	}
}

func TestDecodeSelfDescribeAndCopy(t *testing.T) {
	tree := fork(lab("a", leaf("hello")), lab("b", pruned()))
	raw := append([]byte{0xd9, 0xd9, 0xf7}, tree.Encode()...)
	back, err := hashtree.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		raw[i] = 0
	}
	if v, st := back.Lookup([]byte("a")); st != hashtree.Found || string(v) != "hello" {
		t.Fatalf("decoded tree aliases its input: %q, %s", v, st)
	}
	if back.Digest() != tree.Digest() {
		t.Fatal("digest changed")
	}
}

// BenchmarkDecodeDeep decodes and hashes a witness-shaped tree at the depth limit.
func BenchmarkDecodeDeep(b *testing.B) {
	raw := chain(hashtree.MaxDepth).Encode()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		n, err := hashtree.Decode(raw)
		if err != nil {
			b.Fatal(err)
		}
		n.Digest()
	}
}

// BenchmarkDecodeTooDeep shows that refusing a million-deep tree is cheap.
func BenchmarkDecodeTooDeep(b *testing.B) {
	raw := rawChain(1_000_000)
	for b.Loop() {
		if _, err := hashtree.Decode(raw); err == nil {
			b.Fatal("accepted")
		}
	}
}
