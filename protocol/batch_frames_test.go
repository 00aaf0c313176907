package protocol_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/icws/icws/protocol"
)

// The hand-written frame encoder writes what the CBOR library writes for the struct.
func TestCanisterToClientMessageEncodingMatchesTheLibrary(t *testing.T) {
	long := bytes.Repeat([]byte{0xab}, 70_000)
	for _, m := range []protocol.CanisterToClientMessage{
		{Key: "gw_00000000000000000001", Content: []byte{1, 2}, Cert: []byte("cert"), Tree: []byte("tree")},
		{Key: "", Content: []byte{}, Cert: []byte{}, Tree: []byte{}},
		{Key: strings.Repeat("k", 300), Content: long, Cert: long[:256], Tree: long[:24]},
		{Key: "k"}, // nil byte strings are null
	} {
		want, err := cbor.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Encode()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("encoding of %q: %x, want %x (%v)", m.Key, got[:min(len(got), 40)], want[:min(len(want), 40)], err)
		}
		if again := m.AppendEncode([]byte{9}); !bytes.Equal(again[1:], want) || again[0] != 9 {
			t.Fatal("AppendEncode does not append")
		}
	}
}

// Every frame of a batch carries its own message's witness: it verifies as the batch's tree does,
// and is a fraction of its size.
func TestBatchFramesCarryOneWitnessEach(t *testing.T) {
	auth, canister, frames := batchFrames(t, 10_000, 50)
	now := time.Now()
	enc := protocol.NewBatchFrames(frames[0].Cert, frames[0].Tree)
	v := &protocol.Verifier{Canister: canister, RootKey: auth.RootKey()}
	for i, f := range frames {
		raw := enc.Frame(f.Key, f.Content)
		got, err := protocol.DecodeCanisterToClientMessage(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got.Key != f.Key || !bytes.Equal(got.Content, f.Content) || !bytes.Equal(got.Cert, f.Cert) {
			t.Fatalf("frame %d: key, content or cert changed", i)
		}
		if !bytes.HasPrefix(got.Tree, protocol.SelfDescribeTag) {
			t.Fatalf("frame %d: witness without the self-describe tag of the tree", i)
		}
		if len(got.Tree)*4 > len(f.Tree) {
			t.Fatalf("frame %d: witness of %d bytes for a tree of %d", i, len(got.Tree), len(f.Tree))
		}
		wm, err := protocol.VerifyCanisterMessage(got, canister, auth.RootKey(), 0, now)
		if err != nil || wm.SequenceNum == 0 {
			t.Fatalf("frame %d does not verify: %v", i, err)
		}
		if _, err := v.Verify(got, now); err != nil {
			t.Fatalf("frame %d does not verify with a Verifier: %v", i, err)
		}
		// Another message's content is not proven by this frame's witness.
		other := got
		other.Content = frames[(i+1)%len(frames)].Content
		if _, err := protocol.VerifyCanisterMessage(other, canister, auth.RootKey(), 0, now); err == nil {
			t.Fatalf("frame %d proves another message's content", i)
		}
	}
}

// A key the tree does not prove, or a tree that does not decode, leaves the tree as it came: the
// frame is what the canister sent, and the client decides.
func TestBatchFramesKeepTheTreeTheyCannotCut(t *testing.T) {
	_, _, frames := batchFrames(t, 100, 5)
	for _, tt := range []struct {
		name, key string
		tree      []byte
	}{
		{"key not in the tree", "no-such-key", frames[0].Tree},
		{"tree does not decode", frames[0].Key, []byte("not a tree")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw := protocol.NewBatchFrames(frames[0].Cert, tt.tree).Frame(tt.key, frames[0].Content)
			want, _ := protocol.CanisterToClientMessage{Key: tt.key, Content: frames[0].Content, Cert: frames[0].Cert, Tree: tt.tree}.Encode()
			if !bytes.Equal(raw, want) {
				t.Fatal("frame differs from the canister's")
			}
		})
	}
}

// BenchmarkBatchFrames encodes the 50 frames of one answer (50 of 10,000 retained messages).
func BenchmarkBatchFrames(b *testing.B) {
	_, _, frames := batchFrames(b, 10_000, 50)
	b.ReportAllocs()
	var size int
	for b.Loop() {
		enc := protocol.NewBatchFrames(frames[0].Cert, frames[0].Tree)
		size = 0
		for _, f := range frames {
			size += len(enc.Frame(f.Key, f.Content))
		}
	}
	b.ReportMetric(float64(size)/float64(len(frames)), "B/frame")
}
