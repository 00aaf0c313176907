package icclient

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aviate-labs/agent-go/identity"

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
