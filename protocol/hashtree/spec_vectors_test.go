package hashtree_test

import (
	"encoding/hex"
	"testing"

	"github.com/icws/icws/protocol/hashtree"
)

// The example of the IC interface specification, section Certification / Example
// (dfinity/portal, docs/references/ic-interface-spec.md): a tree, its root hash, a pruned copy and
// the lookups the specification gives for it.
const (
	specTreeHex   = "8301830183024161830183018302417882034568656c6c6f810083024179820345776f726c6483024162820344676f6f648301830241638100830241648203476d6f726e696e67"
	specRootHex   = "eb5c5b2195e62d996b84c9bcc8259d19a83786a2f59e0878cec84c811f669aa0"
	specPrunedHex = "83018301830241618301820458201b4feff9bef8131788b0c9dc6dbad6e81e524249c879e9f10f71ce3749f5a63883024179820345776f726c6483024162820458207b32ac0c6ba8ce35ac82c255fc7906f7fc130dab2a090f80fe12f9c2cae83ba6830182045820ec8324b8a1f1ac16bd2e806edba78006479c9877fed4eb464a25485465af601d830241648203476d6f726e696e67"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func labels(ls ...string) [][]byte {
	out := make([][]byte, len(ls))
	for i, l := range ls {
		out[i] = []byte(l)
	}
	return out
}

func TestSpecificationExample(t *testing.T) {
	for _, tc := range []struct{ name, hex string }{{"full", specTreeHex}, {"pruned", specPrunedHex}} {
		t.Run(tc.name, func(t *testing.T) {
			raw := mustHex(t, tc.hex)
			tree, err := hashtree.Decode(raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := tree.Digest(); hex.EncodeToString(got[:]) != specRootHex {
				t.Fatalf("root hash %x, want %s", got, specRootHex)
			}
			if got := tree.Encode(); hex.EncodeToString(got) != tc.hex {
				t.Fatalf("re-encoded as %x", got)
			}
		})
	}
}

func TestSpecificationExampleLookups(t *testing.T) {
	pruned, err := hashtree.Decode(mustHex(t, specPrunedHex))
	if err != nil {
		t.Fatal(err)
	}
	full, err := hashtree.Decode(mustHex(t, specTreeHex))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tree   *hashtree.Node
		path   []string
		want   hashtree.LookupStatus
		wantV  string
		reason string
	}{
		// The specification's own table for the pruned tree.
		{pruned, []string{"a", "a"}, hashtree.Unknown, "", "spec"},
		{pruned, []string{"a", "y"}, hashtree.Found, "world", "spec"},
		{pruned, []string{"aa"}, hashtree.Absent, "", "spec"},
		{pruned, []string{"ax"}, hashtree.Absent, "", "spec"},
		{pruned, []string{"b"}, hashtree.Unknown, "", "spec"},
		{pruned, []string{"bb"}, hashtree.Unknown, "", "spec"},
		{pruned, []string{"d"}, hashtree.Found, "morning", "spec"},
		{pruned, []string{"e"}, hashtree.Absent, "", "spec"},
		// The full tree.
		{full, []string{"a", "x"}, hashtree.Found, "hello", "leaf"},
		{full, []string{"c"}, hashtree.Absent, "", "label over an empty tree"},
		{full, []string{"a"}, hashtree.NotAValue, "", "subtree, not a value"},
		{full, []string{"0"}, hashtree.Absent, "", "before the first label"},
		{full, []string{"a", "x", "y"}, hashtree.Absent, "", "below a leaf"},
		{full, nil, hashtree.NotAValue, "", "empty path"},
	}
	for _, tt := range tests {
		v, st := tt.tree.Lookup(labels(tt.path...)...)
		if st != tt.want || string(v) != tt.wantV {
			t.Errorf("%s: lookup %q = %q, %s; want %q, %s", tt.reason, tt.path, v, st, tt.wantV, tt.want)
		}
	}
}
