package wscanister

import (
	"crypto/sha256"
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"

	"github.com/aviate-labs/agent-go/certification/hashtree"
)

// certTree is the canister's certified map of message key → sha256(content), the counterpart of
// the CDK's RbTree<String, Hash>. Keys are "<gateway>_<20-digit nonce>", and each gateway's keys
// are a contiguous run of nonces, so the tree is built in two layers:
//
//   - per gateway, a binary trie over the 64 bits of the nonce, with single-child nodes collapsed
//     (a collapsed node hashes as its only child). Every node's hash is cached, so a send (one
//     insert at the end, a few deletes at the front) costs O(log n) hashes;
//   - over the gateways (a handful), a balanced tree of their roots, ordered by key prefix.
//
// Compared with a red-black tree this also keeps witnesses shallow: a path holds at most about
// log2(retained messages) + log2(gateways) forks, so batches decode with agent-go's CBOR limit of
// 32 nested levels. The hash-tree shape differs from ic-certified-map's (no client or gateway can
// observe that: they only reconstruct and look up), and it keeps the rules both agents rely on:
// labels in strictly increasing byte order from left to right, no Empty node inside a fork.
type certTree struct {
	gateways map[string]*gatewayTree // by key prefix "<gateway text>_"
	order    []string                // sorted prefixes
}

const nonceLevels = 64

type gatewayTree struct {
	prefix string
	values map[uint64][32]byte
	// nodes[l] holds the hash of every non-empty node at level l; node (l, i) covers the nonces
	// [i<<l, (i+1)<<l). Level 0 holds labeled(key, leaf(value)); nodes[top][0] is the root, where
	// every nonce ever stored is below 1<<top (above that level nodes only repeat the root).
	nodes [nonceLevels + 1]map[uint64][32]byte
	top   int
}

var (
	domainFork    = hashtree.DomainSeparator("ic-hashtree-fork")
	domainLabeled = hashtree.DomainSeparator("ic-hashtree-labeled")
	domainLeaf    = hashtree.DomainSeparator("ic-hashtree-leaf")
	emptyHash     = hashtree.Empty{}.Reconstruct()
)

func forkHash(l, r [32]byte) [32]byte {
	b := make([]byte, 0, len(domainFork)+64)
	b = append(append(append(b, domainFork...), l[:]...), r[:]...)
	return sha256.Sum256(b)
}

func labeledHash(label []byte, sub [32]byte) [32]byte {
	b := make([]byte, 0, len(domainLabeled)+len(label)+32)
	b = append(append(append(b, domainLabeled...), label...), sub[:]...)
	return sha256.Sum256(b)
}

func leafHash(v []byte) [32]byte {
	b := make([]byte, 0, len(domainLeaf)+len(v))
	b = append(append(b, domainLeaf...), v...)
	return sha256.Sum256(b)
}

// splitKey cuts a message key into its gateway prefix (with the '_') and nonce.
func splitKey(key string) (string, uint64, error) {
	i := strings.LastIndexByte(key, '_')
	if i < 0 {
		return "", 0, fmt.Errorf("message key %q: missing '_'", key)
	}
	n, err := strconv.ParseUint(key[i+1:], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("message key %q: %w", key, err)
	}
	return key[:i+1], n, nil
}

func (g *gatewayTree) key(nonce uint64) string {
	return fmt.Sprintf("%s%020d", g.prefix, nonce)
}

// set stores (or with del removes) the value of a nonce and rehashes the path above it.
func (g *gatewayTree) set(nonce uint64, value [32]byte, del bool) {
	if del {
		delete(g.values, nonce)
		delete(g.nodes[0], nonce)
	} else {
		g.values[nonce] = value
		g.nodes[0][nonce] = labeledHash([]byte(g.key(nonce)), leafHash(value[:]))
	}
	if need := bits.Len64(nonce); need > g.top {
		// The levels between the old and the new top hold a single node each, equal to the old
		// root; materialise them so that the path below recomputes the new root correctly.
		for l := g.top + 1; l < need; l++ {
			if h, ok := g.nodes[l-1][0]; ok {
				g.nodes[l][0] = h
			}
		}
		g.top = need
	}
	for l := 1; l <= g.top; l++ {
		i := nonce >> l
		left, lok := g.nodes[l-1][i<<1]
		right, rok := g.nodes[l-1][i<<1|1]
		switch {
		case lok && rok:
			g.nodes[l][i] = forkHash(left, right)
		case lok:
			g.nodes[l][i] = left
		case rok:
			g.nodes[l][i] = right
		default:
			delete(g.nodes[l], i)
		}
	}
}

func (g *gatewayTree) root() [32]byte { return g.nodes[g.top][0] }

