package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/icws/icws/internal/config"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerConfig configures the embedded NATS server (one-host mode).
type ServerConfig struct {
	DataDir      string        `envconfig:"DATA_DIR" default:"./data" desc:"directory for the gateway key and the embedded NATS store"`
	NATSListen   string        `envconfig:"NATS_LISTEN" default:"" desc:"host:port where the embedded NATS server accepts TCP clients; empty means in-process connections only"`
	MaxMemory    config.Bytes  `envconfig:"NATS_MAX_MEMORY" default:"256MiB" desc:"JetStream memory-storage limit of the embedded NATS server"`
	MaxStore     config.Bytes  `envconfig:"NATS_MAX_STORE" default:"8GiB" desc:"JetStream file-storage limit of the embedded NATS server"`
	ServerName   string        `envconfig:"NATS_SERVER_NAME" default:"icws" desc:"name of the embedded NATS server"`
	ReadyTimeout time.Duration `envconfig:"NATS_READY_TIMEOUT" default:"30s" desc:"how long the embedded NATS server may take to start (JetStream recovers its store first)"`
	Debug        bool          `envconfig:"NATS_DEBUG" default:"false" desc:"log the embedded NATS server's debug and trace lines (at slog debug level)"`
}

// Validate checks the ranges.
func (c *ServerConfig) Validate() error {
	if c.DataDir == "" {
		return errors.New("ICWS_DATA_DIR is empty: must name a directory")
	}
	if c.NATSListen != "" {
		if err := config.CheckHostPort(c.NATSListen); err != nil {
			return fmt.Errorf("ICWS_NATS_LISTEN=%q: %w", c.NATSListen, err)
		}
	}
	if c.MaxMemory < 1<<20 {
		return fmt.Errorf("ICWS_NATS_MAX_MEMORY=%s: must be at least 1MiB", c.MaxMemory)
	}
	if c.MaxStore < 1<<20 {
		return fmt.Errorf("ICWS_NATS_MAX_STORE=%s: must be at least 1MiB", c.MaxStore)
	}
	if c.ReadyTimeout <= 0 {
		return fmt.Errorf("ICWS_NATS_READY_TIMEOUT=%s: must be positive", c.ReadyTimeout)
	}
	return nil
}

// StoreDir is where JetStream keeps its files: <DataDir>/nats.
func (c *ServerConfig) StoreDir() string { return filepath.Join(c.DataDir, "nats") }

// Embedded is a NATS server with JetStream running inside this process.
type Embedded struct {
	ns     *server.Server
	logger *slog.Logger
	listen bool
}

// StartEmbedded starts a NATS server with JetStream in this process and waits until it accepts
// connections. Its store lives in <DataDir>/nats, so a restart on the same DataDir keeps streams,
// messages and KV values.
func StartEmbedded(ctx context.Context, cfg ServerConfig, logger *slog.Logger) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	storeDir, err := filepath.Abs(cfg.StoreDir())
	if err != nil {
		return nil, fmt.Errorf("nats store dir: %w", err)
	}
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return nil, fmt.Errorf("create nats store dir: %w", err)
	}
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		JetStream:          true,
		StoreDir:           storeDir,
		JetStreamMaxMemory: int64(cfg.MaxMemory),
		JetStreamMaxStore:  int64(cfg.MaxStore),
		// The embedded server must not install its own signal handler: the process owns shutdown.
		NoSigs:     true,
		Debug:      cfg.Debug,
		Trace:      cfg.Debug,
		MaxPayload: 8 << 20,
	}
	if cfg.NATSListen == "" {
		opts.DontListen = true
	} else {
		host, port, _ := net.SplitHostPort(cfg.NATSListen)
		p, _ := strconv.Atoi(port)
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
		if host == "" {
			opts.Host = "0.0.0.0"
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats server: %w", err)
	}
	log := logger
	adapter := &slogAdapter{l: log, fatal: make(chan string, 1)}
	ns.SetLoggerV2(adapter, cfg.Debug, cfg.Debug, false)
	go ns.Start()

	ready := make(chan bool, 1)
	go func() { ready <- ns.ReadyForConnections(cfg.ReadyTimeout) }()
	select {
	case ok := <-ready:
		if !ok {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, fmt.Errorf("embedded nats server not ready within %s (store %s)", cfg.ReadyTimeout, storeDir)
		}
	case msg := <-adapter.fatal:
		// The server logs a fatal error (for example a port in use) and gives up without exiting.
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats server: %s", msg)
	case <-ctx.Done():
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats server start: %w", ctx.Err())
	}
	e := &Embedded{ns: ns, logger: log, listen: !opts.DontListen}
	attrs := []any{"store", storeDir, "max_memory", cfg.MaxMemory.String(), "max_store", cfg.MaxStore.String()}
	if e.listen {
		attrs = append(attrs, "url", e.ClientURL())
	}
	log.Info("embedded NATS ready", attrs...)
	return e, nil
}

// Server is the underlying nats-server, for tests and diagnostics.
func (e *Embedded) Server() *server.Server { return e.ns }

// ClientURL is the TCP URL clients use, or "" when the server only takes in-process connections.
func (e *Embedded) ClientURL() string {
	if !e.listen {
		return ""
	}
	return e.ns.ClientURL()
}

// Connect opens a client connection: in-process when there is no TCP listener, else over TCP.
func (e *Embedded) Connect(ctx context.Context, name string) (*nats.Conn, error) {
	if e.listen {
		cfg := DefaultClientConfig()
		cfg.URL = e.ClientURL()
		return Connect(ctx, cfg, name, e.logger)
	}
	// In-process connections cannot fail like network ones: their state changes are debug lines.
	opts := append(clientOptions(name, "", slog.New(debugOnly{e.logger.Handler()})), nats.InProcessServer(e.ns))
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats server: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server and waits until JetStream has flushed its store, or ctx ends.
func (e *Embedded) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		e.ns.Shutdown()
		e.ns.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
		e.logger.Info("embedded nats server stopped")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("embedded nats server shutdown: %w", ctx.Err())
	}
}

// slogAdapter routes the server's log lines into slog.
type slogAdapter struct {
	l     *slog.Logger
	fatal chan string
}

// Noticef: the server's notices (its banner, its configuration) are for whoever debugs NATS.
func (a *slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	a.l.Error(msg, "fatal", true)
	select {
	case a.fatal <- msg:
	default:
	}
}
func (a *slogAdapter) Debugf(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any) {
	a.l.Debug(fmt.Sprintf(format, v...), "trace", true)
}

// debugOnly logs every record at debug level.
type debugOnly struct{ slog.Handler }

func (h debugOnly) Enabled(ctx context.Context, _ slog.Level) bool {
	return h.Handler.Enabled(ctx, slog.LevelDebug)
}

func (h debugOnly) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return h.Handler.Handle(ctx, r)
}

func (h debugOnly) WithAttrs(attrs []slog.Attr) slog.Handler {
	return debugOnly{h.Handler.WithAttrs(attrs)}
}

func (h debugOnly) WithGroup(name string) slog.Handler { return debugOnly{h.Handler.WithGroup(name)} }
