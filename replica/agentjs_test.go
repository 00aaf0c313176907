package replica_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/replica"
)

// repoRoot walks up from the package directory to go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the package directory")
		}
		dir = parent
	}
}

// TestAgentJS runs integration/js/replica.test.mjs (@dfinity/agent 2.4.1) against a replica on a
// real listener.
func TestAgentJS(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	jsDir := filepath.Join(repoRoot(t), "integration", "js")
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "@dfinity", "agent")); err != nil {
		t.Fatalf("integration/js/node_modules is missing @dfinity/agent: run npm ci in integration/js (%v)", err)
	}
	r, err := replica.New(replica.Config{Logger: testkit.Logger(t, slog.LevelWarn), TestHooks: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Install(testCanisterID, newTestCanister); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	runCtx, stop := context.WithTimeout(context.Background(), 120*time.Second)
	defer stop()
	cmd := exec.CommandContext(runCtx, node, "--test", "--test-reporter=spec", "replica.test.mjs")
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(),
		"REPLICA_URL=http://"+ln.Addr().String(),
		"REPLICA_CANISTER_ID="+testCanisterID.String(),
	)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("node --test replica.test.mjs:\n%s", out)
	if errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		t.Fatal("node test timed out")
	}
	if err != nil {
		t.Fatalf("node test failed: %v", err)
	}
}
