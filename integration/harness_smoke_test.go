package integration

import (
	"context"
	"testing"
	"time"
)

// TestHarnessReplicaAndIdentity checks the parts every gateway test stands on: `icws replica`
// serves the IC status and the demo canister's control API, and `icws identity` creates a key.
func TestHarnessReplicaAndIdentity(t *testing.T) {
	r := startReplica(t, ReplicaOptions{AckInterval: 3 * time.Second, KeepAliveTimeout: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clients, err := r.Control.Clients(ctx)
	if err != nil {
		t.Fatalf("control clients: %v", err)
	}
	if len(clients) != 0 {
		t.Fatalf("fresh canister has clients %v", clients)
	}
	path, gw := newIdentityFile(t)
	if gw == "" {
		t.Fatalf("icws identity printed no principal (key %s)", path)
	}
	// The same file gives the same principal (roles share one identity).
	_, again := identityOf(t, path)
	if again != gw {
		t.Fatalf("icws identity on an existing key printed %q, first run %q", again, gw)
	}
	if err := r.Proc.Stop(); err != nil {
		t.Fatalf("icws replica did not exit cleanly on SIGTERM: %v", err)
	}
}
