package bus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/icws/icws/internal/redact"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ClientConfig configures the connection to an external NATS server or cluster: where it is, how
// this process authenticates, and whether it uses TLS. Credentials come from files, never from the
// environment itself, and files are re-read on every reconnect so they can be rotated in place.
type ClientConfig struct {
	URL          string `envconfig:"NATS_URL" default:"" desc:"comma-separated NATS URLs of an external server or cluster (nats://n1:4222,nats://n2:4222); empty means the embedded server. Credentials in the URL are masked in logs; prefer the ICWS_NATS_* files"`
	CredsFile    string `envconfig:"NATS_CREDS" default:"" desc:"NATS credentials file (.creds: user JWT and nkey seed) for an external server"`
	NkeyFile     string `envconfig:"NATS_NKEY" default:"" desc:"NATS user nkey seed file (SU...) for an external server"`
	User         string `envconfig:"NATS_USER" default:"" desc:"NATS user name for an external server; the password is read from ICWS_NATS_PASSWORD_FILE"`
	PasswordFile string `envconfig:"NATS_PASSWORD_FILE" default:"" desc:"file holding the password of ICWS_NATS_USER (one line)"`
	TLSCA        string `envconfig:"NATS_TLS_CA" default:"" desc:"PEM file of the CA certificates that sign the NATS servers' certificates (default: the system roots); any ICWS_NATS_TLS_* variable makes TLS mandatory"`
	TLSCert      string `envconfig:"NATS_TLS_CERT" default:"" desc:"PEM client certificate for NATS mutual TLS (with ICWS_NATS_TLS_KEY)"`
	TLSKey       string `envconfig:"NATS_TLS_KEY" default:"" desc:"PEM private key of ICWS_NATS_TLS_CERT"`
	// nats.go pings every 2 minutes by default: a hung server (paused VM, frozen container) would
	// hold a connection for minutes. With these defaults a silent server is left after about 3 s.
	PingInterval time.Duration `envconfig:"NATS_PING_INTERVAL" default:"1s" desc:"how often each process pings its NATS server; a server that misses NATS_MAX_PINGS_OUT pings in a row is left for another"`
	MaxPingsOut  int           `envconfig:"NATS_MAX_PINGS_OUT" default:"2" desc:"unanswered NATS pings after which the connection counts as stale and is re-established"`
	// A server cut off from its cluster answers pings; only JetStream shows it (clusterwatch.go).
	JetStreamTimeout time.Duration `envconfig:"NATS_JETSTREAM_TIMEOUT" default:"10s" desc:"with an external NATS cluster, a process whose NATS server answers while the cluster's meta leader has not answered it, or all its lease writes have failed, for this long (the server lost its cluster) moves to another server. Longer than a JetStream leader election (4-9 s), which every server's clients see alike"`
}

// Variable names, for error messages.
const (
	varURL          = "ICWS_NATS_URL"
	varCreds        = "ICWS_NATS_CREDS"
	varNkey         = "ICWS_NATS_NKEY"
	varUser         = "ICWS_NATS_USER"
	varPasswordFile = "ICWS_NATS_PASSWORD_FILE"
	varTLSCA        = "ICWS_NATS_TLS_CA"
	varTLSCert      = "ICWS_NATS_TLS_CERT"
	varTLSKey       = "ICWS_NATS_TLS_KEY"
)

type setting struct{ name, value string }

func (c *ClientConfig) settings() []setting {
	return []setting{
		{varCreds, c.CredsFile}, {varNkey, c.NkeyFile}, {varUser, c.User}, {varPasswordFile, c.PasswordFile},
		{varTLSCA, c.TLSCA}, {varTLSCert, c.TLSCert}, {varTLSKey, c.TLSKey},
	}
}

// usesTLS says whether TLS was asked for explicitly.
func (c *ClientConfig) usesTLS() bool { return c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "" }

// urlHasCredentials says whether some URL of the list carries a user-info part.
func (c *ClientConfig) urlHasCredentials() bool {
	for u := range strings.SplitSeq(c.URL, ",") {
		if i := strings.Index(u, "://"); i >= 0 {
			u = u[i+3:]
		}
		if strings.Contains(u, "@") {
			return true
		}
	}
	return false
}

// credentialVars names the variables that hold this configuration's credentials, for messages.
func (c *ClientConfig) credentialVars() string {
	switch {
	case c.CredsFile != "":
		return varCreds
	case c.NkeyFile != "":
		return varNkey
	case c.User != "":
		return varUser + " and " + varPasswordFile
	case c.urlHasCredentials():
		return "the user-info part of " + varURL
	}
	return ""
}

