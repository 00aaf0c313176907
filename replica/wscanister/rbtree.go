package wscanister

import (
	"crypto/sha256"

	"github.com/aviate-labs/agent-go/certification/hashtree"
)

// rbTree is the canister's certified map of message key → sha256(message), built the way the CDK's
// RbTree<String, Hash> (ic-certification 2.6, the version ic-websocket-cdk 0.4.1 uses) builds it:
// a left-leaning red-black tree (Sedgewick's 2-3 variant) in which every node carries the hash of
// its subtree. Rebalancing follows the Rust code step by step, because the tree's shape is
// observable: it fixes the root hash and the shape of every witness, and a client of a real
// canister must decode witnesses of exactly that shape (two CBOR arrays per tree level).
//
// A node's subtree hashes as
//
//	data                              without children
//	fork(left, data)                  with a left child only
//	fork(data, right)                 with a right child only
//	fork(left, fork(data, right))     with both
//
// where data = labeled(key, leaf(value)); an empty tree hashes as Empty.
type rbTree struct {
	root *rbNode
	size int
}

type rbNode struct {
	key         string
	value       [32]byte
	left, right *rbNode
	red         bool
	// dataHash caches labeled(key, leaf(value)), which the Rust tree recomputes at every rehash;
	// caching it halves the hashing of an insert or delete without changing any hash.
	dataHash    [32]byte
	subtreeHash [32]byte
}

const labelWebsocket = "websocket"

var (
	domainFork    = hashtree.DomainSeparator("ic-hashtree-fork")
	domainLabeled = hashtree.DomainSeparator("ic-hashtree-labeled")
	domainLeaf    = hashtree.DomainSeparator("ic-hashtree-leaf")
	emptyHash     = hashtree.Empty{}.Reconstruct()
)

