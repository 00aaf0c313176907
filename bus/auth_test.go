package bus

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/icws/icws/internal/testkit/natstest"
)

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// authCase is an external NATS server that requires one kind of credentials, a configuration
// that satisfies it and one that it refuses.
type authCase struct {
	name      string
	good, bad ClientConfig
	// refusedVar must appear in the refusal; secrets must appear nowhere.
	refusedVar string
	secrets    []string
}

func authCases(t *testing.T) []authCase {
	dir := t.TempDir()
	var cases []authCase

	// User and password file.
	_, url := natstest.StartWith(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "icws-edge", Password: "right-horse-battery"}}
	})
	cases = append(cases, authCase{
		name:       "password",
		good:       ClientConfig{URL: url, User: "icws-edge", PasswordFile: natstest.WriteFile(t, dir, "pw", []byte("right-horse-battery\n"))},
		bad:        ClientConfig{URL: url, User: "icws-edge", PasswordFile: natstest.WriteFile(t, dir, "badpw", []byte("wrong-horse-staple\n"))},
		refusedVar: varUser + " and " + varPasswordFile,
		secrets:    []string{"right-horse-battery", "wrong-horse-staple"},
	})
	// The same server, the password in the URL.
	host := strings.TrimPrefix(url, "nats://")
	cases = append(cases, authCase{
		name:       "url-password",
		good:       ClientConfig{URL: "nats://icws-edge:right-horse-battery@" + host},
		bad:        ClientConfig{URL: "nats://icws-edge:wrong-horse-staple@" + host},
		refusedVar: varURL,
		secrets:    []string{"right-horse-battery", "wrong-horse-staple"},
	})

	// Nkey seed file.
	seed, pub := natstest.UserSeed(t)
	otherSeed, _ := natstest.UserSeed(t)
	_, url = natstest.StartWith(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
	cases = append(cases, authCase{
		name:       "nkey",
		good:       ClientConfig{URL: url, NkeyFile: natstest.WriteFile(t, dir, "user.nk", seed)},
		bad:        ClientConfig{URL: url, NkeyFile: natstest.WriteFile(t, dir, "other.nk", otherSeed)},
		refusedVar: varNkey,
		secrets:    []string{string(seed), string(otherSeed)},
	})

	// Credentials file of an operator/account/user chain; the bad one is from another operator.
	op, stranger := natstest.NewOperator(t), natstest.NewOperator(t)
	_, url = natstest.StartWith(t, func(o *server.Options) { op.Configure(t, o) })
	cases = append(cases, authCase{
		name:       "creds",
		good:       ClientConfig{URL: url, CredsFile: natstest.WriteFile(t, dir, "user.creds", op.Creds(t))},
		bad:        ClientConfig{URL: url, CredsFile: natstest.WriteFile(t, dir, "stranger.creds", stranger.Creds(t))},
		refusedVar: varCreds,
	})

	// Mutual TLS; the bad client certificate is signed by another CA.
	pki, rogue := natstest.NewPKI(t, t.TempDir()), natstest.NewPKI(t, t.TempDir())
	_, url = natstest.StartWith(t, func(o *server.Options) { pki.ConfigureMutualTLS(t, o) })
	cases = append(cases, authCase{
		name:       "mutual-tls",
		good:       ClientConfig{URL: url, TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey},
		bad:        ClientConfig{URL: url, TLSCA: pki.CA, TLSCert: rogue.ClientCert, TLSKey: rogue.ClientKey},
		refusedVar: varTLSCert,
	})
	return cases
}

func TestConnectWithCredentials(t *testing.T) {
	for _, tc := range authCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var logs syncBuffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			defer func() {
				for _, s := range tc.secrets {
					if strings.Contains(logs.String(), s) {
						t.Errorf("the log holds the secret %q:\n%s", s, logs.String())
					}
				}
			}()

			if err := tc.good.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			nc, err := Connect(ctx, tc.good, "icws-test", logger)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer nc.Close()
			js, err := JetStream(nc)
			if err != nil {
				t.Fatal(err)
			}
			if err := Ensure(ctx, js, DefaultTopology()); err != nil {
				t.Fatalf("Ensure over an authenticated connection: %v", err)
			}
			h, err := Open(ctx, js)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.Sessions.Put(ctx, "k", []byte("v")); err != nil {
				t.Fatalf("KV put: %v", err)
			}

			if err := tc.bad.Validate(); err != nil {
				t.Fatalf("Validate of well-formed wrong credentials: %v", err)
			}
			start := time.Now()
			_, err = Connect(ctx, tc.bad, "icws-test", logger)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("Connect with refused credentials: %v, want ErrRefused", err)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("a refusal took %s to report", time.Since(start))
			}
			t.Logf("refusal: %v", err)
			if !strings.Contains(err.Error(), tc.refusedVar) {
				t.Errorf("refusal %q does not name %s", err, tc.refusedVar)
			}
			for _, s := range tc.secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("refusal %q holds the secret %q", err, s)
				}
			}
		})
	}
}

