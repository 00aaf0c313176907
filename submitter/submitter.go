// Package submitter relays client call envelopes from ICWS_IN to the IC, one client at a time in
// order and many clients in parallel. ICWS_IN is split into partitions; each partition is owned by
// one submitter process at a time through a lease in the leases bucket, so a client's envelopes are
// only ever relayed by one process, and move to another process, without reordering, when the
// owner dies.
package submitter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icws/icws/broker"
)

// Deps are the connections and sinks a submitter uses.
type Deps struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	IC       IC
	Logger   *slog.Logger
	Registry *prometheus.Registry
}

// Submitter relays ICWS_IN to the IC.
type Submitter struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	ic  IC
	log *slog.Logger
	m   *metrics

	// sem bounds the clients relayed at the same time across all partitions.
	sem chan struct{}

	running atomic.Bool
	ready   atomic.Bool

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
	return &Submitter{
		cfg:     cfg,
		nc:      deps.NC,
		js:      deps.JS,
		ic:      deps.IC,
		log:     log.With("role", "submitter", "submitter_id", cfg.ID),
		m:       m,
		sem:     make(chan struct{}, cfg.MaxInFlight),
		crashCh: make(chan struct{}),
	}, nil
}

// ID is the id this process uses in leases.
func (s *Submitter) ID() string { return s.cfg.ID }

// Ready reports whether Run has joined the submitter group and NATS is connected.
func (s *Submitter) Ready(ctx context.Context) error {
	if !s.ready.Load() {
		return errors.New("submitter: not running yet")
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
	h, err := broker.Open(ctx, s.js)
	if err != nil {
		return fmt.Errorf("submitter: %w", err)
	}
	g := &group{s: s, h: h, owned: map[int]*partition{}}
	return g.run(ctx)
}

// crash is a test hook: Run returns at once without draining or releasing leases.
func (s *Submitter) crash() { s.crashOnce.Do(func() { close(s.crashCh) }) }
