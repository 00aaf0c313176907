package broker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ClientConfig configures the connection to an external NATS server or cluster.
type ClientConfig struct {
	URL string `envconfig:"NATS_URL" default:"" desc:"comma-separated NATS URLs of an external server or cluster (nats://n1:4222,nats://n2:4222); empty means the embedded server"`
	// nats.go pings every 2 minutes by default: a hung server (paused VM, frozen container) would
	// hold a connection for minutes. With these defaults a silent server is left after about 3 s.
	PingInterval time.Duration `envconfig:"NATS_PING_INTERVAL" default:"1s" desc:"how often each process pings its NATS server; a server that misses NATS_MAX_PINGS_OUT pings in a row is left for another"`
	MaxPingsOut  int           `envconfig:"NATS_MAX_PINGS_OUT" default:"2" desc:"unanswered NATS pings after which the connection counts as stale and is re-established (with another server of the cluster)"`
}

// DefaultClientConfig is the documented defaults of ClientConfig (no URL).
func DefaultClientConfig() ClientConfig {
	return ClientConfig{PingInterval: time.Second, MaxPingsOut: 2}
}

// Validate checks the ping settings.
func (c ClientConfig) Validate() error {
	if c.PingInterval < 100*time.Millisecond {
		return fmt.Errorf("ICWS_NATS_PING_INTERVAL=%s: must be at least 100ms", c.PingInterval)
	}
	if c.MaxPingsOut < 1 {
		return fmt.Errorf("ICWS_NATS_MAX_PINGS_OUT=%d: must be at least 1", c.MaxPingsOut)
	}
	return nil
}

// options are the connection options ClientConfig sets.
func (c ClientConfig) options() []nats.Option {
	var opts []nats.Option
	if c.PingInterval > 0 {
		opts = append(opts, nats.PingInterval(c.PingInterval))
	}
	if c.MaxPingsOut > 0 {
		opts = append(opts, nats.MaxPingsOutstanding(c.MaxPingsOut))
	}
	return opts
}

const (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 5 * time.Second
)

// clientOptions are the options of every icws connection: reconnect forever, with a capped
// exponential backoff, and tell the log about every change of state.
func clientOptions(name string, logger *slog.Logger) []nats.Option {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log := logger.With("component", "nats", "conn", name)
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(8 << 20),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := reconnectMin
			for i := 1; i < attempts && d < reconnectMax; i++ {
				d *= 2
			}
			return min(d, reconnectMax)
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			} else {
				log.Info("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) { log.Debug("nats connection closed") }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Error("nats error", "subject", sub.Subject, "err", err)
				return
			}
			log.Error("nats error", "err", err)
		}),
	}
}

// Connect connects to an external NATS server or cluster (cfg.URL may list several, separated by
// commas) and waits until the first connection succeeds or ctx ends. Afterwards the connection
// reconnects forever with backoff.
func Connect(ctx context.Context, cfg ClientConfig, name string, logger *slog.Logger) (*nats.Conn, error) {
	url := cfg.URL
	if url == "" {
		return nil, fmt.Errorf("connect to nats: no URL")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	nc, err := nats.Connect(url, append(clientOptions(name, logger), cfg.options()...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	if nc.IsConnected() {
		return nc, nil
	}
	ch := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(ch)
	if nc.IsConnected() {
		return nc, nil
	}
	logger.Info("waiting for nats", "url", url)
	select {
	case st := <-ch:
		if st == nats.CONNECTED {
			return nc, nil
		}
		return nil, fmt.Errorf("connect to nats %s: connection closed", url)
	case <-ctx.Done():
		nc.Close()
		return nil, fmt.Errorf("connect to nats %s: %w", url, ctx.Err())
	}
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
