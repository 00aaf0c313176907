package certificate

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/icws/icws/protocol/hashtree"
	"github.com/icws/icws/protocol/internal/cborread"
	"github.com/icws/icws/protocol/internal/cborwrite"
)

// Range is a closed interval of principals, compared as byte strings.
type Range struct{ Low, High []byte }

// Contains reports whether p lies in the range.
func (r Range) Contains(p []byte) bool {
	return bytes.Compare(r.Low, p) <= 0 && bytes.Compare(p, r.High) <= 0
}

// ErrNoRanges is returned (wrapped) by SubnetHasCanister when the tree publishes no canister
// ranges for the subnet.
var ErrNoRanges = errors.New("no canister ranges for the subnet")

// SubnetHasCanister reports whether the canister ranges a state tree publishes for subnet
// contain canister. The state tree has two encodings, and a tree may carry either:
// /subnet/<subnet>/canister_ranges (all ranges in one leaf) and
// /canister_ranges/<subnet>/<first canister> (the ranges in shards, one leaf each, of which a
// pruned tree may show only some). Without either, the error wraps ErrNoRanges.
func SubnetHasCanister(tree *hashtree.Node, subnet, canister []byte) (bool, error) {
	var leaves [][]byte
	if raw, st := tree.Lookup([]byte("subnet"), subnet, []byte("canister_ranges")); st == hashtree.Found {
		leaves = append(leaves, raw)
	} else if shards, st := tree.LookupSubtree([]byte("canister_ranges"), subnet); st == hashtree.Found {
		children, _ := shards.Children()
		for _, c := range children {
			if v := c.Subtree().Value(); v != nil {
				leaves = append(leaves, v)
			}
		}
	}
	if len(leaves) == 0 {
		return false, fmt.Errorf("%w %x", ErrNoRanges, subnet)
	}
	for _, leaf := range leaves {
		ranges, err := DecodeRanges(leaf)
		if err != nil {
			return false, err
		}
		for _, r := range ranges {
			if r.Contains(canister) {
				return true, nil
			}
		}
	}
	return false, nil
}

// DecodeRanges decodes a canister_ranges value: an optionally tagged CBOR array of
// [low, high] principal pairs.
func DecodeRanges(raw []byte) ([]Range, error) {
	r := cborread.New(raw)
	r.SkipSelfDescribe()
	n, err := r.ArrayHeader()
	if err != nil {
		return nil, fmt.Errorf("canister ranges: %w", err)
	}
	// Each range takes at least three bytes, so n is bounded by the leaf size.
	out := make([]Range, 0, min(n, r.Remaining()/3))
	for range n {
		if m, err := r.ArrayHeader(); err != nil || m != 2 {
			return nil, fmt.Errorf("canister ranges: range is not a pair (%v)", err)
		}
		lo, err := r.Bytes()
		if err != nil {
			return nil, fmt.Errorf("canister ranges: %w", err)
		}
		hi, err := r.Bytes()
		if err != nil {
			return nil, fmt.Errorf("canister ranges: %w", err)
		}
		if len(lo) > maxPrincipalBytes || len(hi) > maxPrincipalBytes {
			return nil, errors.New("canister ranges: principal longer than 29 bytes")
		}
		out = append(out, Range{Low: lo, High: hi})
	}
	if err := r.End(); err != nil {
		return nil, fmt.Errorf("canister ranges: %w", err)
	}
	return out, nil
}

// EncodeRanges encodes ranges as the state tree stores them (behind a self-describe tag).
func EncodeRanges(ranges []Range) []byte {
	out := cborwrite.AppendArrayHead([]byte{0xd9, 0xd9, 0xf7}, len(ranges))
	for _, r := range ranges {
		out = cborwrite.AppendBytes(append(out, 0x82), r.Low)
		out = cborwrite.AppendBytes(out, r.High)
	}
	return out
}
