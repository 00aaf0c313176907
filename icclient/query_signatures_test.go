package icclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"

	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
)

// Some local replicas answer queries without node signatures: with SkipQuerySignatures the
// client accepts such answers (and fetches no node keys); without it, it refuses them.
func TestUnsignedQueryAnswers(t *testing.T) {
	e := startReplica(t, replica.Config{NoQuerySignatures: true})

	strict := newTestClient(t, e)
	_, err := strict.Query(ctx(t), testCanisterID, "get", []byte("x"))
	var ve *VerificationError
	if !errors.As(err, &ve) {
		t.Fatalf("unsigned answer with signatures verified: %v", err)
	}

	lenient := newTestClient(t, e, func(c *Config) { c.SkipQuerySignatures = true })
	before := e.count("read_state")
	got, err := lenient.Query(ctx(t), testCanisterID, "get", []byte("x"))
	if err != nil || string(got) != "x" {
		t.Fatalf("Query: %q, %v", got, err)
	}
	if _, err := lenient.Query(ctx(t), testCanisterID, "qreject", nil); !errors.As(err, new(*RejectError)) {
		t.Fatalf("unsigned reject: %v", err)
	}
	if n := e.count("read_state") - before; n != 0 {
		t.Fatalf("%d read_state requests: node keys are not needed without signature checks", n)
	}
}

func TestSkipQuerySignaturesRefusedForMainnet(t *testing.T) {
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{"https://icp-api.io", "https://ic0.app/", "https://icp0.io"} {
		_, err := New(context.Background(), Config{URL: url, Identity: id, SkipQuerySignatures: true})
		if err == nil || !strings.Contains(err.Error(), "mainnet") {
			t.Fatalf("%s: %v", url, err)
		}
	}
}

// A query answer carries at most one signature per node of the subnet: repeating one genuine
// signature, which needs no key, must not make an answer cost a signature check per copy.
func TestQuerySignaturesAtMostOnePerNode(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := &nodeKeys{keys: map[string]ed25519.PublicKey{"node-a": pub, "node-b": other}}
	signed := map[string]any{"status": "replied", "request_id": make([]byte, 32)}
	ts := uint64(time.Now().UnixNano())
	m := map[string]any{"timestamp": ts}
	for k, v := range signed {
		m[k] = v
	}
	h, err := protocol.HashOfMap(m)
	if err != nil {
		t.Fatal(err)
	}
	sig := querySignature{Timestamp: ts, Identity: []byte("node-a"), Signature: ed25519.Sign(priv, append(append([]byte{}, responseSignDomain...), h[:]...))}
	for _, tc := range []struct {
		name string
		sigs []querySignature
		want string
	}{
		{"one genuine signature", []querySignature{sig}, ""},
		{"the same node twice", []querySignature{sig, sig}, "signed twice"},
		{"more signatures than nodes", slices.Repeat([]querySignature{sig}, 1000), "1000 signatures from a subnet of 2 nodes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkQuerySignatures(keys, tc.sigs, signed, time.Minute)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
