package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/bench"
)

// freeLoopbackAddr returns a loopback host:port that was free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// devStack is a running `icws dev`.
type devStack struct {
	gateway, replica, admin string
}

// startDev runs `icws dev` on free loopback ports and waits until its admin server says ready.
func startDev(t *testing.T) devStack {
	t.Helper()
	d := devStack{gateway: freeLoopbackAddr(t), replica: freeLoopbackAddr(t), admin: freeLoopbackAddr(t)}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := icwsCmd(ctx, []string{
		"ICWS_LISTEN=" + d.gateway, "ICWS_REPLICA_LISTEN=" + d.replica, "ICWS_ADMIN_LISTEN=" + d.admin,
		"ICWS_DATA_DIR=" + t.TempDir(), "ICWS_LOG_LEVEL=warn",
	}, "dev")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + d.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("icws dev exited: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("icws dev not ready after 30s\n%s", stderr.String())
		}
	}
}

func (d devStack) benchEnv(extra ...string) []string {
	return append([]string{
		"ICWS_BENCH_GATEWAY=ws://" + d.gateway, "ICWS_BENCH_IC_URL=http://" + d.replica,
		"ICWS_BENCH_METRICS=http://" + d.admin, "ICWS_LOG_LEVEL=warn",
	}, extra...)
}

// Every scenario of `icws bench` runs at a tiny size against `icws dev`, accounts for every
// message and reports the gateway's cost from its metrics.
func TestBenchEveryScenario(t *testing.T) {
	d := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := icwsCmd(ctx, d.benchEnv(
		"ICWS_BENCH_SCENARIO=all", "ICWS_BENCH_CLIENTS=2", "ICWS_BENCH_MESSAGES=10", "ICWS_BENCH_BURST=20",
		"ICWS_BENCH_WINDOW=4", "ICWS_BENCH_SESSIONS=10", "ICWS_BENCH_HOLD=200ms", "ICWS_BENCH_RATE=100",
		"ICWS_BENCH_DURATION=500ms", "ICWS_BENCH_PAYLOAD=64", "ICWS_BENCH_MISSED=5,20",
	), "bench")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("icws bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	reports := parseReports(t, stdout.String())
	var names []string
	for _, r := range reports {
		names = append(names, r.Scenario)
		if !r.OK() || r.Messages == 0 {
			t.Errorf("%s %s: %d messages, integrity %+v", r.Scenario, r.Variant, r.Messages, r.Integrity)
		}
		if r.Gateway == nil || r.Gateway.RSSAfter == 0 {
			t.Errorf("%s %s: no gateway cost: %+v", r.Scenario, r.Variant, r.Gateway)
		}
		if r.Latency.Count == 0 {
			t.Errorf("%s %s: no latency recorded", r.Scenario, r.Variant)
		}
	}
	want := append(bench.ScenarioNames(), bench.ScenarioResume) // resume runs once per K
	slices.Sort(want)
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Fatalf("reports for %v, want %v\n%s", names, want, stdout.String())
	}
	for _, r := range reports {
		switch r.Scenario {
		case bench.ScenarioIdle:
			if r.Idle == nil || r.Idle.Sessions != 10 || r.Idle.RSSPerSession == 0 {
				t.Errorf("idle figures %+v", r.Idle)
			}
		case bench.ScenarioResume:
			if r.Resume == nil || r.Resume.FrameToLastMs <= 0 || r.Messages != r.Resume.Missed {
				t.Errorf("resume figures %+v for %d messages", r.Resume, r.Messages)
			}
		case bench.ScenarioUnicastSaturate:
			if r.Messages != 2*20 || r.Gateway.CPUPer1000 < 0 {
				t.Errorf("unicast-saturate: %d messages, cost %+v", r.Messages, r.Gateway)
			}
		}
	}
	if !strings.Contains(stdout.String(), "lost/dup/order") {
		t.Errorf("no table in the output:\n%s", stdout.String())
	}
}

func parseReports(t *testing.T, out string) []bench.Report {
	t.Helper()
	var reports []bench.Report
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r bench.Report
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("JSON line %q: %v", line, err)
		}
		reports = append(reports, r)
	}
	return reports
}

func TestBenchConfigurationErrors(t *testing.T) {
	for _, tc := range []struct{ key, value string }{
		{"ICWS_BENCH_SCENARIO", "idle,warp"},
		{"ICWS_BENCH_RATE", "0"},
		{"ICWS_BENCH_MISSED", "10,zero"},
		{"ICWS_BENCH_PAYLOAD", "-1"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			r := runIcws(t, []string{tc.key + "=" + tc.value, "ICWS_BENCH_METRICS="}, "bench")
			if r.code != exitUsage || !strings.Contains(r.stderr, "ICWS_BENCH") {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
		})
	}
}

// Without a gateway the bench fails (exit 1) instead of reporting nothing.
func TestBenchWithoutGatewayFails(t *testing.T) {
	r := runIcws(t, []string{"ICWS_BENCH_IC_URL=http://" + freeLoopbackAddr(t), "ICWS_BENCH_METRICS=", "ICWS_BENCH_TIMEOUT=10s"}, "bench")
	if r.code != exitFailure || !strings.Contains(r.stderr, "root key") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}
