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

// Connect connects to an external NATS server or cluster (url may list several, separated by
// commas) and waits until the first connection succeeds or ctx ends. Afterwards the connection
// reconnects forever with backoff.
func Connect(ctx context.Context, url, name string, logger *slog.Logger) (*nats.Conn, error) {
	if url == "" {
		return nil, fmt.Errorf("connect to nats: no URL")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	nc, err := nats.Connect(url, clientOptions(name, logger)...)
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
