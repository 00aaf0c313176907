//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// icwsReport is the part of an `icws bench` JSON line the comparison reads.
type icwsReport struct {
	Scenario        string  `json:"scenario"`
	Variant         string  `json:"variant"`
	Clients         int     `json:"clients"`
	Messages        int     `json:"messages"`
	PerSecond       float64 `json:"messages_per_second"`
	DurationSeconds float64 `json:"duration_seconds"`
	Latency         struct {
		P50Ms float64 `json:"p50_ms"`
		P99Ms float64 `json:"p99_ms"`
	} `json:"latency"`
	Integrity map[string]int `json:"integrity"`
	Gateway   *struct {
		CPUSeconds          float64 `json:"cpu_seconds"`
		CPUMicrosPerMessage float64 `json:"cpu_us_per_message"`
	} `json:"gateway"`
	Idle *struct {
		Sessions             int     `json:"sessions"`
		RSSPerSession        float64 `json:"rss_per_session_bytes"`
		HeapPerSession       float64 `json:"heap_inuse_per_session_bytes"`
		GoroutinesPerSession float64 `json:"goroutines_per_session"`
		IdleCoreShare        float64 `json:"idle_cpu_share_of_one_core"`
		Echo                 struct {
			P50Ms float64 `json:"p50_ms"`
		} `json:"echo_while_open"`
	} `json:"idle"`
	Resume *struct {
		Missed         int     `json:"missed"`
		FrameToLastMs  float64 `json:"resume_frame_to_last_ms"`
		FrameToFirstMs float64 `json:"resume_frame_to_first_ms"`
		DialToLastMs   float64 `json:"dial_to_last_ms"`
		GatewayMs      float64 `json:"gateway_resume_frame_to_last_queued_ms"`
	} `json:"resume"`
}

// icwsRun is one `icws bench` invocation with the CPU the other processes used meanwhile.
type icwsRun struct {
	reports    []icwsReport
	replicaCPU float64 // seconds
	benchCPU   float64 // seconds, the load generator
	command    string
}

// icwsStack is `icws replica` and `icws all` as two processes.
type icwsStack struct {
	bin                           string
	replica, gateway              *proc
	replicaURL, gatewayURL, admin string
}

func startIcws(ctx context.Context, logger *slog.Logger, cfg config, tmp string) (*icwsStack, error) {
	bin := filepath.Join(tmp, "icws")
	logger.Info("building icws", "repo", cfg.repo)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/icws")
	build.Dir = cfg.repo
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build icws: %w\n%s", err, out)
	}
	s := &icwsStack{bin: bin}
	addrs := make([]string, 3)
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	s.replicaURL, s.gatewayURL, s.admin = "http://"+addrs[0], "ws://"+addrs[1], "http://"+addrs[2]
	var err error
	// The resume, unicast-rate and fanout scenarios drive the demo canister through its control
	// API, which the replica serves only when asked (on loopback here).
	s.replica, err = startProc(tmp, "icws-replica", bin, []string{"ICWS_REPLICA_LISTEN=" + addrs[0], "ICWS_REPLICA_CONTROL=true", "ICWS_LOG_LEVEL=warn"}, "replica")
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, s.replicaURL+"/api/v2/status", s.replica, time.Minute); err != nil {
		s.stop()
		return nil, err
	}
	pprof := "false"
	if cfg.pprof {
		pprof = "true"
	}
	s.gateway, err = startProc(tmp, "icws-all", bin, []string{
		"ICWS_IC_URL=" + s.replicaURL, "ICWS_LISTEN=" + addrs[1], "ICWS_ADMIN_LISTEN=" + addrs[2],
		"ICWS_DATA_DIR=" + filepath.Join(tmp, "icws-data"), "ICWS_LOG_LEVEL=warn", "ICWS_ADMIN_PPROF=" + pprof,
		// The load generator dials from 16 loopback addresses; the default of 1,000 connections
		// per address would refuse more than 16,000 sessions.
		"ICWS_MAX_CONNECTIONS_PER_IP=" + strconv.Itoa(max(cfg.sessions, 1000)),
		"ICWS_MAX_OPENS_PER_IP_BURST=" + strconv.Itoa(max(cfg.sessions, 1000)),
	}, "all")
	if err != nil {
		s.stop()
		return nil, err
	}
	if err := waitHTTP(ctx, s.admin+"/readyz", s.gateway, 2*time.Minute); err != nil {
		s.stop()
		return nil, err
	}
	logger.Info("icws running", "gateway", s.gatewayURL, "replica", s.replicaURL, "admin", s.admin)
	return s, nil
}