func forkHash(l, r [32]byte) [32]byte {
	// Fixed size: no allocation on the insert/delete path, which hashes a fork per level.
	var b [17 + 64]byte
	n := copy(b[:], domainFork)
	n += copy(b[n:], l[:])
	copy(b[n:], r[:])
	return sha256.Sum256(b[:])
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

func newRBNode(key string, value [32]byte) *rbNode {
	n := &rbNode{key: key, red: true}
	n.setValue(value)
	n.subtreeHash = n.dataHash
	return n
}

func (n *rbNode) setValue(value [32]byte) {
	n.value = value
	n.dataHash = labeledHash([]byte(n.key), leafHash(value[:]))
}

// rehash recomputes the subtree hash from the children's; every change of a child calls it.
func (n *rbNode) rehash() {
	switch {
	case n.left == nil && n.right == nil:
		n.subtreeHash = n.dataHash
	case n.right == nil:
		n.subtreeHash = forkHash(n.left.subtreeHash, n.dataHash)
	case n.left == nil:
		n.subtreeHash = forkHash(n.dataHash, n.right.subtreeHash)
	default:
		n.subtreeHash = forkHash(n.left.subtreeHash, forkHash(n.dataHash, n.right.subtreeHash))
	}
}

func isRed(n *rbNode) bool { return n != nil && n.red }

func rotateLeft(h *rbNode) *rbNode {
	x := h.right
	h.right = x.left
	h.rehash()
	x.left = h
	x.red = h.red
	h.red = true
	x.rehash()
	return x
}

func rotateRight(h *rbNode) *rbNode {
	x := h.left
	h.left = x.right
	h.rehash()
	x.right = h
	x.red = h.red
	h.red = true
	x.rehash()
	return x
}

func flipColors(h *rbNode) {
	h.red = !h.red
	h.left.red = !h.left.red
	h.right.red = !h.right.red
}

func balance(h *rbNode) *rbNode {
	if isRed(h.right) && !isRed(h.left) {
		h = rotateLeft(h)
	}
	if isRed(h.left) && isRed(h.left.left) {
		h = rotateRight(h)
	}
	if isRed(h.left) && isRed(h.right) {
		flipColors(h)
	}
	return h
}

// len counts the keys.
func (t *rbTree) len() int { return t.size }

// get returns the value stored under key.
func (t *rbTree) get(key string) ([32]byte, bool) {
	n := t.root
	for n != nil {
		switch {
		case key == n.key:
			return n.value, true
		case key < n.key:
			n = n.left
		default:
			n = n.right
		}
	}
	return [32]byte{}, false
}

// insert sets key to value.
func (t *rbTree) insert(key string, value [32]byte) {
	var added bool
	t.root, added = insertInto(t.root, key, value)
	t.root.red = false
	if added {
		t.size++
	}
}

func insertInto(h *rbNode, key string, value [32]byte) (*rbNode, bool) {
	if h == nil {
		return newRBNode(key, value), true
	}
	var added bool
	switch {
	case key == h.key:
		h.setValue(value)
	case key < h.key:
		h.left, added = insertInto(h.left, key, value)
	default:
		h.right, added = insertInto(h.right, key, value)
	}
	h.rehash()
	return balance(h), added
}

// delete removes key if present.
func (t *rbTree) delete(key string) {
	if _, ok := t.get(key); !ok {
		return
	}
	if !isRed(t.root.left) && !isRed(t.root.right) {
		t.root.red = true
	}
	t.root = deleteFrom(t.root, key)
	if t.root != nil {
		t.root.red = false
	}
	t.size--
}

// deleteFrom removes key, which is in the subtree of h.
func deleteFrom(h *rbNode, key string) *rbNode {
	if key < h.key {
		if !isRed(h.left) && !isRed(h.left.left) {
			h = moveRedLeft(h)
		}
		h.left = deleteFrom(h.left, key)
	} else {
		if isRed(h.left) {
			h = rotateRight(h)
		}
		if key == h.key && h.right == nil {
			return nil
		}
		if !isRed(h.right) && !isRed(h.right.left) {
			h = moveRedRight(h)
		}
		if key == h.key {
			// Take over the successor's entry, then remove the successor.
			m := h.right
			for m.left != nil {
				m = m.left
			}
			h.key, m.key = m.key, h.key
			h.value, m.value = m.value, h.value
			h.dataHash, m.dataHash = m.dataHash, h.dataHash
			h.right = deleteMin(h.right)
		} else {
			h.right = deleteFrom(h.right, key)
		}
	}
	h.rehash()
	return balance(h)
}

func deleteMin(h *rbNode) *rbNode {
	if h.left == nil {
		return nil
	}
	if !isRed(h.left) && !isRed(h.left.left) {
		h = moveRedLeft(h)
	}
	h.left = deleteMin(h.left)
	h.rehash()
	return balance(h)
}

func moveRedLeft(h *rbNode) *rbNode {
	flipColors(h)
	if isRed(h.right.left) {
		h.right = rotateRight(h.right)
		h = rotateLeft(h)
		flipColors(h)
	}
	return h
}

func moveRedRight(h *rbNode) *rbNode {
	flipColors(h)
	if isRed(h.left.left) {
		h = rotateRight(h)
		flipColors(h)
	}
	return h
}

// rootHash is the hash of the whole tree (AsHashTree::root_hash).
func (t *rbTree) rootHash() [32]byte {
	if t.root == nil {
		return emptyHash
	}
	return t.root.subtreeHash
}

// certifiedData is the value the CDK passes to set_certified_data.
func (t *rbTree) certifiedData() [32]byte {
	return labeledHash([]byte(labelWebsocket), t.rootHash())
}

// keyBound is the result of a bound search: a key of the tree, exact when it equals the key
// searched for, else its nearest neighbour on the searched side.
type keyBound struct {
	key   string
	exact bool
}

// lowerBound finds key or, failing that, the greatest key below it.
func (t *rbTree) lowerBound(key string) (keyBound, bool) {
	var best keyBound
	found := false
	for n := t.root; n != nil; {
		switch {
		case n.key == key:
			return keyBound{key: n.key, exact: true}, true
		case n.key < key:
			best, found = keyBound{key: n.key}, true
			n = n.right
		default:
			n = n.left
		}
	}
	return best, found
}

// upperBound finds key or, failing that, the least key above it.
func (t *rbTree) upperBound(key string) (keyBound, bool) {
	var best keyBound
	found := false
	for n := t.root; n != nil; {
		switch {
		case n.key == key:
			return keyBound{key: n.key, exact: true}, true
		case n.key > key:
			best, found = keyBound{key: n.key}, true
			n = n.left
		default:
			n = n.right
		}
	}
	return best, found
}

// valueRange is RbTree::value_range, the witness the CDK puts under "websocket" in
// ws_get_messages: it reveals key and value of every entry in [first, last], the keys (values
// pruned) of the nearest entries outside the range when first or last is absent, and prunes the
// rest. Its root hash equals rootHash.
func (t *rbTree) valueRange(first, last string) hashtree.Node {
	lo, hasLo := t.lowerBound(first)
	hi, hasHi := t.upperBound(last)
	switch {
	case hasLo && hasHi:
		return witnessBetween(t.root, lo, hi)
	case hasLo:
		return witnessAbove(t.root, lo)
	case hasHi:
		return witnessBelow(t.root, hi)
	}
	return fullWitness(t.root)
}

// dataTree reveals the node's entry.
func (n *rbNode) dataTree() hashtree.Node {
	v := n.value
	return hashtree.Labeled{Label: hashtree.Label(n.key), Tree: hashtree.Leaf(v[:])}
}

// keyTree reveals the node's key and prunes its value.
func (n *rbNode) keyTree() hashtree.Node {
	return hashtree.Labeled{Label: hashtree.Label(n.key), Tree: hashtree.Pruned(leafHash(n.value[:]))}
}

// boundTree is the witness of the node a bound landed on.
func (n *rbNode) boundTree(b keyBound) hashtree.Node {
	if b.exact {
		return n.dataTree()
	}
	return n.keyTree()
}

func prunedOrEmpty(n *rbNode) hashtree.Node {
	if n == nil {
		return hashtree.Empty{}
	}
	return hashtree.Pruned(n.subtreeHash)
}

func fullWitness(n *rbNode) hashtree.Node {
	if n == nil {
		return hashtree.Empty{}
	}
	return threeWayFork(fullWitness(n.left), n.dataTree(), fullWitness(n.right))
}

func witnessAbove(n *rbNode, lo keyBound) hashtree.Node {
	switch {
	case n == nil:
		return hashtree.Empty{}
	case n.key == lo.key:
		return threeWayFork(prunedOrEmpty(n.left), n.boundTree(lo), fullWitness(n.right))
	case n.key < lo.key:
		return threeWayFork(prunedOrEmpty(n.left), hashtree.Pruned(n.dataHash), witnessAbove(n.right, lo))
	}
	return threeWayFork(witnessAbove(n.left, lo), n.dataTree(), fullWitness(n.right))
}

func witnessBelow(n *rbNode, hi keyBound) hashtree.Node {
	switch {
	case n == nil:
		return hashtree.Empty{}
	case n.key == hi.key:
		return threeWayFork(fullWitness(n.left), n.boundTree(hi), prunedOrEmpty(n.right))
	case n.key > hi.key:
		return threeWayFork(witnessBelow(n.left, hi), hashtree.Pruned(n.dataHash), prunedOrEmpty(n.right))
	}
	return threeWayFork(fullWitness(n.left), n.dataTree(), witnessBelow(n.right, hi))
}

func witnessBetween(n *rbNode, lo, hi keyBound) hashtree.Node {
	if n == nil {
		return hashtree.Empty{}
	}
	k := n.key
	switch {
	case lo.key < k && k < hi.key:
		return threeWayFork(witnessBetween(n.left, lo, hi), n.dataTree(), witnessBetween(n.right, lo, hi))
	case lo.key == k && k == hi.key:
		mid := n.keyTree()
		if lo.exact || hi.exact {
			mid = n.dataTree()
		}
		return threeWayFork(prunedOrEmpty(n.left), mid, prunedOrEmpty(n.right))
	case k == hi.key:
		return threeWayFork(witnessBetween(n.left, lo, hi), n.boundTree(hi), prunedOrEmpty(n.right))
	case lo.key == k:
		return threeWayFork(prunedOrEmpty(n.left), n.boundTree(lo), witnessBetween(n.right, lo, hi))
	case lo.key < k && k > hi.key:
		return threeWayFork(witnessBetween(n.left, lo, hi), hashtree.Pruned(n.dataHash), prunedOrEmpty(n.right))
	case lo.key > k && k < hi.key:
		return threeWayFork(prunedOrEmpty(n.left), hashtree.Pruned(n.dataHash), witnessBetween(n.right, lo, hi))
	}
	// Only reachable with lo > hi, which valueRange's callers never ask for.
	return hashtree.Pruned(n.subtreeHash)
}

// threeWayFork joins a node's left witness, its own entry and its right witness the way the Rust
// tree does: Empty sides drop out, and a fully pruned right part (or whole) collapses into one
// Pruned hash.
func threeWayFork(l, m, r hashtree.Node) hashtree.Node {
	_, lEmpty := l.(hashtree.Empty)
	_, rEmpty := r.(hashtree.Empty)
	switch {
	case lEmpty && rEmpty:
		return m
	case rEmpty:
		return hashtree.Fork{LeftTree: l, RightTree: m}
	case lEmpty:
		return hashtree.Fork{LeftTree: m, RightTree: r}
	}
	mp, mPruned := m.(hashtree.Pruned)
	rp, rPruned := r.(hashtree.Pruned)
	if mPruned && rPruned {
		mr := forkHash(mp, rp)
		if lp, ok := l.(hashtree.Pruned); ok {
			return hashtree.Pruned(forkHash(lp, mr))
		}
		return hashtree.Fork{LeftTree: l, RightTree: hashtree.Pruned(mr)}
	}
	return hashtree.Fork{LeftTree: l, RightTree: hashtree.Fork{LeftTree: m, RightTree: r}}
}
