package integration

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/icws/icws/internal/testkit"
)

// binaries are built once per `go test` run by TestMain. A failed build is kept as an error so the
// tests that need that binary fail with the compiler's output instead of being skipped.
type binaries struct {
	repoRoot string
	dir      string

	icws       string
	icwsErr    error
	natsServer string
	natsErr    error
}

// bins is set once by TestMain before any test runs and only read afterwards.
var bins binaries

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "icws-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins = binaries{repoRoot: root, dir: dir}

	// -short runs only what needs no binaries at all; everything else builds both.
	var wg sync.WaitGroup
	wg.Go(func() {
		bins.icws = filepath.Join(dir, "icws")
		bins.icwsErr = goBuild(root, bins.icws, "./cmd/icws")
	})
	wg.Go(func() {
		bins.natsServer = filepath.Join(dir, "nats-server")
		bins.natsErr = goBuild(root, bins.natsServer, "github.com/nats-io/nats-server/v2")
	})
	wg.Wait()
	return m.Run()
}

func goBuild(root, out, pkg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if os.Getenv("ICWS_IT_RACE") != "" {
		cmd.Args = append(cmd.Args[:2], append([]string{"-race"}, cmd.Args[2:]...)...)
	}
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repo root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// icwsBinary returns the built icws binary or fails the test with the build output.
func icwsBinary(t testing.TB) string {
	t.Helper()
	if bins.icwsErr != nil {
		t.Fatalf("icws binary not available: %v", bins.icwsErr)
	}
	return bins.icws
}

// natsServerBinary returns the built nats-server binary or fails the test with the build output.
func natsServerBinary(t testing.TB) string {
	t.Helper()
	if bins.natsErr != nil {
		t.Fatalf("nats-server binary not available: %v", bins.natsErr)
	}
	return bins.natsServer
}

// portRegistry keeps ports handed out in this test binary from being handed out twice while the
// first user has not bound it yet.
var portRegistry = struct {
	sync.Mutex
	used map[int]bool
}{used: map[int]bool{}}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portRegistry.Lock()
		taken := portRegistry.used[port]
		portRegistry.used[port] = true
		portRegistry.Unlock()
		if !taken {
			return port
		}
	}
	t.Fatal("free port: no unused port after 100 tries")
	return 0
}

// freeAddr returns "127.0.0.1:<free port>".
func freeAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

// Process is a child process of a test. Its output goes to files that are dumped (tail) into the
// test log when the test fails. It can be restarted with the same arguments; logs are appended.
type Process struct {
	t    testing.TB
	Name string
	path string
	args []string
	env  []string
	dir  string

	StdoutPath, StderrPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	state   *os.ProcessState
	starts  int
}

// startProcess runs path with args in a clean environment (PATH, HOME and TMPDIR plus env, as
// NAME=value), output to files in t.TempDir(). It is stopped in t.Cleanup.
func startProcess(t testing.TB, name, path string, args []string, env map[string]string) *Process {
	t.Helper()
	dir := t.TempDir()
	p := &Process{
		t:          t,
		Name:       name,
		path:       path,
		args:       args,
		env:        cleanEnv(dir, env),
		dir:        dir,
		StdoutPath: filepath.Join(dir, name+".stdout"),
		StderrPath: filepath.Join(dir, name+".stderr"),
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			p.dumpLogs()
		}
	})
	if err := p.start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return p
}

