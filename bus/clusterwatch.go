package bus

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A NATS server cut off from its cluster keeps answering its clients' pings, so nats.go never
// leaves it, while nothing its clients ask of JetStream goes anywhere: no lease is renewed, no
// message is stored, no consumer delivers. A process stuck there waits for the partition to heal,
// however long. The cluster watch asks the cluster's meta leader for the account's JetStream
// information (the cheapest request that needs the cluster, not just the server) every few
// seconds; when no answer has come for JetStreamTimeout while the server itself answers, it moves
// the connection to another server. The timeout is longer than a meta leader election, in which
// every server's clients see the same silence and moving would gain nothing.

// clusterWatchProbes is how many probes fit in one JetStreamTimeout.
const clusterWatchProbes = 5

// ClusterWatch moves a connection off a NATS server that answers but has lost its cluster.
type ClusterWatch struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	timeout time.Duration
	log     *slog.Logger
	// onMove, if set, is called after every reconnect the watch forced (metrics, tests).
	onMove func()
}

// NewClusterWatch watches nc (js is its JetStream context); timeout is ClientConfig's
// JetStreamTimeout (its default when zero).
func NewClusterWatch(nc *nats.Conn, js jetstream.JetStream, timeout time.Duration, logger *slog.Logger, onMove func()) *ClusterWatch {
	if timeout <= 0 {
		timeout = DefaultClientConfig().JetStreamTimeout
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ClusterWatch{nc: nc, js: js, timeout: timeout, log: logger, onMove: onMove}
}

// Run probes until ctx ends; it returns nil then.
func (w *ClusterWatch) Run(ctx context.Context) error {
	every := w.timeout / clusterWatchProbes
	t := time.NewTicker(every)
	defer t.Stop()
	lastAnswer := time.Now()
	var movedAt time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !w.nc.IsConnected() {
			// Reconnecting: nats.go picks the next server; judge the one it lands on afresh.
			lastAnswer = time.Now()
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		_, err := w.js.AccountInfo(pctx)
		cancel()
		if err == nil {
			lastAnswer = time.Now()
			continue
		}
		// The server itself must answer: one that does not is nats.go's to leave (its pings).
		fctx, cancel := context.WithTimeout(ctx, every)
		serverErr := w.nc.FlushWithContext(fctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		silent := now.Sub(lastAnswer)
		if serverErr != nil || silent < w.timeout || now.Sub(movedAt) < w.timeout {
			continue
		}
		movedAt = now
		w.log.Warn("JetStream silent while the NATS server answers (cut off from its cluster?): reconnecting to another server",
			"silent", silent.Round(time.Millisecond), "err", err)
		if err := w.nc.ForceReconnect(); err != nil {
			w.log.Warn("reconnect to another NATS server", "err", err)
			continue
		}
		lastAnswer = now
		if w.onMove != nil {
			w.onMove()
		}
	}
}
