package bus

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A NATS server cut off from its cluster keeps answering its clients' pings, so nats.go never
// leaves it, while nothing its clients ask of JetStream goes anywhere: no lease is renewed, no
// message is stored, no consumer delivers. A process stuck there waits for the partition to heal,
// however long. The cluster watch moves the connection to another server when, while the server
// itself answers, for JetStreamTimeout
//   - the cluster's meta leader has not answered a request for the account's JetStream
//     information (the cheapest request that needs the cluster, not just the server), asked five
//     times per timeout; or
//   - every lease operation of the process has failed, the latest a moment ago: a cut-off server
//     that led the meta group answers the first kind itself until it steps down (10 s), but a
//     write needs a quorum.
//
// The timeout is longer than a leader election, in which every server's clients see the same
// silence and moving would gain nothing.

// clusterWatchProbes is how many probes fit in one JetStreamTimeout.
const clusterWatchProbes = 5

// ClusterWatch moves a connection off a NATS server that answers but has lost its cluster. Its
// methods are safe on a nil *ClusterWatch (no watch: an embedded server) and for concurrent use.
type ClusterWatch struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	timeout time.Duration
	log     *slog.Logger
	onMove  func()

	// leaseFailing is when the first lease operation failed since the last write that landed
	// (unix ns; 0 while the last one landed); leaseFailed when the latest one failed. Only a
	// process that keeps trying counts as failing: a standby whose attempts failed during an
	// election and that now finds the lease held by another writes nothing, and fails nothing.
	leaseFailing atomic.Int64
	leaseFailed  atomic.Int64
}

// NewClusterWatch watches nc (js is its JetStream context); timeout is ClientConfig's
// JetStreamTimeout (its default when zero). onMove, if set, is called after every reconnect the
// watch forced (metrics, tests).
func NewClusterWatch(nc *nats.Conn, js jetstream.JetStream, timeout time.Duration, logger *slog.Logger, onMove func()) *ClusterWatch {
	if timeout <= 0 {
		timeout = DefaultClientConfig().JetStreamTimeout
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ClusterWatch{nc: nc, js: js, timeout: timeout, log: logger, onMove: onMove}
}

// LeaseWritten records a lease write that landed (LeaseConfig.OnRenewed).
func (w *ClusterWatch) LeaseWritten() {
	if w != nil {
		w.leaseFailing.Store(0)
	}
}

// LeaseFailed records a failed lease operation (LeaseConfig.OnError).
func (w *ClusterWatch) LeaseFailed(error) {
	if w != nil {
		now := time.Now().UnixNano()
		w.leaseFailing.CompareAndSwap(0, now)
		w.leaseFailed.Store(now)
	}
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
			w.leaseFailing.Store(0)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		_, err := w.js.AccountInfo(pctx)
		cancel()
		now := time.Now()
		if err == nil {
			lastAnswer = now
		}
		silent := now.Sub(lastAnswer)
		var leasesFailing time.Duration
		if since := w.leaseFailing.Load(); since != 0 && now.Sub(time.Unix(0, w.leaseFailed.Load())) < 2*every {
			leasesFailing = now.Sub(time.Unix(0, since))
		}
		if max(silent, leasesFailing) < w.timeout || now.Sub(movedAt) < w.timeout {
			continue
		}
		// The server itself must answer: one that does not is nats.go's to leave (its pings).
		fctx, cancel := context.WithTimeout(ctx, every)
		serverErr := w.nc.FlushWithContext(fctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if serverErr != nil {
			continue
		}
		movedAt = now
		attrs := []any{"meta_leader_silent", silent.Round(time.Millisecond), "leases_failing", leasesFailing.Round(time.Millisecond)}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		w.log.Warn("JetStream silent while the NATS server answers (cut off from its cluster?): reconnecting to another server", attrs...)
		if err := w.nc.ForceReconnect(); err != nil {
			w.log.Warn("reconnect to another NATS server", "err", err)
			continue
		}
		lastAnswer = now
		w.leaseFailing.Store(0)
		if w.onMove != nil {
			w.onMove()
		}
	}
}
