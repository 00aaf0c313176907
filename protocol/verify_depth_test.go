package protocol_test

import (
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/hashtree"
)

// A busy canister's witness is deep (ic-certification's RbTree takes up to two nodes per level):
// frames whose tree reaches hashtree.MaxDepth verify, one level more is refused as undecodable.
func TestVerifyDeepWitness(t *testing.T) {
	canister := principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")
	now := time.Now()
	auth, err := certauth.New(certauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	content := mustContent(t, 1)
	key := protocol.MessageKey(principal.MustDecode("2vxsx-fae"), 0)
	frame := func(depth int) protocol.CanisterToClientMessage {
		sum := sha256.Sum256(content)
		// websocket / fork^(depth-3) / key / leaf
		n := hashtree.NewLabeled([]byte(key), hashtree.NewLeaf(sum[:]))
		for i := range depth - 3 {
			if i%2 == 0 {
				n = hashtree.NewFork(hashtree.NewPruned([32]byte{byte(i)}), n)
			} else {
				n = hashtree.NewFork(n, hashtree.NewPruned([32]byte{byte(i)}))
			}
		}
		tree := hashtree.NewLabeled([]byte("websocket"), n)
		root := tree.Digest()
		cert, err := auth.Certificate(canister, root[:], now)
		if err != nil {
			t.Fatal(err)
		}
		return protocol.CanisterToClientMessage{Key: key, Content: content, Cert: cert, Tree: tree.Encode()}
	}
	for _, depth := range []int{34, 70, hashtree.MaxDepth} {
		if _, err := protocol.VerifyCanisterMessage(frame(depth), canister, auth.RootKey(), 0, now); err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
	}
	_, err = protocol.VerifyCanisterMessage(frame(hashtree.MaxDepth+1), canister, auth.RootKey(), 0, now)
	if !errors.Is(err, protocol.ErrTreeDecode) || !errors.Is(err, hashtree.ErrTooDeep) {
		t.Fatalf("depth %d: %v", hashtree.MaxDepth+1, err)
	}
}
