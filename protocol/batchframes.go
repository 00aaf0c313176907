package protocol

import (
	"bytes"

	"github.com/icws/icws/protocol/hashtree"
)

// BatchFrames encodes the gateway → client frames of one ws_get_messages answer. Each frame
// carries the answer's certificate and, instead of the answer's tree (a witness for every message
// of the batch, most of a frame's bytes), the witness of its own message: the tree with every
// subtree off the path ["websocket", key] pruned to its root hash. That witness has the same root
// hash, so the certificate's certified_data covers it, and it proves the content hash under
// ["websocket", key] exactly as the whole tree does, so clients verify it unchanged
// (VerifyCanisterMessage). A frame whose key the tree does not prove, or a batch whose tree does
// not decode, carries the tree as the canister sent it. Not safe for concurrent use.
type BatchFrames struct {
	cert, tree []byte
	tagged     bool             // the tree came with a self-describe tag; its witnesses get one too
	pruner     *hashtree.Pruner // nil when the tree does not decode
	witness    []byte           // scratch for one witness
}

// NewBatchFrames prepares the frames of an answer with the given certificate and tree.
func NewBatchFrames(cert, tree []byte) *BatchFrames {
	b := &BatchFrames{cert: cert, tree: tree, tagged: bytes.HasPrefix(tree, SelfDescribeTag)}
	if t, err := hashtree.Decode(tree); err == nil {
		b.pruner = hashtree.NewPruner(t)
	}
	return b
}

var labelWebsocket = []byte("websocket")

// Frame returns the encoded CanisterToClientMessage of the message with key and content, in a
// buffer of its own.
func (b *BatchFrames) Frame(key string, content []byte) []byte {
	return b.AppendFrame(nil, key, content)
}

// AppendFrame appends the encoded CanisterToClientMessage of the message with key and content to
// dst.
func (b *BatchFrames) AppendFrame(dst []byte, key string, content []byte) []byte {
	tree := b.tree
	if b.pruner != nil {
		b.witness = b.witness[:0]
		if b.tagged {
			b.witness = append(b.witness, SelfDescribeTag...)
		}
		if w, ok := b.pruner.AppendWitness(b.witness, labelWebsocket, []byte(key)); ok {
			b.witness, tree = w, w
		}
	}
	m := CanisterToClientMessage{Key: key, Content: content, Cert: b.cert, Tree: tree}
	if dst == nil {
		dst = make([]byte, 0, m.encodedLen())
	}
	return m.AppendEncode(dst)
}
