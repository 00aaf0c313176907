package protocol_test

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/internal/testkit/cputime"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
)

// batchFrames certifies the newest n of retained queued messages the way a canister answers
// ws_get_messages: a witness revealing those n leaves of a balanced tree of all retained ones,
// everything else pruned, and a delegated certificate over its root.
func batchFrames(b testing.TB, retained, n int) (*certauth.Authority, principal.Principal, []protocol.CanisterToClientMessage) {
	b.Helper()
	canister := principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")
	auth, err := certauth.New(certauth.Options{Delegated: true, Ranges: []certificate.Range{{Low: canister.Raw, High: canister.Raw}}})
	if err != nil {
		b.Fatal(err)
	}
	gw := principal.MustDecode("sqdfl-mr4km-2hfjy-gajqo-xqvh7-hf4mf-nra4i-3it6l-neaw4-soolw-tae")
	client := protocol.ClientKey{ClientPrincipal: gw, ClientNonce: 1}
	keys := make([]string, retained)
	contents := make([][]byte, retained)
	for i := range retained {
		keys[i] = protocol.MessageKey(gw, uint64(i))
		c, err := protocol.EncodeWebsocketMessageCBOR(protocol.WebsocketMessage{
			ClientKey: client, SequenceNum: uint64(i + 1), Timestamp: uint64(i), Content: []byte(fmt.Sprintf("DIDL\x00\x01\x71\x40%064d", i)),
		})
		if err != nil {
			b.Fatal(err)
		}
		contents[i] = c
	}
	first := retained - n
	var build func(lo, hi int) *hashtree.Node
	build = func(lo, hi int) *hashtree.Node {
		if hi-lo == 1 {
			sum := sha256.Sum256(contents[lo])
			return hashtree.NewLabeled([]byte(keys[lo]), hashtree.NewLeaf(sum[:]))
		}
		mid := (lo + hi) / 2
		return hashtree.NewFork(build(lo, mid), build(mid, hi))
	}
	var witness func(lo, hi int) *hashtree.Node
	witness = func(lo, hi int) *hashtree.Node {
		if hi <= first {
			return hashtree.NewPruned(build(lo, hi).Digest())
		}
		if hi-lo == 1 {
			return build(lo, hi)
		}
		mid := (lo + hi) / 2
		return hashtree.NewFork(witness(lo, mid), witness(mid, hi))
	}
	tree := hashtree.NewLabeled([]byte("websocket"), witness(0, retained))
	root := tree.Digest()
	cert, err := auth.Certificate(canister, root[:], time.Now())
	if err != nil {
		b.Fatal(err)
	}
	treeBytes := append(append([]byte{}, protocol.SelfDescribeTag...), tree.Encode()...)
	frames := make([]protocol.CanisterToClientMessage, 0, n)
	for i := first; i < retained; i++ {
		frames = append(frames, protocol.CanisterToClientMessage{Key: keys[i], Content: contents[i], Cert: cert, Tree: treeBytes})
	}
	return auth, canister, frames
}

// BenchmarkVerifyBatch verifies every frame of one ws_get_messages answer of 50 messages out of
// 10,000 retained (delegated certificate), as client/ does with one Verifier per connection: one
// BLS check for the batch, then decode and hash checks per frame. full/frame is one frame checked
// from scratch, as ic-websocket-js does for each.
func BenchmarkVerifyBatch(b *testing.B) {
	auth, canister, frames := batchFrames(b, 10_000, 50)
	now := time.Now()
	b.Logf("tree %d bytes, certificate %d bytes", len(frames[0].Tree), len(frames[0].Cert))
	b.Run("batch", func(b *testing.B) {
		for b.Loop() {
			v := &protocol.Verifier{Canister: canister, RootKey: auth.RootKey()}
			for _, f := range frames {
				if _, err := v.Verify(f, now); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	// The same batch as the gateway forwards it: each frame with its own message's witness.
	enc := protocol.NewBatchFrames(frames[0].Cert, frames[0].Tree)
	cut := make([]protocol.CanisterToClientMessage, len(frames))
	for i, f := range frames {
		m, err := protocol.DecodeCanisterToClientMessage(enc.Frame(f.Key, f.Content))
		if err != nil {
			b.Fatal(err)
		}
		cut[i] = m
	}
	b.Run("witness/batch", func(b *testing.B) {
		for b.Loop() {
			v := &protocol.Verifier{Canister: canister, RootKey: auth.RootKey()}
			for _, f := range cut {
				if _, err := v.Verify(f, now); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	// After the batch's BLS check: what every further frame costs a client.
	for _, c := range []struct {
		name   string
		frames []protocol.CanisterToClientMessage
	}{{"cached/batch-tree", frames}, {"cached/witness", cut}} {
		b.Run(c.name, func(b *testing.B) {
			v := &protocol.Verifier{Canister: canister, RootKey: auth.RootKey()}
			if _, err := v.Verify(c.frames[0], now); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			meter := cputime.Start()
			for b.Loop() {
				for _, f := range c.frames {
					if _, err := v.Verify(f, now); err != nil {
						b.Fatal(err)
					}
				}
			}
			meter.Report(b, len(c.frames), "frame")
		})
	}
	b.Run("full/frame", func(b *testing.B) {
		for b.Loop() {
			if _, err := protocol.VerifyCanisterMessage(frames[0], canister, auth.RootKey(), 0, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
