package protocol_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
)

// upstreamSet is one file of testdata/upstream (see the README there for where each comes from).
type upstreamSet struct {
	Canister  string          `json:"canister"`
	Gateway   string          `json:"gateway"`
	Status    string          `json:"status"`
	RootKey   string          `json:"root_key"`
	Frames    []upstreamFrame `json:"frames"`
	OtherTree string          `json:"other_tree"`
}

type upstreamFrame struct {
	Name    string `json:"name"`
	Key     string `json:"key"`
	Content string `json:"content"`
	Cert    string `json:"cert"`
	Tree    string `json:"tree"`
}

func loadUpstream(t testing.TB, name string) upstreamSet {
	t.Helper()
	raw, err := os.ReadFile("testdata/upstream/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var s upstreamSet
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rootKey returns the set's root key: the root_key of its recorded /api/v2/status body, or the
// key recorded on its own.
func (s upstreamSet) rootKey(t testing.TB) []byte {
	t.Helper()
	if s.RootKey != "" {
		return unhex(t, s.RootKey)
	}
	k, err := protocol.RootKeyOfStatus(unhex(t, s.Status))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (f upstreamFrame) message(t testing.TB) protocol.CanisterToClientMessage {
	t.Helper()
	return protocol.CanisterToClientMessage{Key: f.Key, Content: unhex(t, f.Content), Cert: unhex(t, f.Cert), Tree: unhex(t, f.Tree)}
}

// certTime is the time in a frame's certificate: the recorded frames are years old, so they are
// verified as of a moment just after they were certified.
func certTime(t testing.TB, m protocol.CanisterToClientMessage) time.Time {
	t.Helper()
	c, err := certificate.Decode(m.Cert)
	if err != nil {
		t.Fatal(err)
	}
	at, err := c.Time()
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// serviceMessage decodes the Candid service message inside a content.
func serviceMessage(t testing.TB, wm protocol.WebsocketMessage) protocol.WebsocketServiceMessageContent {
	t.Helper()
	sm, err := protocol.DecodeServiceMessage(wm.Content)
	if err != nil {
		t.Fatalf("service message: %v", err)
	}
	return sm
}

func TestUpstreamFramesSDKv050(t *testing.T) {
	set := loadUpstream(t, "ic-websocket-sdk-js-v0.5.0-messages.json")
	canister := principal.MustDecode(set.Canister)
	rootKey := set.rootKey(t)
	client := protocol.ClientKey{ClientPrincipal: principal.MustDecode("kj67s-b5v2y-ahlkr-kmume-xbow6-zwbtj-j4j3m-ae46e-qqrcu-uxiby-yae"), ClientNonce: 385892949151814926}
	frames := map[string]protocol.CanisterToClientMessage{}
	for _, f := range set.Frames {
		frames[f.Name] = f.message(t)
	}
	verify := func(t *testing.T, name string) protocol.WebsocketMessage {
		t.Helper()
		m := frames[name]
		wm, err := protocol.VerifyCanisterMessage(m, canister, rootKey, 5*time.Minute, certTime(t, m).Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if !wm.ClientKey.Equal(client) {
			t.Fatalf("client key %s, want %s", wm.ClientKey, client)
		}
		return wm
	}
	t.Run("open", func(t *testing.T) {
		wm := verify(t, "VALID_OPEN_MESSAGE")
		sm := serviceMessage(t, wm)
		if wm.SequenceNum != 1 || !wm.IsServiceMessage || sm.OpenMessage == nil || !sm.OpenMessage.ClientKey.Equal(client) {
			t.Fatalf("open message: %+v, %+v", wm, sm)
		}
	})
	t.Run("ack", func(t *testing.T) {
		wm := verify(t, "VALID_ACK_MESSAGE")
		sm := serviceMessage(t, wm)
		if wm.SequenceNum != 2 || sm.AckMessage == nil || sm.AckMessage.LastIncomingSequenceNum != 0 {
			t.Fatalf("ack message: %+v, %+v", wm, sm)
		}
	})
	t.Run("application message", func(t *testing.T) {
		wm := verify(t, "VALID_MESSAGE_SEQ_NUM_3")
		var app struct {
			Text string `ic:"text"`
		}
		// The SDK test's application type is record { text }, not the demo's AppMessage; agent-go
		// reads it here as an independent decoder.
		if err := candid.Unmarshal(wm.Content, []any{&app}); err != nil {
			t.Fatal(err)
		}
		if wm.SequenceNum != 3 || wm.IsServiceMessage || app.Text != "Hello" {
			t.Fatalf("application message: %+v, %+v", wm, app)
		}
	})
	t.Run("close", func(t *testing.T) {
		wm := verify(t, "VALID_CLOSE_MESSAGE")
		sm := serviceMessage(t, wm)
		if wm.SequenceNum != 4 || sm.CloseMessage == nil || sm.CloseMessage.Reason.String() != "ClosedByApplication" {
			t.Fatalf("close message: %+v, %+v", wm, sm)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		m := frames["INVALID_MESSAGE_KEY"]
		_, err := protocol.VerifyCanisterMessage(m, canister, rootKey, 5*time.Minute, certTime(t, m).Add(time.Second))
		if !errors.Is(err, protocol.ErrContentHash) {
			t.Fatalf("error %v, want ErrContentHash", err)
		}
	})
	t.Run("another root key", func(t *testing.T) {
		m := frames["VALID_OPEN_MESSAGE"]
		other := loadUpstream(t, "ic-websocket-sdk-js-v0.3.0-messages.json").rootKey(t)
		_, err := protocol.VerifyCanisterMessage(m, canister, other, 5*time.Minute, certTime(t, m).Add(time.Second))
		if !errors.Is(err, protocol.ErrCertificateSignature) {
			t.Fatalf("error %v, want ErrCertificateSignature", err)
		}
	})
	t.Run("another canister", func(t *testing.T) {
		m := frames["VALID_OPEN_MESSAGE"]
		_, err := protocol.VerifyCanisterMessage(m, principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai"), rootKey, 5*time.Minute, certTime(t, m).Add(time.Second))
		if !errors.Is(err, protocol.ErrCertifiedData) {
			t.Fatalf("error %v, want ErrCertifiedData", err)
		}
	})
	t.Run("too old", func(t *testing.T) {
		m := frames["VALID_OPEN_MESSAGE"]
		_, err := protocol.VerifyCanisterMessage(m, canister, rootKey, 5*time.Minute, certTime(t, m).Add(6*time.Minute))
		if !errors.Is(err, protocol.ErrCertificateTime) {
			t.Fatalf("error %v, want ErrCertificateTime", err)
		}
	})
}

func TestUpstreamFramesSDKv030(t *testing.T) {
	set := loadUpstream(t, "ic-websocket-sdk-js-v0.3.0-messages.json")
	canister := principal.MustDecode(set.Canister)
	rootKey := set.rootKey(t)
	want := map[string]struct {
		seq     uint64
		service bool
		err     error
	}{
		"VALID_OPEN_MESSAGE":      {seq: 1, service: true},
		"VALID_MESSAGE_SEQ_NUM_2": {seq: 2},
		"VALID_MESSAGE_SEQ_NUM_3": {seq: 3},
		"VALID_ACK_MESSAGE":       {seq: 2, service: true},
		"INVALID_MESSAGE_KEY":     {err: protocol.ErrContentHash},
	}
	for _, f := range set.Frames {
		t.Run(f.Name, func(t *testing.T) {
			w, ok := want[f.Name]
			if !ok {
				t.Fatalf("no expectation for %s", f.Name)
			}
			m := f.message(t)
			wm, err := protocol.VerifyCanisterMessage(m, canister, rootKey, 5*time.Minute, certTime(t, m).Add(time.Second))
			if w.err != nil {
				if !errors.Is(err, w.err) {
					t.Fatalf("error %v, want %v", err, w.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if wm.SequenceNum != w.seq || wm.IsServiceMessage != w.service {
				t.Fatalf("message %+v", wm)
			}
			if w.service {
				serviceMessage(t, wm)
			}
		})
	}
}

// The frame of ic-websocket-sdk-js's utils test comes from a CDK before 0.3, whose content has an
// older layout (client_key as a blob): the certificate, tree and content hash verify, and only
// the content does not decode.
func TestUpstreamFrameOfAnOlderCDK(t *testing.T) {
	set := loadUpstream(t, "ic-websocket-sdk-js-v0.5.0-utils.json")
	canister := principal.MustDecode(set.Canister)
	m := set.Frames[0].message(t)
	now := certTime(t, m).Add(time.Second)
	if _, err := protocol.VerifyCanisterMessage(m, canister, set.rootKey(t), 5*time.Minute, now); !errors.Is(err, protocol.ErrContentDecode) {
		t.Fatalf("error %v, want ErrContentDecode", err)
	}
	m.Tree = unhex(t, set.OtherTree)
	if _, err := protocol.VerifyCanisterMessage(m, canister, set.rootKey(t), 5*time.Minute, now); !errors.Is(err, protocol.ErrCertifiedData) {
		t.Fatalf("another tree: error %v, want ErrCertifiedData", err)
	}
}

// Every tampered copy of a recorded frame is refused: each byte of the tree, the content and the
// key is changed in turn, and each byte of the certificate of the first frame (of the others, every
// seventh byte, and in -short mode every seventeenth: a changed certificate costs a BLS
// verification).
func TestUpstreamFramesTampered(t *testing.T) {
	set := loadUpstream(t, "ic-websocket-sdk-js-v0.5.0-messages.json")
	canister := principal.MustDecode(set.Canister)
	rootKey := set.rootKey(t)
	for n, f := range set.Frames {
		certStride := 7
		switch {
		case testing.Short():
			certStride = 17
		case n == 0:
			certStride = 1
		}
		if f.Name == "INVALID_MESSAGE_KEY" {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			good := f.message(t)
			now := certTime(t, good).Add(time.Second)
			// A Verifier that has checked the good certificate skips the BLS check only for those
			// exact certificate bytes.
			v := &protocol.Verifier{Canister: canister, RootKey: rootKey}
			if _, err := v.Verify(good, now); err != nil {
				t.Fatal(err)
			}
			try := func(part string, i int, m protocol.CanisterToClientMessage) {
				if _, err := v.Verify(m, now); err == nil {
					t.Fatalf("%s with byte %d changed is accepted", part, i)
				}
			}
			for i := range len(good.Cert) {
				if i%certStride != 0 {
					continue
				}
				m := good
				m.Cert = flip(good.Cert, i)
				try("certificate", i, m)
			}
			for i := range len(good.Tree) {
				m := good
				m.Tree = flip(good.Tree, i)
				try("tree", i, m)
			}
			for i := range len(good.Content) {
				m := good
				m.Content = flip(good.Content, i)
				try("content", i, m)
			}
			for i := range len(good.Key) {
				m := good
				m.Key = string(flip([]byte(good.Key), i))
				try("key", i, m)
			}
		})
	}
}

// flip returns a copy of b with byte i changed.
func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x5a
	return c
}
