package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// icwsProcess is a long-running icws command whose stderr (JSON logs) is kept for inspection.
type icwsProcess struct {
	t      *testing.T
	done   chan struct{}
	err    error // set before done closes
	mu     sync.Mutex
	stderr bytes.Buffer
	lines  []map[string]any
	cancel context.CancelFunc
	signal func(syscall.Signal) error
}

// startIcwsProcess starts icws with env (JSON logs at debug level are added) and stops it at
// cleanup.
func startIcwsProcess(t *testing.T, env []string, args ...string) *icwsProcess {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	env = append([]string{"ICWS_LOG_FORMAT=json", "ICWS_LOG_LEVEL=debug"}, env...)
	cmd := icwsCmd(ctx, env, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &icwsProcess{t: t, done: make(chan struct{}), cancel: cancel,
		signal: func(s syscall.Signal) error { return cmd.Process.Signal(s) }}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m map[string]any
			_ = json.Unmarshal(sc.Bytes(), &m)
			p.mu.Lock()
			p.stderr.Write(sc.Bytes())
			p.stderr.WriteByte('\n')
			if m != nil {
				p.lines = append(p.lines, m)
			}
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// Stderr is everything the process wrote to stderr so far.
func (p *icwsProcess) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitLog waits until a log line has message msg and returns it; it fails the test if the process
// exits first or the deadline passes.
func (p *icwsProcess) waitLog(msg string, timeout time.Duration) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if l["msg"] == msg {
				p.mu.Unlock()
				return l
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			p.t.Fatalf("icws exited (%v) before logging %q; stderr:\n%s", p.err, msg, p.Stderr())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %q log line within %s; stderr:\n%s", msg, timeout, p.Stderr())
		}
	}
}

// wait waits for the process to exit by itself and returns its exit code.
func (p *icwsProcess) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("icws still running after %s; stderr:\n%s", timeout, p.Stderr())
	}
	return exitCode(p.err)
}

// stop sends SIGTERM and waits for the exit (killing it after 20 s).
func (p *icwsProcess) stop() int {
	select {
	case <-p.done:
		return exitCode(p.err)
	default:
	}
	_ = p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cancel()
		<-p.done
	}
	p.cancel()
	return exitCode(p.err)
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// adminURL waits for the gateway's ready line and returns the admin server's base URL from it.
func (p *icwsProcess) adminURL() string {
	p.t.Helper()
	l := p.waitLog("gateway ready", 60*time.Second)
	u, _ := l["admin"].(string)
	if !strings.HasPrefix(u, "http://") {
		p.t.Fatalf("gateway ready without an admin URL: %v", l)
	}
	return u
}
