package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

var updateReadme = flag.Bool("update", false, "rewrite the configuration table in README.md")

// binary is the icws binary built once for the tests that run it as a process.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "icws-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "icws")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "go build:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// icwsCmd prepares the binary with a clean ICWS_* environment plus env.
func icwsCmd(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ICWS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

type result struct {
	code           int
	stdout, stderr string
}

func runIcws(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := icwsCmd(ctx, env, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("icws %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

func TestVersion(t *testing.T) {
	r := runIcws(t, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "icws ") || !strings.Contains(r.stdout, "go go1.") ||
		!strings.Contains(r.stdout, "github.com/aviate-labs/agent-go v") {
		t.Fatalf("icws version: %+v", r)
	}
}

func TestEnvAndHelp(t *testing.T) {
	r := runIcws(t, nil, "env")
	for _, v := range []string{"ICWS_LOG_LEVEL", "ICWS_DATA_DIR", "ICWS_IDENTITY_FILE", "ICWS_ADMIN_LISTEN", "ICWS_REPLICA_LISTEN", "ICWS_REPLICA_CANISTER_ID"} {
		if !strings.Contains(r.stdout, "`"+v+"`") {
			t.Errorf("icws env does not list %s", v)
		}
	}
	if r.code != 0 {
		t.Fatalf("icws env: %+v", r)
	}
	r = runIcws(t, nil, "help")
	if r.code != 0 || !strings.Contains(r.stdout, "identity") || !strings.Contains(r.stdout, "replica") {
		t.Fatalf("icws help: %+v", r)
	}
	r = runIcws(t, nil, "help", "all")
	if r.code != 0 || !strings.Contains(r.stdout, "usage: icws all") || !strings.Contains(r.stdout, "ICWS_LISTEN") {
		t.Fatalf("icws help all: %+v", r)
	}
	r = runIcws(t, nil, "help", "nosuch")
	if r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "nosuch"`) {
		t.Fatalf("icws help nosuch: %+v", r)
	}
	// A role's help is help, not a start; a role takes no arguments.
	dir := t.TempDir()
	r = runIcws(t, []string{"ICWS_DATA_DIR=" + dir}, "dev", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "usage: icws dev") {
		t.Fatalf("icws dev --help: %+v", r)
	}
	r = runIcws(t, []string{"ICWS_DATA_DIR=" + dir}, "all", "extra")
	if r.code != exitUsage || !strings.Contains(r.stderr, "takes no arguments") {
		t.Fatalf("icws all extra: %+v", r)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("help or a refused argument started something: %v", entries)
	}
	r = runIcws(t, nil, "frobnicate")
	if r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Fatalf("icws frobnicate: %+v", r)
	}
}

func TestBadConfigurationExits2(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cmd, key, value string
	}{
		{"identity", "ICWS_LOG_LEVEL", "loud"},
		{"identity", "ICWS_LOG_FORMAT", "xml"},
		{"identity", "ICWS_ADMIN_LISTEN", "nonsense"},
		{"replica", "ICWS_REPLICA_LISTEN", "nonsense"},
		{"replica", "ICWS_REPLICA_UPDATE_LATENCY", "soon"},
		{"replica", "ICWS_REPLICA_CANISTER_ID", "not-a-canister"},
		{"replica", "ICWS_REPLICA_MAX_RETURNED_MESSAGES", "0"},
		{"all", "ICWS_IC_API_VERSION", "4"},
		{"all", "ICWS_IC_MAX_IDLE_CONNS", "0"},
		// Each role's own settings, checked before anything starts.
		{"all", "ICWS_MAX_MESSAGE_BYTES", "-1"},
		{"all", "ICWS_MESSAGE_TIMEOUT", "10ms"},
		{"all", "ICWS_POLL_INTERVAL", "-1s"},
		{"all", "ICWS_POLL_MAX_CERT_BYTES", "1KiB"},
		{"all", "ICWS_SUBMIT_LEASE_TTL", "0s"},
		{"dev", "ICWS_EDGE_ID", "a b"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			r := runIcws(t, []string{"ICWS_DATA_DIR=" + dir, tc.key + "=" + tc.value}, tc.cmd)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.key) {
				t.Fatalf("icws %s with %s=%s: exit %d, stderr %q", tc.cmd, tc.key, tc.value, r.code, r.stderr)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a command with a bad configuration wrote files: %v", entries)
	}
}

func TestIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	env := []string{"ICWS_DATA_DIR=" + dir}
	r := runIcws(t, env, "identity")
	if r.code != 0 || !strings.Contains(r.stderr, "created gateway key") {
		t.Fatalf("icws identity: %+v", r)
	}
	p := strings.TrimSpace(r.stdout)
	if _, err := principal.Decode(p); err != nil {
		t.Fatalf("icws identity printed %q: %v", p, err)
	}
	st, err := os.Stat(filepath.Join(dir, "key_pair"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode().Perm())
	}
	r = runIcws(t, env, "identity")
	if r.code != 0 || strings.TrimSpace(r.stdout) != p || strings.Contains(r.stderr, "created") {
		t.Fatalf("second icws identity: %+v (first printed %s)", r, p)
	}

	// A key file in ring's PKCS#8 v2 layout (the Rust gateway's data/key_pair) gives the
	// self-authenticating principal of its key.
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	ring := append([]byte{0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20}, seed...)
	ring = append(append(ring, 0xa1, 0x23, 0x03, 0x21, 0x00), priv.Public().(ed25519.PublicKey)...)
	ringFile := filepath.Join(t.TempDir(), "key_pair")
	if err := os.WriteFile(ringFile, ring, 0o600); err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	r = runIcws(t, []string{"ICWS_IDENTITY_FILE=" + ringFile}, "identity")
	if want := principal.NewSelfAuthenticating(spki).String(); r.code != 0 || strings.TrimSpace(r.stdout) != want {
		t.Fatalf("icws identity on a ring-format key: %+v, want %s", r, want)
	}

	// A corrupt key is an error (exit 1), and stays as it was.
	bad := filepath.Join(t.TempDir(), "key_pair")
	if err := os.WriteFile(bad, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runIcws(t, []string{"ICWS_IDENTITY_FILE=" + bad}, "identity")
	if r.code != exitFailure || !strings.Contains(r.stderr, bad) {
		t.Fatalf("icws identity on a corrupt key: %+v", r)
	}
}

func TestReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := icwsCmd(ctx, []string{"ICWS_REPLICA_LISTEN=127.0.0.1:0", "ICWS_LOG_LEVEL=warn"}, "replica")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	info := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for len(info) < 3 && sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if ok {
			info[k] = v
		}
	}
	go func() {
		_, _ = io.Copy(io.Discard, stdout)
		waited <- cmd.Wait()
	}()
	if len(info) < 3 {
		t.Fatalf("replica printed %v; stderr %s", info, stderr.String())
	}
	if info["canister id"] != "bkyz2-fmaaa-aaaaa-qaaaq-cai" || len(info["root key"]) != 266 || !strings.HasPrefix(info["url"], "http://127.0.0.1:") {
		t.Fatalf("replica printed %v", info)
	}
	resp, err := http.Get(info["url"] + "/api/v2/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/api/v2/status = %d", resp.StatusCode)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("replica exit after SIGTERM: %v; stderr %s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("replica still running 20s after SIGTERM; stderr %s", stderr.String())
	}
}

const (
	readmeBegin = "<!-- icws env: begin (generated by `go test ./cmd/icws -update`) -->\n"
	readmeEnd   = "<!-- icws env: end -->\n"
)

// TestReadmeConfigurationTable keeps the README's table identical to `icws env`.
func TestReadmeConfigurationTable(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := writeEnvTable(&want, commands()); err != nil {
		t.Fatal(err)
	}
	before, rest, ok1 := bytes.Cut(readme, []byte(readmeBegin))
	_, after, ok2 := bytes.Cut(rest, []byte(readmeEnd))
	if !ok1 || !ok2 {
		t.Fatalf("README.md lacks the markers %q and %q", readmeBegin, readmeEnd)
	}
	got, _, _ := bytes.Cut(rest, []byte(readmeEnd))
	if bytes.Equal(got, want.Bytes()) {
		return
	}
	if *updateReadme {
		out := bytes.Join([][]byte{before, []byte(readmeBegin), want.Bytes(), []byte(readmeEnd), after}, nil)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md configuration table differs from `icws env`; run `go test ./cmd/icws -run Readme -update`")
	for _, line := range strings.Split(want.String(), "\n") {
		if line != "" && !bytes.Contains(got, []byte(line)) {
			t.Errorf("README lacks: %s", line)
		}
	}
}
