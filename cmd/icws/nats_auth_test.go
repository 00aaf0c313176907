package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/identity"
	"github.com/icws/icws/internal/testkit/natstest"
)

// natsAuthCase is an external NATS server wanting one kind of credentials, the environment that
// satisfies it and one it refuses.
type natsAuthCase struct {
	name          string
	good, bad     []string
	refusedVar    string
	secrets       []string
	configureFunc func(*server.Options)
}

func natsAuthCases(t *testing.T) []natsAuthCase {
	dir := t.TempDir()
	seed, pub := natstest.UserSeed(t)
	otherSeed, _ := natstest.UserSeed(t)
	op, stranger := natstest.NewOperator(t), natstest.NewOperator(t)
	pki, rogue := natstest.NewPKI(t, t.TempDir()), natstest.NewPKI(t, t.TempDir())
	return []natsAuthCase{
		{
			name: "password",
			configureFunc: func(o *server.Options) {
				o.Users = []*server.User{{Username: "icws-edge", Password: "correct-horse-battery"}}
			},
			good:       []string{"ICWS_NATS_USER=icws-edge", "ICWS_NATS_PASSWORD_FILE=" + natstest.WriteFile(t, dir, "pw", []byte("correct-horse-battery\n"))},
			bad:        []string{"ICWS_NATS_USER=icws-edge", "ICWS_NATS_PASSWORD_FILE=" + natstest.WriteFile(t, dir, "bad", []byte("wrong-horse-staple\n"))},
			refusedVar: "ICWS_NATS_PASSWORD_FILE",
			secrets:    []string{"correct-horse-battery", "wrong-horse-staple"},
		},
		{
			name:          "nkey",
			configureFunc: func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} },
			good:          []string{"ICWS_NATS_NKEY=" + natstest.WriteFile(t, dir, "user.nk", seed)},
			bad:           []string{"ICWS_NATS_NKEY=" + natstest.WriteFile(t, dir, "other.nk", otherSeed)},
			refusedVar:    "ICWS_NATS_NKEY",
			secrets:       []string{string(seed), string(otherSeed)},
		},
		{
			name:          "creds",
			configureFunc: func(o *server.Options) { op.Configure(t, o) },
			good:          []string{"ICWS_NATS_CREDS=" + natstest.WriteFile(t, dir, "user.creds", op.Creds(t))},
			bad:           []string{"ICWS_NATS_CREDS=" + natstest.WriteFile(t, dir, "stranger.creds", stranger.Creds(t))},
			refusedVar:    "ICWS_NATS_CREDS",
		},
		{
			name:          "mutual-tls",
			configureFunc: func(o *server.Options) { pki.ConfigureMutualTLS(t, o) },
			good:          []string{"ICWS_NATS_TLS_CA=" + pki.CA, "ICWS_NATS_TLS_CERT=" + pki.ClientCert, "ICWS_NATS_TLS_KEY=" + pki.ClientKey},
			bad:           []string{"ICWS_NATS_TLS_CA=" + pki.CA, "ICWS_NATS_TLS_CERT=" + rogue.ClientCert, "ICWS_NATS_TLS_KEY=" + rogue.ClientKey},
			refusedVar:    "ICWS_NATS_TLS_CERT",
		},
	}
}

// edgeEnv is the environment of an `icws edge` against url with a fresh gateway key.
func edgeEnv(t *testing.T, url string) []string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "key_pair")
	if _, _, err := identity.LoadOrCreate(key, nil); err != nil {
		t.Fatal(err)
	}
	return []string{
		"ICWS_NATS_URL=" + url,
		"ICWS_IDENTITY_FILE=" + key,
		"ICWS_DATA_DIR=" + t.TempDir(),
		"ICWS_LISTEN=127.0.0.1:0",
		"ICWS_ADMIN_LISTEN=127.0.0.1:0",
	}
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, p *icwsProcess) {
	t.Helper()
	url := p.adminURL() + "/readyz"
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 60s; stderr:\n%s", url, p.Stderr())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An edge reaches an external NATS server with each kind of credentials and serves; with
// credentials the server refuses it exits at once with status 2, naming the variable, and no
// secret shows in anything it writes.
func TestRoleWithNATSCredentials(t *testing.T) {
	for _, tc := range natsAuthCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			_, url := natstest.StartWith(t, tc.configureFunc)

			p := startIcwsProcess(t, append(edgeEnv(t, url), tc.good...), "edge")
			waitReady(t, p)
			if code := p.stop(); code != 0 {
				t.Errorf("edge exit %d after SIGTERM; stderr:\n%s", code, p.Stderr())
			}
			assertNoSecrets(t, p.Stderr(), tc.secrets)

			bad := startIcwsProcess(t, append(edgeEnv(t, url), tc.bad...), "edge")
			if code := bad.wait(30 * time.Second); code != exitUsage {
				t.Fatalf("edge with refused credentials: exit %d, want %d; stderr:\n%s", code, exitUsage, bad.Stderr())
			}
			if !strings.Contains(bad.Stderr(), tc.refusedVar) {
				t.Errorf("refusal does not name %s:\n%s", tc.refusedVar, bad.Stderr())
			}
			assertNoSecrets(t, bad.Stderr(), tc.secrets)
		})
	}
}