func TestConnectWithoutCredentialsToAServerThatWantsThem(t *testing.T) {
	_, url := natstest.StartWith(t, func(o *server.Options) { o.Username, o.Password = "u", "p" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Connect(ctx, ClientConfig{URL: url}, "icws-test", nil)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), varCreds) {
		t.Fatalf("Connect without credentials: %v", err)
	}
}

func TestConnectToTLSServerWithoutItsCA(t *testing.T) {
	pki := natstest.NewPKI(t, t.TempDir())
	_, url := natstest.StartWith(t, func(o *server.Options) { pki.ConfigureMutualTLS(t, o) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Connect(ctx, ClientConfig{URL: url}, "icws-test", nil)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), varTLSCA) {
		t.Fatalf("Connect to a TLS server with the system roots: %v", err)
	}
}

func TestClientConfigValidate(t *testing.T) {
	dir := t.TempDir()
	seed, _ := natstest.UserSeed(t)
	seedFile := natstest.WriteFile(t, dir, "seed", seed)
	creds := natstest.WriteFile(t, dir, "user.creds", natstest.NewOperator(t).Creds(t))
	pw := natstest.WriteFile(t, dir, "pw", []byte("secret\n"))
	empty := natstest.WriteFile(t, dir, "empty", nil)
	junk := natstest.WriteFile(t, dir, "junk", []byte("not a key\n"))
	pki := natstest.NewPKI(t, dir)
	missing := dir + "/missing"
	const url = "nats://127.0.0.1:4222"
	for _, tc := range []struct {
		name string
		cfg  ClientConfig
		want string // "" = valid; else a variable the error must name
	}{
		{"embedded", ClientConfig{}, ""},
		{"plain", ClientConfig{URL: url}, ""},
		{"creds", ClientConfig{URL: url, CredsFile: creds}, ""},
		{"nkey", ClientConfig{URL: url, NkeyFile: seedFile}, ""},
		{"password", ClientConfig{URL: url, User: "u", PasswordFile: pw}, ""},
		{"tls", ClientConfig{URL: url, TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}, ""},
		{"a cluster", ClientConfig{URL: "nats://n1:4222, tls://n2:4222,wss://n3:443"}, ""},
		{"an HTTP URL", ClientConfig{URL: "http://n1:4222"}, varURL},
		{"no scheme", ClientConfig{URL: "garbage"}, varURL},
		{"an empty member", ClientConfig{URL: "nats://n1:4222,"}, varURL},
		{"creds without URL", ClientConfig{CredsFile: creds}, varCreds},
		{"TLS without URL", ClientConfig{TLSCA: pki.CA}, varTLSCA},
		{"two methods", ClientConfig{URL: url, CredsFile: creds, NkeyFile: seedFile}, varNkey},
		{"URL credentials and a method", ClientConfig{URL: "nats://u:p@127.0.0.1:4222", NkeyFile: seedFile}, varURL},
		{"user without password", ClientConfig{URL: url, User: "u"}, varPasswordFile},
		{"password without user", ClientConfig{URL: url, PasswordFile: pw}, varUser},
		{"missing creds", ClientConfig{URL: url, CredsFile: missing}, varCreds},
		{"junk creds", ClientConfig{URL: url, CredsFile: junk}, varCreds},
		{"seed as creds", ClientConfig{URL: url, CredsFile: seedFile}, varCreds},
		{"missing nkey", ClientConfig{URL: url, NkeyFile: missing}, varNkey},
		{"junk nkey", ClientConfig{URL: url, NkeyFile: junk}, varNkey},
		{"missing password", ClientConfig{URL: url, User: "u", PasswordFile: missing}, varPasswordFile},
		{"empty password", ClientConfig{URL: url, User: "u", PasswordFile: empty}, varPasswordFile},
		{"missing CA", ClientConfig{URL: url, TLSCA: missing}, varTLSCA},
		{"junk CA", ClientConfig{URL: url, TLSCA: junk}, varTLSCA},
		{"cert without key", ClientConfig{URL: url, TLSCert: pki.ClientCert}, varTLSKey},
		{"key not matching cert", ClientConfig{URL: url, TLSCert: pki.ClientCert, TLSKey: pki.ServerKey}, varTLSCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate accepted it; want an error naming %s", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate: %v; want it to name %s", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Fatalf("Validate quotes a file's content: %v", err)
			}
		})
	}
}

// The connection uses the inbox prefix given to Connect for every request, JetStream's included,
// so a role's NATS permissions can confine it to its own inboxes.
func TestConnectInboxPrefix(t *testing.T) {
	url := natstest.StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := Connect(ctx, ClientConfig{URL: url}, "icws-test", nil, nats.CustomInboxPrefix("_INBOX.edge"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if in := nc.NewRespInbox(); !strings.HasPrefix(in, "_INBOX.edge.") {
		t.Fatalf("response inbox %q", in)
	}
}