func (g *gatewayTree) empty() bool { return len(g.values) == 0 }

// witness reveals the nonces in [a, b] below node (l, i); nil if the node is empty.
func (g *gatewayTree) witness(l int, i, a, b uint64) hashtree.Node {
	h, ok := g.nodes[l][i]
	if !ok {
		return nil
	}
	lo := i << l
	hi := ((i + 1) << l) - 1 // wraps to MaxUint64 for the root, as intended
	if l == nonceLevels {
		lo, hi = 0, ^uint64(0)
	}
	if hi < a || lo > b {
		return hashtree.Pruned(h)
	}
	if l == 0 {
		v := g.values[i]
		return hashtree.Labeled{Label: hashtree.Label(g.key(i)), Tree: hashtree.Leaf(v[:])}
	}
	left := g.witness(l-1, i<<1, a, b)
	right := g.witness(l-1, i<<1|1, a, b)
	switch {
	case left == nil:
		return right
	case right == nil:
		return left
	}
	return hashtree.Fork{LeftTree: left, RightTree: right}
}

func (t *certTree) gateway(prefix string, create bool) *gatewayTree {
	if g, ok := t.gateways[prefix]; ok || !create {
		return g
	}
	if t.gateways == nil {
		t.gateways = make(map[string]*gatewayTree)
	}
	g := &gatewayTree{prefix: prefix, values: make(map[uint64][32]byte)}
	for l := range g.nodes {
		g.nodes[l] = make(map[uint64][32]byte)
	}
	t.gateways[prefix] = g
	t.order = append(t.order, prefix)
	sort.Strings(t.order)
	return g
}

// insert sets key to value. Keys are message keys; anything else is a programming error.
func (t *certTree) insert(key string, value [32]byte) {
	prefix, nonce, err := splitKey(key)
	if err != nil {
		panic(fmt.Sprintf("certTree.insert: %v", err))
	}
	t.gateway(prefix, true).set(nonce, value, false)
}

// delete removes key if present.
func (t *certTree) delete(key string) {
	prefix, nonce, err := splitKey(key)
	if err != nil {
		return
	}
	g := t.gateway(prefix, false)
	if g == nil {
		return
	}
	if _, ok := g.values[nonce]; !ok {
		return
	}
	g.set(nonce, [32]byte{}, true)
	if g.empty() {
		delete(t.gateways, prefix)
		i := sort.SearchStrings(t.order, prefix)
		t.order = append(t.order[:i], t.order[i+1:]...)
	}
}

// len counts the keys.
func (t *certTree) len() int {
	n := 0
	for _, g := range t.gateways {
		n += len(g.values)
	}
	return n
}

// span hashes the gateways order[lo:hi] as a balanced tree.
func (t *certTree) span(lo, hi int) [32]byte {
	if hi-lo == 1 {
		return t.gateways[t.order[lo]].root()
	}
	mid := (lo + hi) / 2
	return forkHash(t.span(lo, mid), t.span(mid, hi))
}

// rootHash is the hash of the whole tree; an empty tree hashes as Empty, as RbTree's does.
func (t *certTree) rootHash() [32]byte {
	if len(t.order) == 0 {
		return emptyHash
	}
	return t.span(0, len(t.order))
}

// certifiedData is the value the CDK passes to set_certified_data.
func (t *certTree) certifiedData() [32]byte {
	return labeledHash([]byte(labelWebsocket), t.rootHash())
}

// witness returns a hash tree that reveals the leaves of every key in [first, last] (keys of one
// gateway) and prunes everything else. Its root hash equals rootHash.
func (t *certTree) witness(first, last string) (hashtree.Node, error) {
	prefix, a, err := splitKey(first)
	if err != nil {
		return nil, err
	}
	p2, b, err := splitKey(last)
	if err != nil {
		return nil, err
	}
	if p2 != prefix {
		return nil, fmt.Errorf("witness range %q..%q spans gateways", first, last)
	}
	target := sort.SearchStrings(t.order, prefix)
	if target == len(t.order) || t.order[target] != prefix {
		return nil, fmt.Errorf("witness: no keys with prefix %q", prefix)
	}
	var walk func(lo, hi int) hashtree.Node
	walk = func(lo, hi int) hashtree.Node {
		if target < lo || target >= hi {
			return hashtree.Pruned(t.span(lo, hi))
		}
		if hi-lo == 1 {
			g := t.gateways[prefix]
			return g.witness(g.top, 0, a, b)
		}
		mid := (lo + hi) / 2
		return hashtree.Fork{LeftTree: walk(lo, mid), RightTree: walk(mid, hi)}
	}
	return walk(0, len(t.order)), nil
}
