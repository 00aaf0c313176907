package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/icws/icws/replica/wscanister"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

// scenarioResult is what one client saw of the shared scenario, and what the canister saw of it.
type scenarioResult struct {
	Received               []string `json:"received"`
	CanisterTexts          []string `json:"canister_texts"`
	CanisterSequenceErrors int      `json:"canister_sequence_errors"`
	CanisterCloses         []string `json:"canister_closes"`
}

// scenarioSends are the texts the scenario sends; gateway.test.mjs sends the same.
var scenarioSends = []string{"one", "two", "burst:3", "three"}

// TestSameScenarioGoAndJS runs one scenario through the Go client (client/) and through
// ic-websocket-js 0.5.0 against the same `icws dev`, and requires the same result from both:
// send four messages (one a burst request), receive the canister's push, close.
func TestSameScenarioGoAndJS(t *testing.T) {
	jsDir := filepath.Join(bins.repoRoot, "integration", "js")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (needed for the ic-websocket-js side): %v", err)
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "ic-websocket-js", "package.json")); err != nil {
		t.Fatalf("integration/js/node_modules is missing: run npm ci in integration/js (%v)", err)
	}
	dev := startDev(t, ReplicaOptions{})

	goSide := runScenarioGo(t, dev)

	out := filepath.Join(t.TempDir(), "scenario.json")
	proc := startProcess(t, "node-scenario", node, []string{"--test", "--test-reporter=spec", filepath.Join(jsDir, "gateway.test.mjs")},
		map[string]string{
			"GATEWAY_URL": dev.GatewayURL, "IC_URL": dev.URL, "CANISTER_ID": dev.CanisterID,
			"CONTROL_URL": dev.ControlURL, "ACK_INTERVAL_MS": "300000", "JS_SUITE": "scenario",
			"SCENARIO_OUT": out, "LOG_LEVEL": "warn",
		})
	select {
	case <-proc.Done():
	case <-time.After(3 * time.Minute):
		proc.Kill()
		t.Fatal("the ic-websocket-js scenario did not finish in 3 minutes")
	}
	if _, err := proc.Exited(); err != nil {
		stdout, stderr := proc.Logs()
		t.Fatalf("the ic-websocket-js scenario failed (%v):\n%s\n%s", err, stdout, stderr)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("read the JS result: %v", err)
	}
	var jsSide scenarioResult
	if err := json.Unmarshal(raw, &jsSide); err != nil {
		t.Fatalf("decode the JS result %s: %v", raw, err)
	}

	want := scenarioResult{
		Received:       []string{"one", "two", "burst:1", "burst:2", "burst:3", "three", "pushed"},
		CanisterTexts:  scenarioSends,
		CanisterCloses: []string{"ws_close"},
	}
	if !reflect.DeepEqual(goSide, jsSide) {
		t.Fatalf("client/ and ic-websocket-js disagree:\n  Go: %+v\n  JS: %+v", goSide, jsSide)
	}
	if !reflect.DeepEqual(goSide, want) {
		t.Fatalf("both clients saw %+v, want %+v", goSide, want)
	}
	t.Logf("client/ and ic-websocket-js saw the same: %+v", goSide)
}

func runScenarioGo(t *testing.T, dev *Dev) scenarioResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dialClient(t, dev.GatewayURL, dev.URL, dev.CanisterID, dialOptions{})
	c.sendTexts(scenarioSends)
	got := c.receiveTexts(6, 30*time.Second)
	if err := dev.Control.Send(ctx, c.Key, "pushed"); err != nil {
		t.Fatalf("control send: %v", err)
	}
	got = append(got, c.receiveTexts(1, 30*time.Second)...)
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	l := waitCanisterLog(t, dev.Control, c.Key, 30*time.Second, "ws_close at the canister", func(l wscanister.ClientLog) error {
		if !slices.Contains(l.Closes, "ws_close") {
			return fmt.Errorf("closes=%v", l.Closes)
		}
		return nil
	})
	return scenarioResult{Received: got, CanisterTexts: l.Texts, CanisterSequenceErrors: l.SequenceErrors, CanisterCloses: l.Closes}
}
