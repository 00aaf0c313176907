package bus

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/icws/icws/internal/redact"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultClientConfig is the documented defaults of ClientConfig (no URL, no credentials).
func DefaultClientConfig() ClientConfig {
	return ClientConfig{PingInterval: time.Second, MaxPingsOut: 2, JetStreamTimeout: 10 * time.Second}
}

// options are the connection options of ClientConfig's liveness settings; zero values mean the
// defaults.
func (c ClientConfig) options() []nats.Option {
	def := DefaultClientConfig()
	return []nats.Option{
		nats.PingInterval(cmp.Or(c.PingInterval, def.PingInterval)),
		nats.MaxPingsOutstanding(cmp.Or(c.MaxPingsOut, def.MaxPingsOut)),
	}
}

const (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 5 * time.Second
)

// clientOptions are the options of every icws connection: reconnect forever, with a capped
// exponential backoff, and tell the log about every change of state. Every URL and error it logs
// goes through redact with urls (the configured URL list), so credentials in it never reach a log.
func clientOptions(name, urls string, logger *slog.Logger) []nats.Option {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log := logger.With("conn", name)
	where := func(nc *nats.Conn) string {
		if urls == "" {
			return "in-process" // the URL nats.go reports is a default nothing listens on
		}
		return redact.URL(nc.ConnectedUrl())
	}
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(8 << 20),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return backoff(attempts)
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", "url", where(nc))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", redact.Error(err, urls))
			} else {
				log.Info("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", where(nc))
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Debug("nats reconnect attempt failed", "err", redact.Error(err, urls))
		}),
		nats.ClosedHandler(func(*nats.Conn) { log.Debug("nats connection closed") }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			err = redact.Error(err, urls)
			if sub != nil {
				log.Error("nats error", "subject", sub.Subject, "err", err)
				return
			}
			log.Error("nats error", "err", err)
		}),
	}
}

// backoff is the wait before attempt n (1-based): reconnectMin doubling up to reconnectMax.
func backoff(attempts int) time.Duration {
	d := reconnectMin
	for i := 1; i < attempts && d < reconnectMax; i++ {
		d *= 2
	}
	return min(d, reconnectMax)
}

// ErrRefused means the NATS server refused this client's credentials or TLS set-up: retrying
// cannot help, the configuration must change.
var ErrRefused = errors.New("refused by the NATS server")

// Connect connects to the external NATS server or cluster of cfg (its URL may list several,
// separated by commas) with cfg's credentials and TLS settings, and waits until the first
// connection succeeds or ctx ends. Afterwards the connection reconnects forever with backoff.
// Servers that cannot be reached yet are waited for; a refusal of the credentials or of TLS ends
// the wait at once with an error wrapping ErrRefused that names the variables to check. No error
// or log line carries a credential from the URL. extra options are added last (for example an
// inbox prefix).
func Connect(ctx context.Context, cfg ClientConfig, name string, logger *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("connect to nats: no URL (%s)", varURL)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	shown := redact.URL(cfg.URL)
	opts := append(clientOptions(name, cfg.URL, logger), cfg.authOptions()...)
	opts = append(opts, cfg.options()...)
	opts = append(opts, extra...)
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(cfg.URL, opts...)
		if err == nil {
			return nc, nil
		}
		err = redact.Error(err, cfg.URL)
		if hint := cfg.refusal(err); hint != "" {
			return nil, fmt.Errorf("connect to nats %s: %w: %s: %w", shown, ErrRefused, hint, err)
		}
		if attempt == 1 {
			logger.Info("waiting for nats", "url", shown, "conn", name, "err", err)
		} else {
			logger.Debug("waiting for nats", "url", shown, "conn", name, "attempt", attempt, "err", err)
		}
		t := time.NewTimer(backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("connect to nats %s: %w (last error: %w)", shown, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// refusal tells a configuration the server refuses (it returns what to check) from a server that
// cannot be reached yet (it returns "").
func (c *ClientConfig) refusal(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked),
		errors.Is(err, nats.ErrAccountAuthExpired):
		if v := c.credentialVars(); v != "" {
			return "the server refused the credentials of " + v
		}
		return fmt.Sprintf("the server requires credentials: set %s, %s, or %s and %s", varCreds, varNkey, varUser, varPasswordFile)
	case errors.As(err, &netErr) && netErr.Timeout():
		return ""
	case isTLSError(err):
		if c.usesTLS() {
			return fmt.Sprintf("TLS with the server failed: check %s, %s and %s", varTLSCA, varTLSCert, varTLSKey)
		}
		return fmt.Sprintf("TLS with the server failed: set %s (the CA of the servers' certificates) and, for mutual TLS, %s and %s", varTLSCA, varTLSCert, varTLSKey)
	}
	return ""
}

func isTLSError(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verification     *tls.CertificateVerificationError
		record           tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknownAuthority), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.As(err, &verification), errors.As(err, &record),
		errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted):
		return true
	}
	// Alerts received from the server (a refused client certificate) are not exported types.
	msg := err.Error()
	return strings.Contains(msg, "tls: ") || strings.Contains(msg, "x509: ")
}

// JetStream gives the JetStream API of a connection.
func JetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}

// ConnCheck is a readiness check for a connection: connected, and the server answers a ping
// within ctx.
func ConnCheck(nc *nats.Conn) func(context.Context) error {
	return func(ctx context.Context) error {
		if st := nc.Status(); st != nats.CONNECTED {
			return fmt.Errorf("nats connection %s", st)
		}
		if _, ok := ctx.Deadline(); !ok {
			// nats.go refuses a flush without a deadline.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			return fmt.Errorf("nats ping: %w", err)
		}
		return nil
	}
}
