package protocol_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
)

func mustContent(t *testing.T, seq uint64) []byte {
	t.Helper()
	b, err := protocol.EncodeWebsocketMessageCBOR(protocol.WebsocketMessage{
		ClientKey:   protocol.ClientKey{ClientPrincipal: principal.MustDecode("2vxsx-fae"), ClientNonce: 7},
		SequenceNum: seq,
		Timestamp:   1,
		Content:     []byte("DIDL\x00\x00"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyCanisterMessage(t *testing.T) {
	canister := principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")
	other := principal.MustDecode("bd3sg-teaaa-aaaaa-qaaba-cai")
	now := time.Now()
	gw := principal.MustDecode("2vxsx-fae")
	key1, key2 := protocol.MessageKey(gw, 0), protocol.MessageKey(gw, 1)

	auth, err := certauth.New(certauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := certauth.New(certauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	delegated, err := certauth.New(certauth.Options{Delegated: true, Ranges: []certificate.Range{{Low: canister.Raw, High: canister.Raw}}, DelegationTime: now})
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := mustContent(t, 1), mustContent(t, 2)

	frames := func(a *certauth.Authority, at time.Time) []protocol.CanisterToClientMessage {
		t.Helper()
		fs, err := a.Frames(canister, at, certauth.Message{Key: key1, Content: c1}, certauth.Message{Key: key2, Content: c2})
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}

	tests := []struct {
		name     string
		msg      func() protocol.CanisterToClientMessage
		canister principal.Principal
		rootKey  []byte
		wantErr  error
		wantSeq  uint64
	}{
		{name: "valid", msg: func() protocol.CanisterToClientMessage { return frames(auth, now)[1] }, wantSeq: 2},
		{name: "valid with delegation", msg: func() protocol.CanisterToClientMessage { return frames(delegated, now)[0] }, rootKey: delegated.RootKey(), wantSeq: 1},
		{name: "bad signature", msg: func() protocol.CanisterToClientMessage { return frames(foreign, now)[0] }, wantErr: protocol.ErrCertificateSignature},
		{name: "corrupted signature", msg: func() protocol.CanisterToClientMessage {
			m := frames(auth, now)[0]
			// The signature is the last 48 bytes of the encoded certificate.
			m.Cert = bytes.Clone(m.Cert)
			m.Cert[len(m.Cert)-5] ^= 0x01
			return m
		}, wantErr: protocol.ErrCertificateSignature},
		{name: "wrong canister", msg: func() protocol.CanisterToClientMessage { return frames(auth, now)[0] }, canister: other, wantErr: protocol.ErrCertifiedData},
		{name: "canister outside delegation range", msg: func() protocol.CanisterToClientMessage { return frames(delegated, now)[0] }, canister: other, rootKey: delegated.RootKey(), wantErr: protocol.ErrCertificateSignature},
		{name: "old certificate", msg: func() protocol.CanisterToClientMessage { return frames(auth, now.Add(-5*time.Minute-time.Second))[0] }, wantErr: protocol.ErrCertificateTime},
		{name: "certificate from the future", msg: func() protocol.CanisterToClientMessage { return frames(auth, now.Add(5*time.Minute+time.Second))[0] }, wantErr: protocol.ErrCertificateTime},
		{name: "tree root is not certified_data", msg: func() protocol.CanisterToClientMessage {
			m := frames(auth, now)[0]
			m.Tree, _ = certauth.WebsocketTree([]certauth.Message{{Key: key1, Content: c2}})
			return m
		}, wantErr: protocol.ErrCertifiedData},
		{name: "content hash mismatch", msg: func() protocol.CanisterToClientMessage {
			m := frames(auth, now)[0]
			m.Content = c2
			return m
		}, wantErr: protocol.ErrContentHash},
		{name: "key not in tree", msg: func() protocol.CanisterToClientMessage {
			m := frames(auth, now)[0]
			m.Key = protocol.MessageKey(gw, 5)
			return m
		}, wantErr: protocol.ErrContentHash},
		{name: "undecodable certificate", msg: func() protocol.CanisterToClientMessage {
			m := frames(auth, now)[0]
			m.Cert = []byte{0x80}
			return m
		}, wantErr: protocol.ErrCertificateDecode},
		{name: "empty tree array does not panic", msg: func() protocol.CanisterToClientMessage {
			m := frames(auth, now)[0]
			m.Tree = []byte{0x80}
			return m
		}, wantErr: protocol.ErrTreeDecode},
		{name: "certified garbage content", msg: func() protocol.CanisterToClientMessage {
			fs, err := auth.Frames(canister, now, certauth.Message{Key: key1, Content: []byte{0xff, 0x00}})
			if err != nil {
				t.Fatal(err)
			}
			return fs[0]
		}, wantErr: protocol.ErrContentDecode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cid := canister
			if len(tt.canister.Raw) > 0 {
				cid = tt.canister
			}
			rootKey := auth.RootKey()
			if tt.rootKey != nil {
				rootKey = tt.rootKey
			}
			// A Verifier that has already accepted a valid certificate must judge the same way.
			v := &protocol.Verifier{Canister: cid, RootKey: rootKey, MaxCertAge: 5 * time.Minute}
			if tt.rootKey == nil && tt.canister.Raw == nil {
				if _, err := v.Verify(frames(auth, now)[0], now); err != nil {
					t.Fatal(err)
				}
			}
			msg := tt.msg()
			for _, verify := range []func() (protocol.WebsocketMessage, error){
				func() (protocol.WebsocketMessage, error) {
					return protocol.VerifyCanisterMessage(msg, cid, rootKey, 5*time.Minute, now)
				},
				func() (protocol.WebsocketMessage, error) { return v.Verify(msg, now) },
				func() (protocol.WebsocketMessage, error) { return v.Verify(msg, now) }, // cached
			} {
				wm, err := verify()
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("error = %v, want %v", err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if wm.SequenceNum != tt.wantSeq {
					t.Fatalf("sequence_num = %d, want %d", wm.SequenceNum, tt.wantSeq)
				}
			}
		})
	}
}

// ic-websocket-js accepts a tree whose "websocket" label holds the leaf directly.
func TestVerifyCanisterMessageFallbackLeaf(t *testing.T) {
	canister := principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")
	now := time.Now()
	auth, err := certauth.New(certauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	content := mustContent(t, 1)
	sum := sha256.Sum256(content)
	node := hashtree.NewLabeled([]byte("websocket"), hashtree.NewLeaf(sum[:]))
	tree := node.Encode()
	root := node.Digest()
	cert, err := auth.Certificate(canister, root[:], now)
	if err != nil {
		t.Fatal(err)
	}
	msg := protocol.CanisterToClientMessage{Key: "anything", Content: content, Cert: cert, Tree: tree}
	if _, err := protocol.VerifyCanisterMessage(msg, canister, auth.RootKey(), 0, now); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkVerify compares a full check per frame (what ic-websocket-js does) with a Verifier that
// has already checked the batch's certificate.
func BenchmarkVerify(b *testing.B) {
	canister := principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")
	now := time.Now()
	c, err := protocol.EncodeWebsocketMessageCBOR(protocol.WebsocketMessage{SequenceNum: 1, Content: []byte("DIDL\x00\x00")})
	if err != nil {
		b.Fatal(err)
	}
	for _, delegated := range []bool{false, true} {
		var auth *certauth.Authority
		if delegated {
			auth, err = certauth.New(certauth.Options{Delegated: true, Ranges: []certificate.Range{{Low: canister.Raw, High: canister.Raw}}, DelegationTime: now})
		} else {
			auth, err = certauth.New(certauth.Options{})
		}
		if err != nil {
			b.Fatal(err)
		}
		fs, err := auth.Frames(canister, now, certauth.Message{Key: "gw_00000000000000000000", Content: c})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("full/delegation=%v", delegated), func(b *testing.B) {
			for b.Loop() {
				if _, err := protocol.VerifyCanisterMessage(fs[0], canister, auth.RootKey(), 0, now); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("cached/delegation=%v", delegated), func(b *testing.B) {
			v := &protocol.Verifier{Canister: canister, RootKey: auth.RootKey()}
			for b.Loop() {
				if _, err := v.Verify(fs[0], now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
