package client

import (
	"bytes"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

func TestSignCall(t *testing.T) {
	ed := testkit.NewIdentity(t)
	k1, err := identity.NewRandomSecp256k1Identity()
	if err != nil {
		t.Fatal(err)
	}
	canister := principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")
	now := time.Now()
	for name, id := range map[string]identity.Identity{"ed25519": ed, "secp256k1": k1} {
		t.Run(name, func(t *testing.T) {
			frame, rid, err := signCall(id, canister, "ws_message", []byte("DIDL\x00\x00"), now)
			if err != nil {
				t.Fatal(err)
			}
			env, err := protocol.DecodeClientFrame(frame)
			if err != nil {
				t.Fatal(err)
			}
			cid, sender := principal.Principal{Raw: env.Content.CanisterID}, principal.Principal{Raw: env.Content.Sender}
			if !env.Signed || env.Content.MethodName != "ws_message" || !cid.Equal(canister) || !sender.Equal(id.Sender()) || len(env.Content.Nonce) != 16 {
				t.Fatalf("content = %+v", env.Content)
			}
			exp := time.Unix(0, int64(env.Content.IngressExpiry))
			if d := exp.Sub(now); d < 3*time.Minute || d > 4*time.Minute {
				t.Fatalf("ingress_expiry %s ahead, want 3-4 min", d)
			}
			got, err := protocol.RequestIDOfEnvelope(env.Raw)
			if err != nil || got != rid {
				t.Fatalf("request id %x, %v; want %x", got, err, rid)
			}
			var e struct {
				SenderPubkey []byte `cbor:"sender_pubkey"`
				SenderSig    []byte `cbor:"sender_sig"`
			}
			if err := cbor.Unmarshal(env.Raw, &e); err != nil {
				t.Fatal(err)
			}
			msg := append([]byte("\x0Aic-request"), rid[:]...)
			if name == "ed25519" {
				// DER SPKI of Ed25519 ends with the 32-byte key.
				pub := ed25519.PublicKey(e.SenderPubkey[len(e.SenderPubkey)-32:])
				if !ed25519.Verify(pub, msg, e.SenderSig) {
					t.Fatal("ed25519 signature does not verify")
				}
			} else if !id.Verify(msg, e.SenderSig) {
				t.Fatal("secp256k1 signature does not verify")
			}
			if principal.NewSelfAuthenticating(e.SenderPubkey).String() != id.Sender().String() {
				t.Fatal("sender is not the self-authenticating principal of sender_pubkey")
			}
		})
	}
}

func TestAckQueue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	q := ackQueue{expiration: 10 * time.Second}
	for i := uint64(1); i <= 4; i++ {
		if err := q.add(i, t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.add(4, t0); err == nil {
		t.Fatal("repeated sequence number accepted")
	}
	if exp, err := q.ack(2, t0.Add(time.Second)); err != nil || len(exp) != 0 {
		t.Fatalf("ack 2 = %v, %v", exp, err)
	}
	if got := q.pending(); len(got) != 2 || got[0] != 3 {
		t.Fatalf("pending = %v", got)
	}
	// An ack for an old number is harmless.
	if _, err := q.ack(1, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Pending items older than the window are reported.
	if exp, err := q.ack(3, t0.Add(11*time.Second)); err != nil || len(exp) != 1 || exp[0] != 4 {
		t.Fatalf("ack 3 late = %v, %v", exp, err)
	}
	if _, err := q.ack(9, t0); err == nil {
		t.Fatal("ack above the last sent accepted")
	}
	var empty ackQueue
	if _, err := empty.ack(9, t0); err != nil {
		t.Fatalf("SDK accepts any ack on an empty queue: %v", err)
	}
}

// A kept frame is re-sent byte for byte while its ingress_expiry is far enough away (the IC then
// deduplicates a repeat by request id) and signed anew when it is about to expire.
func TestResendKeepsOrResignsFrame(t *testing.T) {
	got := make(chan []byte, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			got <- b
		}
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	now := time.Now()
	clock := func() time.Time { return now }
	id := testkit.NewIdentity(t)
	c := &Conn{cfg: Config{Identity: id, Canister: principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai"), Now: clock, WriteTimeout: time.Second}}
	o := &outgoing{msg: protocol.WebsocketMessage{SequenceNum: 1, Content: []byte{1}}}
	var frames [][]byte
	for _, advance := range []time.Duration{0, time.Minute, 3 * time.Minute} {
		now = now.Add(advance)
		if err := c.writeMessageLocked(ws, o); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, <-got)
	}
	if !bytes.Equal(frames[0], frames[1]) {
		t.Fatal("a fresh frame was signed anew")
	}
	if bytes.Equal(frames[1], frames[2]) {
		t.Fatal("a frame about to expire was re-sent as is")
	}
}
