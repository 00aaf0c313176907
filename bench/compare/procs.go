//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a server process started by the comparison; its output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc runs bin with args and env (added to this process's environment minus ICWS_*).
func startProc(dir, name, bin string, env []string, args ...string) (*proc, error) {
	logPath := dir + "/" + name + ".log"
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv(env)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func cleanEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ICWS_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// stop sends SIGTERM and waits (SIGKILL after 15 s).
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// procStat reads the CPU seconds (user + system) and resident bytes of pid from /proc.
func procStat(pid int) (cpu float64, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return 0, 0, errors.New("short /proc stat")
	}
	// Fields after the name, 0-based: 11 utime, 12 stime (clock ticks), 21 rss (pages).
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	pages, _ := strconv.ParseInt(f[21], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return (utime + stime) / ticks, pages * int64(os.Getpagesize()), nil
}

// usage is a process's CPU and memory at one moment.
type usage struct {
	at  time.Time
	cpu float64
	rss int64
}

func sample(pid int) (usage, error) {
	cpu, rss, err := procStat(pid)
	return usage{at: time.Now(), cpu: cpu, rss: rss}, err
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitHTTP waits until url answers 200 (or the process ends, or the timeout passes).
func waitHTTP(ctx context.Context, url string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not ready after %s\n%s", p.name, url, timeout, p.tail())
		}
	}
}

// goInstall builds pkg@version into dir (the build cache makes later runs quick).
func goInstall(ctx context.Context, logger *slog.Logger, dir, pkgAtVersion string) error {
	logger.Info("building", "package", pkgAtVersion)
	cmd := exec.CommandContext(ctx, "go", "install", pkgAtVersion)
	cmd.Env = append(cleanEnv(nil), "GOBIN="+dir, "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go install %s: %w\n%s", pkgAtVersion, err, out)
	}
	return nil
}

// raiseFileLimit lets this process and the servers it starts hold many sockets.
func raiseFileLimit(n uint64) {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil || lim.Cur >= n {
		return
	}
	want := syscall.Rlimit{Cur: n, Max: max(n, lim.Max)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	}
}

// loopbackDialer spreads connections over 127.0.0.1-16 so that many do not exhaust the
// ephemeral ports of one source address.
type loopbackDialer struct {
	mu sync.Mutex
	n  int
}

func (d *loopbackDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	i := d.n
	d.n++
	d.mu.Unlock()
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%16))}}
	return nd.DialContext(ctx, network, addr)
}

// selfCPU is this process's CPU seconds so far.
func selfCPU() float64 {
	cpu, _, _ := procStat(os.Getpid())
	return cpu
}

func numCPU() int { return runtime.NumCPU() }