func (s *icwsStack) stop() {
	if s.gateway != nil {
		s.gateway.stop()
	}
	if s.replica != nil {
		s.replica.stop()
	}
}

// bench runs `icws bench` with env (ICWS_BENCH_* assignments) and measures the replica's and
// its own CPU meanwhile.
func (s *icwsStack) bench(ctx context.Context, env ...string) (icwsRun, error) {
	all := append([]string{
		"ICWS_BENCH_GATEWAY=" + s.gatewayURL, "ICWS_BENCH_IC_URL=" + s.replicaURL, "ICWS_BENCH_METRICS=" + s.admin,
		"ICWS_LOG_LEVEL=warn", "ICWS_BENCH_TIMEOUT=20m",
	}, env...)
	run := icwsRun{command: strings.Join(env, " ") + " icws bench"}
	before, err := sample(s.replica.pid())
	if err != nil {
		return run, err
	}
	cmd := exec.CommandContext(ctx, s.bin, "bench")
	cmd.Env = cleanEnv(all)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	after, serr := sample(s.replica.pid())
	if err != nil {
		return run, fmt.Errorf("%s: %w\n%s\n%s", run.command, err, stdout.String(), stderr.String())
	}
	if serr != nil {
		return run, serr
	}
	run.replicaCPU = after.cpu - before.cpu
	run.benchCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	fmt.Fprint(os.Stderr, stdout.String())
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Bytes(); bytes.HasPrefix(line, []byte("{")) {
			var r icwsReport
			if err := json.Unmarshal(line, &r); err != nil {
				return run, fmt.Errorf("icws bench JSON: %w", err)
			}
			run.reports = append(run.reports, r)
		}
	}
	return run, nil
}

// icwsResults are the icws figures of the comparison.
type icwsResults struct {
	idle, saturate, rate, echo icwsRun
	resume                     icwsRun
}

func runIcwsPeer(ctx context.Context, logger *slog.Logger, cfg config, tmp string) (icwsResults, error) {
	var res icwsResults
	s, err := startIcws(ctx, logger, cfg, tmp)
	if err != nil {
		return res, err
	}
	defer s.stop()
	steps := []struct {
		name string
		into *icwsRun
		env  []string
	}{
		{"idle", &res.idle, []string{"ICWS_BENCH_SCENARIO=idle", "ICWS_BENCH_SESSIONS=" + strconv.Itoa(cfg.sessions), "ICWS_BENCH_HOLD=" + cfg.hold.String(), "ICWS_BENCH_MESSAGES=200"}},
		{"unicast-saturate", &res.saturate, []string{"ICWS_BENCH_SCENARIO=unicast-saturate", "ICWS_BENCH_CLIENTS=" + strconv.Itoa(cfg.clients), "ICWS_BENCH_BURST=" + strconv.Itoa(cfg.messages)}},
		{"unicast-rate", &res.rate, []string{"ICWS_BENCH_SCENARIO=unicast-rate", "ICWS_BENCH_CLIENTS=" + strconv.Itoa(cfg.clients), "ICWS_BENCH_PAYLOAD=" + strconv.Itoa(cfg.payload), "ICWS_BENCH_RATE=" + strconv.Itoa(cfg.rate), "ICWS_BENCH_DURATION=" + cfg.duration.String()}},
		{"echo", &res.echo, []string{"ICWS_BENCH_SCENARIO=echo", "ICWS_BENCH_MESSAGES=500"}},
		{"resume", &res.resume, []string{"ICWS_BENCH_SCENARIO=resume", "ICWS_BENCH_MISSED=" + strconv.Itoa(cfg.missed), "ICWS_BENCH_PAYLOAD=" + strconv.Itoa(cfg.payload)}},
	}
	for _, st := range steps {
		logger.Info("icws bench", "scenario", st.name)
		run, err := s.bench(ctx, st.env...)
		if err != nil {
			return res, err
		}
		if len(run.reports) == 0 {
			return res, fmt.Errorf("icws bench %s: no report", st.name)
		}
		*st.into = run
	}
	return res, nil
}
