package hashtree_test

import (
	"testing"

	"github.com/icws/icws/protocol/hashtree"
)

func lab(l string, t *hashtree.Node) *hashtree.Node { return hashtree.NewLabeled([]byte(l), t) }
func leaf(v string) *hashtree.Node                  { return hashtree.NewLeaf([]byte(v)) }
func fork(l, r *hashtree.Node) *hashtree.Node       { return hashtree.NewFork(l, r) }
func pruned() *hashtree.Node                        { return hashtree.NewPruned([32]byte{1}) }

// find_label's cases, one per line of the specification's definition, plus the shapes where a
// pruned subtree or an empty tree sits between labels.
func TestLookupFindLabel(t *testing.T) {
	tests := []struct {
		name string
		tree *hashtree.Node
		path string
		want hashtree.LookupStatus
	}{
		{"found", fork(lab("a", leaf("1")), lab("c", leaf("3"))), "c", hashtree.Found},
		{"between two labels", fork(lab("a", leaf("1")), lab("c", leaf("3"))), "b", hashtree.Absent},
		{"before the first label", fork(lab("b", leaf("1")), pruned()), "a", hashtree.Absent},
		{"after the last label", fork(pruned(), lab("b", leaf("1"))), "c", hashtree.Absent},
		{"a single leaf", leaf("x"), "a", hashtree.Absent},
		{"empty", hashtree.NewEmpty(), "a", hashtree.Absent},
		{"nil", nil, "a", hashtree.Absent},
		{"pruned", pruned(), "a", hashtree.Unknown},
		{"pruned between labels", fork(lab("a", leaf("1")), fork(pruned(), lab("c", leaf("3")))), "b", hashtree.Unknown},
		{"pruned after the last label", fork(lab("a", leaf("1")), pruned()), "b", hashtree.Unknown},
		{"pruned before the first label", fork(pruned(), lab("c", leaf("3"))), "b", hashtree.Unknown},
		{"empty trees are skipped", fork(fork(lab("a", leaf("1")), hashtree.NewEmpty()), lab("c", leaf("3"))), "b", hashtree.Absent},
		// agent-js, agent-rs and agent-go answer absent here; the specification's flatten_forks
		// gives [a, pruned], where nothing proves b absent.
		{"empty then pruned", fork(fork(lab("a", leaf("1")), hashtree.NewEmpty()), pruned()), "b", hashtree.Unknown},
		{"a leaf among labels", fork(leaf("x"), lab("c", leaf("3"))), "b", hashtree.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got := tt.tree.LookupSubtree([]byte(tt.path))
			if got != tt.want {
				t.Fatalf("lookup %q = %s, want %s", tt.path, got, tt.want)
			}
		})
	}
}

func TestChildren(t *testing.T) {
	tree := fork(fork(lab("a", leaf("1")), hashtree.NewEmpty()), fork(lab("b", leaf("2")), lab("c", leaf("3"))))
	kids, complete := tree.Children()
	if !complete || len(kids) != 3 || string(kids[0].Label()) != "a" || string(kids[2].Subtree().Value()) != "3" {
		t.Fatalf("children %v, complete %v", kids, complete)
	}
	kids, complete = fork(lab("a", leaf("1")), pruned()).Children()
	if complete || len(kids) != 1 {
		t.Fatalf("children of a pruned list: %d, complete %v", len(kids), complete)
	}
}
