package hashtree_test

import (
	"errors"
	"testing"

	"github.com/icws/icws/protocol/hashtree"
)

// The specification's well_formed: sorted, distinct labels, never beside a leaf, at every level.
func TestWellFormed(t *testing.T) {
	deep := leaf("v")
	for range 10_000 {
		deep = lab("a", deep)
	}
	tests := []struct {
		name string
		tree *hashtree.Node
		ok   bool
	}{
		{"leaf", leaf("x"), true},
		{"empty", hashtree.NewEmpty(), true},
		{"nil", nil, true},
		{"pruned", pruned(), true},
		{"sorted labels", fork(lab("a", leaf("1")), fork(lab("b", leaf("2")), lab("c", leaf("3")))), true},
		{"pruned and empty between labels", fork(fork(lab("a", leaf("1")), pruned()), fork(hashtree.NewEmpty(), lab("c", leaf("3")))), true},
		{"nested", lab("sig", fork(lab("s1", lab("m", leaf(""))), lab("s2", pruned()))), true},
		{"deep", deep, true},
		{"labels out of order", fork(lab("b", leaf("1")), lab("a", leaf("2"))), false},
		{"duplicate label", fork(lab("a", leaf("1")), lab("a", leaf("2"))), false},
		{"leaf beside a label", fork(lab("a", leaf("1")), leaf("2")), false},
		{"leaf in a fork", fork(leaf("1"), hashtree.NewEmpty()), false},
		{"bad order below", lab("sig", fork(lab("b", leaf("")), lab("a", leaf("")))), false},
		{"leaf beside a label below", lab("sig", fork(leaf(""), lab("a", leaf("")))), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.tree.WellFormed()
			if tc.ok != (err == nil) {
				t.Fatalf("WellFormed() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, hashtree.ErrNotWellFormed) {
				t.Fatalf("error %v is not ErrNotWellFormed", err)
			}
		})
	}
}
