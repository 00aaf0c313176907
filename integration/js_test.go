package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestICWebSocketJS runs the real client, ic-websocket-js 0.5.0 under Node, against `icws dev`
// (integration/js/gateway.test.mjs): suite "main" against a canister with default timings (open,
// echo, 200 messages each way, burst:100, client and canister close), suite "keepalive" against
// one with a 3 s ack interval and a 2 s keep-alive timeout. The file explains why two.
func TestICWebSocketJS(t *testing.T) {
	jsDir := filepath.Join(bins.repoRoot, "integration", "js")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (needed for the ic-websocket-js test): %v", err)
	}
	for _, m := range []string{"ic-websocket-js", "ws", "@dfinity/agent"} {
		if _, err := os.Stat(filepath.Join(jsDir, "node_modules", m, "package.json")); err != nil {
			t.Fatalf("integration/js/node_modules/%s is missing: run npm ci in integration/js (%v)", m, err)
		}
	}
	icwsBinary(t) // fail early with the build output
	suites := []struct {
		name      string
		ack       time.Duration
		keepAlive time.Duration
		timeout   time.Duration
	}{
		{"main", 300 * time.Second, 60 * time.Second, 5 * time.Minute},
		{"keepalive", 3 * time.Second, 2 * time.Second, 2 * time.Minute},
	}
	for _, s := range suites {
		t.Run(s.name, func(t *testing.T) {
			dev := startDev(t, ReplicaOptions{AckInterval: s.ack, KeepAliveTimeout: s.keepAlive})
			env := map[string]string{
				"GATEWAY_URL":          dev.GatewayURL,
				"IC_URL":               dev.URL,
				"CANISTER_ID":          dev.CanisterID,
				"CONTROL_URL":          dev.ControlURL,
				"ACK_INTERVAL_MS":      strconv.FormatInt(s.ack.Milliseconds(), 10),
				"KEEPALIVE_TIMEOUT_MS": strconv.FormatInt(s.keepAlive.Milliseconds(), 10),
				"JS_SUITE":             s.name,
				"LOG_LEVEL":            "warn", // the SDK's loglevel
			}
			start := time.Now()
			proc := startProcess(t, "node-"+s.name, node,
				[]string{"--test", "--test-reporter=spec", filepath.Join(jsDir, "gateway.test.mjs")}, env)
			select {
			case <-proc.Done():
			case <-time.After(s.timeout):
				proc.Kill()
				t.Fatalf("node --test gateway.test.mjs (%s) did not finish in %s", s.name, s.timeout)
			}
			stdout, stderr := proc.Logs()
			wall := time.Since(start).Round(time.Millisecond)
			if _, err := proc.Exited(); err != nil {
				t.Fatalf("node --test gateway.test.mjs (%s) failed (%v) after %s:\n%s\n%s", s.name, err, wall, stdout, stderr)
			}
			user, sys := proc.CPUTime()
			t.Logf("ic-websocket-js suite %s passed in %s (node CPU: user %s, sys %s):\n%s", s.name, wall,
				user.Round(time.Millisecond), sys.Round(time.Millisecond), stdout)
		})
	}
}