func cleanEnv(home string, env map[string]string) []string {
	out := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"TMPDIR=" + os.TempDir(),
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func (p *Process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exitedLocked() {
		return fmt.Errorf("%s is still running", p.Name)
	}
	stdout, err := os.OpenFile(p.StdoutPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	stderr, err := os.OpenFile(p.StderrPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		stdout.Close()
		return err
	}
	p.starts++
	if p.starts > 1 {
		fmt.Fprintf(stderr, "\n===== harness: restart #%d at %s =====\n", p.starts-1, time.Now().Format(time.RFC3339Nano))
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	// Own process group, so a child that spawns children (node --test) is stopped as a whole.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		stdout.Close()
		stderr.Close()
		return err
	}
	done := make(chan struct{})
	p.cmd, p.done, p.exitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		stdout.Close()
		stderr.Close()
		p.mu.Lock()
		p.exitErr, p.state = err, cmd.ProcessState
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func (p *Process) exitedLocked() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Exited reports whether the current run has ended, and how.
func (p *Process) Exited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || !p.exitedLocked() {
		return false, nil
	}
	return true, p.exitErr
}

// Done is closed when the current run ends.
func (p *Process) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// CPUTime is the user and system CPU time of the last run once it has exited (zero before).
func (p *Process) CPUTime() (user, sys time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == nil {
		return 0, 0
	}
	return p.state.UserTime(), p.state.SystemTime()
}

// Pid of the current run.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

func (p *Process) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return
	}
	// Negative pid: the whole process group we created in start.
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Pause freezes the process (SIGSTOP): it keeps its sockets open and answers nothing, as a hung
// process does.
func (p *Process) Pause() { p.signal(syscall.SIGSTOP) }

// Continue thaws a paused process (SIGCONT).
func (p *Process) Continue() { p.signal(syscall.SIGCONT) }

// Kill sends SIGKILL and waits until the process is gone.
func (p *Process) Kill() {
	p.signal(syscall.SIGKILL)
	<-p.Done()
}

// Stop sends SIGTERM, waits up to 10 s, then SIGKILLs. It returns the exit error of the run
// (nil for a clean exit).
func (p *Process) Stop() error {
	return p.StopTimeout(10 * time.Second)
}

// StopTimeout is Stop with its own grace period.
func (p *Process) StopTimeout(grace time.Duration) error {
	p.mu.Lock()
	started := p.cmd != nil
	p.mu.Unlock()
	if !started {
		return nil
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.Done():
	case <-time.After(grace):
		p.t.Logf("%s: no exit %s after SIGTERM, sending SIGKILL", p.Name, grace)
		p.Kill()
	}
	_, err := p.Exited()
	return err
}

// Restart starts the process again with the same arguments and environment. The previous run
// must have ended (Kill or Stop first).
func (p *Process) Restart() {
	p.t.Helper()
	if err := p.start(); err != nil {
		p.t.Fatalf("restart %s: %v", p.Name, err)
	}
}

// Logs returns the whole stdout and stderr of the process so far.
func (p *Process) Logs() (stdout, stderr string) {
	o, _ := os.ReadFile(p.StdoutPath)
	e, _ := os.ReadFile(p.StderrPath)
	return string(o), string(e)
}

const dumpTailBytes = 24 << 10

func (p *Process) dumpLogs() {
	for _, f := range []struct{ label, path string }{{"stdout", p.StdoutPath}, {"stderr", p.StderrPath}} {
		b, err := os.ReadFile(f.path)
		if err != nil || len(b) == 0 {
			continue
		}
		p.t.Logf("----- %s %s (last %d of %d bytes) -----\n%s", p.Name, f.label, min(len(b), dumpTailBytes), len(b), tail(b, dumpTailBytes))
	}
}

func tail(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	b = b[len(b)-n:]
	if i := bytes.IndexByte(b, '\n'); i >= 0 && i < 200 {
		b = b[i+1:]
	}
	return b
}

// runCommand runs a binary to completion (clean environment) and returns its combined output.
func runCommand(t testing.TB, timeout time.Duration, path string, args []string, env map[string]string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = cleanEnv(t.TempDir(), env)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// httpGet fetches url with a short timeout and returns status and body.
func httpGet(ctx context.Context, url string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

// waitHTTP200 polls url until it answers 200, failing the test after timeout. If proc is given and
// exits meanwhile, it fails at once with that.
func waitHTTP200(t testing.TB, url string, timeout time.Duration, proc *Process) {
	t.Helper()
	testkit.WaitForNil(t, timeout, 50*time.Millisecond, "GET "+url+" = 200", func() error {
		if proc != nil {
			if exited, err := proc.Exited(); exited {
				t.Fatalf("%s exited while waiting for %s: %v", proc.Name, url, err)
			}
		}
		code, body, err := httpGet(context.Background(), url)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("status %d: %s", code, strings.TrimSpace(string(tail(body, 300))))
		}
		return nil
	})
}

// waitReady polls <adminURL>/readyz until 200 (60 s at most: JetStream may first recover or elect); if proc is given and exits
// meanwhile, it fails at once with that.
func waitReady(t testing.TB, adminURL string, proc ...*Process) {
	t.Helper()
	var p *Process
	if len(proc) > 0 {
		p = proc[0]
	}
	waitHTTP200(t, strings.TrimRight(adminURL, "/")+"/readyz", 60*time.Second, p)
}