// A password inside ICWS_NATS_URL appears in no log line, not even across a server restart and
// reconnects at debug level, nor in the error of a refused password.
func TestNATSURLPasswordNeverLogged(t *testing.T) {
	const user, password, wrong = "icws-edge", "pa55-in-the-url", "not-the-pa55"
	storeDir := t.TempDir()
	opts := func(o *server.Options) {
		o.Users = []*server.User{{Username: user, Password: password}}
		o.StoreDir = storeDir
	}
	s, url := natstest.StartWith(t, opts)
	withPassword := func(pw string) string {
		return strings.Replace(url, "nats://", "nats://"+user+":"+pw+"@", 1)
	}

	p := startIcwsProcess(t, edgeEnv(t, withPassword(password)), "edge")
	waitReady(t, p)
	// Drop the connection: disconnect and reconnect attempts are logged too.
	port := mustPort(t, url)
	s.Shutdown()
	s.WaitForShutdown()
	p.waitLog("nats disconnected", 30*time.Second)
	_, _ = natstest.StartWith(t, func(o *server.Options) {
		opts(o)
		o.Port = port
	})
	p.waitLog("nats reconnected", 60*time.Second)
	p.stop()
	assertNoSecrets(t, p.Stderr(), []string{password})
	if !strings.Contains(p.Stderr(), "redacted@") {
		t.Errorf("the log never shows the masked URL; stderr:\n%s", p.Stderr())
	}

	bad := startIcwsProcess(t, edgeEnv(t, withPassword(wrong)), "edge")
	if code := bad.wait(30 * time.Second); code != exitUsage || !strings.Contains(bad.Stderr(), "ICWS_NATS_URL") {
		t.Fatalf("edge with a refused URL password: exit %d; stderr:\n%s", code, bad.Stderr())
	}
	assertNoSecrets(t, bad.Stderr(), []string{password, wrong})
}

func assertNoSecrets(t *testing.T, out string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, strings.TrimSpace(s)) {
			t.Errorf("output holds the secret %q:\n%s", s, out)
		}
	}
}

// mustPort is the port of a nats://host:port URL.
func mustPort(t *testing.T, url string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(url, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// With ICWS_ENSURE_STREAMS=false a role creates nothing: it waits until another process has made
// the streams and buckets, then serves.
func TestRoleWaitsForStreamsItMayNotCreate(t *testing.T) {
	url := natstest.StartServer(t)
	p := startIcwsProcess(t, append(edgeEnv(t, url), "ICWS_ENSURE_STREAMS=false"), "edge")
	p.waitLog("waiting for the streams and buckets (ICWS_ENSURE_STREAMS=false: another process creates them)", 30*time.Second)
	_, js := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, bus.StreamIn); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("the edge touched the streams: %v", err)
	}
	if err := bus.Ensure(ctx, js, bus.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
}

// A credentials file that is missing or malformed stops a role before it connects, with status 2
// and the variable's name.
func TestNATSCredentialFilesCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	junk := natstest.WriteFile(t, dir, "junk", []byte("no key here\n"))
	for _, tc := range []struct{ name, key, value string }{
		{"missing creds", "ICWS_NATS_CREDS", filepath.Join(dir, "missing.creds")},
		{"junk nkey", "ICWS_NATS_NKEY", junk},
		{"missing CA", "ICWS_NATS_TLS_CA", filepath.Join(dir, "missing.pem")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runIcws(t, []string{"ICWS_NATS_URL=nats://127.0.0.1:1", "ICWS_DATA_DIR=" + t.TempDir(), tc.key + "=" + tc.value}, "edge")
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.key) {
				t.Fatalf("icws edge with %s=%s: exit %d, stderr %q", tc.key, tc.value, r.code, r.stderr)
			}
		})
	}
}
