// Package submitter relays client call envelopes from ICWS_IN to the IC, one client at a time in
// order and many clients in parallel: a client's envelopes execute in the order it sent them, each
// once (docs/ARCHITECTURE.md §3).
//
// Work is split by ICWS_IN partition. A process owns a partition while it holds the partition's
// lease (a bus.Lease on bus.SubmitterLeaseKey: compare-and-set on the KV revision, renewed
// every LeaseTTL/3). Processes announce themselves with a liveness lease (bus.SubmitterLiveKey)
// and each takes at most ceil(partitions / live processes), handing surplus partitions over
// gracefully when a new process joins.
//
// An owned partition is read by a durable pull consumer of our own, named
// "submit-p<partition>-<lease revision>". Messages go to a FIFO per client; a worker goroutine
// exists only while a client has envelopes waiting (at most MaxInFlight run at once) and acks each
// message only after its outcome is recorded.
//
// Taking a partition over: the new owner reads the ack floor of the previous owner's consumer,
// creates its own consumer starting right after that floor, then deletes the old consumer. So every
// envelope that was not certainly finished comes again, at once and in stream order, before
// anything newer; envelopes above the floor that were already done are sent again, which is
// harmless because the IC de-duplicates by request id. A previous owner that is merely slow cannot
// interfere: it stops starting envelopes when its lease is no longer certainly valid (LeaseTTL/4
// before the expiry it wrote, to absorb clock skew), its next renewal fails by compare-and-set once
// the lease has moved (which stops the partition at once), and its pull requests name a consumer
// that no longer exists. Because each owner sends a client's next envelope only after the previous
// one has a certified outcome, even an overlap of two owners could not reorder executions (202
// answers aside, which only SettleDelay covers, for one owner as for two); at worst it re-sends the
// same bytes.
package submitter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/ratelog"
)

// Deps are the connections and sinks a submitter uses.
type Deps struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	IC       IC
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// ClusterWatch hears of the submitter's lease writes (nil without an external NATS cluster).
	ClusterWatch *bus.ClusterWatch
}

// Submitter relays ICWS_IN to the IC.
type Submitter struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	ic  IC
	log *slog.Logger
	m   *metrics
	// cluster hears of the lease writes (Deps.ClusterWatch).
	cluster *bus.ClusterWatch
	// testSessionReplica, when set by a test before Run, wraps the sessions bucket the submitter
	// reads (a replica that lags).
	testSessionReplica func(jetstream.KeyValue) jetstream.KeyValue
	// sessions is set by Run once the buckets are open.
	sessions *bus.Sessions

	// clientWarnings keeps the warnings a client can cause (refused, expired or invalid
	// envelopes, backlogs) to one a minute per kind; the rest are debug lines.
	clientWarnings *ratelog.Limiter

	// sem bounds the clients relayed at the same time across all partitions.
	sem chan struct{}
	// pace estimates each canister's update latency (backlog.go).
	pace *paceEstimator
	// parts are the partitions running in this process, for the backlog metrics.
	pmu   sync.Mutex
	parts map[*partition]struct{}

	running atomic.Bool
	ready   atomic.Bool
	// icAnswered is when the IC last answered a status probe (unix ns; 0: no probe runs), icAway
	// whether the partitions are given up and the liveness lease withdrawn because it did not for
	// too long (reach.go; written by the run goroutine only).
	icAnswered     atomic.Int64
	icFailedProbes atomic.Int32 // probes failed since icAnswered
	icAway         atomic.Bool

	// Test hooks: crash ends Run without drain or lease release, as a killed process would;
	// pauseRenew stops lease renewals, as a stalled process would.
	crashOnce  sync.Once
	crashCh    chan struct{}
	pauseRenew atomic.Bool
}

// New checks the configuration and registers the metrics.
func New(cfg Config, deps Deps) (*Submitter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.JS == nil || deps.IC == nil {
		return nil, errors.New("submitter: NC, JS and IC are required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var reg prometheus.Registerer = deps.Registry
	if deps.Registry == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Submitter{
		cfg:     cfg,
		nc:      deps.NC,
		js:      deps.JS,
		ic:      deps.IC,
		cluster: deps.ClusterWatch,
		log:     log.With("submitter_id", cfg.ID),
		m:       m,
		sem:     make(chan struct{}, cfg.MaxInFlight),
		pace:    newPaceEstimator(),
		parts:   map[*partition]struct{}{},
		crashCh: make(chan struct{}),

		clientWarnings: ratelog.New(time.Minute),
	}
	if err := reg.Register(newBacklogCollector(s)); err != nil {
		return nil, fmt.Errorf("register submitter metrics: %w", err)
	}
	return s, nil
}

// track adds (or removes) a running partition to the set the backlog metrics look at.
func (s *Submitter) track(p *partition, running bool) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if running {
		s.parts[p] = struct{}{}
	} else {
		delete(s.parts, p)
	}
}

// ID is the id this process uses in leases.
func (s *Submitter) ID() string { return s.cfg.ID }

// Ready reports whether Run has joined the submitter group and NATS is connected.
func (s *Submitter) Ready(ctx context.Context) error {
	if !s.ready.Load() {
		return errors.New("submitter: not running yet")
	}
	if s.icAway.Load() {
		return fmt.Errorf("submitter: the IC has not answered for %s; the partitions are with other submitters", s.cfg.ICGiveUp)
	}
	if st := s.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("submitter: NATS connection is %s", st)
	}
	return nil
}

// Run owns partitions and relays their envelopes until ctx ends; then it stops taking envelopes,
// lets in-flight ones finish for at most DrainTimeout, and releases its leases.
func (s *Submitter) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("submitter: Run called twice")
	}
	// Streams may not exist yet when roles start on separate hosts: wait for them.
	var h *bus.Handles
	for backoff := s.cfg.RetryMin; ; backoff = min(2*backoff, s.cfg.RetryMax) {
		var err error
		if h, err = bus.Open(ctx, s.js); err == nil {
			break
		}
		s.log.Warn("waiting for the icws streams and buckets", "err", err)
		if !sleepCtx(ctx, jitter(backoff)) {
			return nil
		}
	}
	sessionsKV := h.Sessions
	if s.testSessionReplica != nil {
		sessionsKV = s.testSessionReplica(sessionsKV)
	}
	s.sessions = bus.NewSessions(sessionsKV, s.js)
	g := &group{s: s, h: h, owned: map[int]*partition{}}
	return g.run(ctx)
}

// crash is a test hook: Run returns at once without draining or releasing leases.
func (s *Submitter) crash() { s.crashOnce.Do(func() { close(s.crashCh) }) }