// Validate checks that the settings go together and that every file they name can be read and
// holds what it should, so a mistake stops the process at start instead of at the first connect.
// Messages name the variable and the file, never a file's content.
func (c *ClientConfig) Validate() error {
	if c.PingInterval != 0 && c.PingInterval < 100*time.Millisecond {
		return fmt.Errorf("ICWS_NATS_PING_INTERVAL=%s: must be at least 100ms", c.PingInterval)
	}
	if c.JetStreamTimeout != 0 && c.JetStreamTimeout < time.Second {
		return fmt.Errorf("ICWS_NATS_JETSTREAM_TIMEOUT=%s: must be at least 1s", c.JetStreamTimeout)
	}
	if c.MaxPingsOut < 0 {
		return fmt.Errorf("ICWS_NATS_MAX_PINGS_OUT=%d: must be at least 1", c.MaxPingsOut)
	}
	if c.URL == "" {
		for _, s := range c.settings() {
			if s.value != "" {
				return fmt.Errorf("%s is set but %s is empty: credentials and TLS settings are for an external NATS server (the embedded one needs none)", s.name, varURL)
			}
		}
		return nil
	}
	for u := range strings.SplitSeq(c.URL, ",") {
		scheme, rest, ok := strings.Cut(strings.TrimSpace(u), "://")
		switch {
		case !ok || rest == "":
			return fmt.Errorf("%s=%q: each URL must be nats://host:port (or tls://, ws://, wss://)", varURL, redact.URL(c.URL))
		case scheme != "nats" && scheme != "tls" && scheme != "ws" && scheme != "wss":
			return fmt.Errorf("%s=%q: scheme %q is not one of nats, tls, ws, wss", varURL, redact.URL(c.URL), scheme)
		}
	}
	var methods []string
	for _, s := range []setting{{varCreds, c.CredsFile}, {varNkey, c.NkeyFile}, {varUser, c.User}} {
		if s.value != "" {
			methods = append(methods, s.name)
		}
	}
	if len(methods) > 1 {
		return fmt.Errorf("%s: set only one way to authenticate to NATS", strings.Join(methods, ", "))
	}
	if len(methods) == 1 && c.urlHasCredentials() {
		return fmt.Errorf("%s carries credentials and %s is set: use one way to authenticate to NATS", varURL, methods[0])
	}
	if (c.User == "") != (c.PasswordFile == "") {
		return fmt.Errorf("%s and %s go together: set both or neither", varUser, varPasswordFile)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("%s and %s go together: set both or neither", varTLSCert, varTLSKey)
	}
	if c.CredsFile != "" {
		if err := checkCredsFile(c.CredsFile); err != nil {
			return fmt.Errorf("%s=%s: %w", varCreds, c.CredsFile, err)
		}
	}
	if c.NkeyFile != "" {
		if err := checkSeedFile(c.NkeyFile); err != nil {
			return fmt.Errorf("%s=%s: %w", varNkey, c.NkeyFile, err)
		}
	}
	if c.PasswordFile != "" {
		if _, err := readPassword(c.PasswordFile); err != nil {
			return fmt.Errorf("%s=%s: %w", varPasswordFile, c.PasswordFile, err)
		}
	}
	if c.TLSCA != "" {
		if _, err := loadCAs(c.TLSCA); err != nil {
			return fmt.Errorf("%s=%s: %w", varTLSCA, c.TLSCA, err)
		}
	}
	if c.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return fmt.Errorf("%s=%s, %s=%s: %w", varTLSCert, c.TLSCert, varTLSKey, c.TLSKey, err)
		}
	}
	return nil
}

// wipe overwrites secret bytes once they have been used.
func wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

func checkCredsFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	defer wipe(data)
	if jwt, err := nkeys.ParseDecoratedJWT(data); err != nil || !strings.HasPrefix(jwt, "eyJ") {
		return errors.New("no user JWT in the file (want a .creds file with a JWT and an nkey seed)")
	}
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return fmt.Errorf("no user nkey seed in the file: %w", err)
	}
	kp.Wipe()
	return nil
}

func checkSeedFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	defer wipe(data)
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return fmt.Errorf("not a user nkey seed (SU...): %w", err)
	}
	kp.Wipe()
	return nil
}

// readPassword reads a password file: its first line, without the line ending.
func readPassword(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	defer wipe(data)
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", errors.New("the password file is empty")
	}
	return line, nil
}

func loadCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("no PEM certificate in the file")
	}
	return pool, nil
}

// authOptions are the nats.go options for the credentials and TLS of c. Files are read again on
// every (re)connect, so rotating them needs no restart.
func (c *ClientConfig) authOptions() []nats.Option {
	var opts []nats.Option
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NkeyFile != "":
		opts = append(opts, nkeyOption(c.NkeyFile))
	case c.User != "":
		opts = append(opts, passwordOption(c.User, c.PasswordFile))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	// RootCAs and ClientCert switch TLS on (TLS 1.2 or later); without them nats.go still uses TLS
	// when the URL says tls:// or the server requires it, verified against the system roots.
	return opts
}

// nkeyOption signs the server's nonce with the seed in path, read for every signature.
func nkeyOption(path string) nats.Option {
	return func(o *nats.Options) error {
		opt, err := nats.NkeyOptionFromSeed(path)
		if err != nil {
			return fmt.Errorf("%s=%s: %w", varNkey, path, err)
		}
		return opt(o)
	}
}

// passwordOption reads the password file on every connect; when it cannot be read, the last
// password read is used (the server then decides).
func passwordOption(user, path string) nats.Option {
	var last string
	return nats.UserInfoHandler(func() (string, string) {
		if pw, err := readPassword(path); err == nil {
			last = pw
		}
		return user, last
	})
}
