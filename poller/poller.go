// Package poller runs the canister pollers: for every canister with sessions (and every configured
// canister) exactly one poller process across the deployment holds a lease, polls the canister's
// ws_get_messages queue and publishes each certified message once, in queue order, to ICWS_OUT.
package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/bus"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// IC is what the poller needs from the IC client (*icclient.Client satisfies it).
type IC interface {
	Query(ctx context.Context, canister principal.Principal, method string, arg []byte) ([]byte, error)
	Principal() principal.Principal
}

// Deps are the poller's connections.
type Deps struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	IC       IC
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// ClusterWatch hears of the poller's lease writes (nil without an external NATS cluster).
	ClusterWatch *bus.ClusterWatch
}

// Poller is one poller process.
type Poller struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	m       *metrics
	gateway principal.Principal
	static  map[string]principal.Principal

	mu          sync.Mutex
	lastAttempt time.Time
	lastOK      time.Time
	h           *bus.Handles

	// arenas holds the buffers publish cuts frames into, reused across polls.
	arenas sync.Pool

	// abandonLeases makes Run return without releasing its leases, as a crashed process would
	// (tests only).
	abandonLeases bool
}

// New validates the configuration and registers the metrics.
func New(cfg Config, deps Deps) (*Poller, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("poller: %w", err)
	}
	if deps.NC == nil || deps.JS == nil || deps.IC == nil {
		return nil, errors.New("poller: NATS connection, JetStream and IC client are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	var reg prometheus.Registerer = deps.Registry
	if deps.Registry == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("poller: register metrics: %w", err)
	}
	p := &Poller{
		cfg:     cfg,
		deps:    deps,
		log:     deps.Logger.With("poller", cfg.ID),
		m:       m,
		gateway: deps.IC.Principal(),
		static:  make(map[string]principal.Principal),
	}
	for _, s := range cfg.Canisters {
		c, _ := principal.Decode(s) // validated
		p.static[c.Encode()] = c
	}
	return p, nil
}

// Ready reports whether the poller can do its job: NATS connected, streams present, and the IC
// answered recently (or has not failed for longer than ReadyWindow).
func (p *Poller) Ready(ctx context.Context) error {
	if !p.deps.NC.IsConnected() {
		return errors.New("poller: NATS not connected")
	}
	if _, err := p.deps.JS.Stream(ctx, bus.StreamOut); err != nil {
		return fmt.Errorf("poller: stream %s: %w", bus.StreamOut, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.lastAttempt.IsZero() && p.lastAttempt.After(p.lastOK) && time.Since(p.lastOK) > p.cfg.ReadyWindow {
		return fmt.Errorf("poller: no successful IC poll since %s", p.lastOK.Format(time.RFC3339))
	}
	return nil
}

func (p *Poller) notePoll(ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.lastAttempt = now
	if ok {
		p.lastOK = now
	}
}

type workerHandle struct {
	cancel context.CancelFunc
	done   chan struct{}
	lease  *bus.Lease
	// kick asks for a poll now (a submitter saw a call to the canister executed).
	kick chan struct{}
	// idleSince is when the canister's last session went away; zero while it has sessions.
	idleSince time.Time
	// revive says a session of the canister was newly confirmed: a failed canister runs again.
	revive chan struct{}
	// hasSessions: the canister has confirmed sessions (a failure notice is worth repeating).
	hasSessions atomic.Bool
}

// Run polls until ctx ends, then stops every canister worker, releasing its leases so a standby
// takes over at once.
func (p *Poller) Run(ctx context.Context) error {
	h, err := bus.Open(ctx, p.deps.JS)
	if err != nil {
		return fmt.Errorf("poller: %w", err)
	}
	p.mu.Lock()
	p.h = h
	p.mu.Unlock()
	p.log.Debug("poller started", "gateway", p.gateway.Encode(), "static_canisters", len(p.static), "lease_ttl", p.cfg.LeaseTTL)

	workers := make(map[string]*workerHandle)
	var wg sync.WaitGroup
	defer func() {
		for _, w := range workers {
			w.cancel()
		}
		wg.Wait()
		p.log.Info("poller stopped")
	}()
	start := func(id string, c principal.Principal) *workerHandle {
		if w := workers[id]; w != nil {
			return w
		}
		if _, static := p.static[id]; !static && len(workers) >= len(p.static)+p.cfg.MaxCanisters {
			// Edges refuse sessions for more canisters; this guards against edges that disagree.
			p.m.refused.Inc()
			p.log.Warn("not polling one more canister: ICWS_MAX_CANISTERS reached", "canister", id, "max", p.cfg.MaxCanisters)
			return nil
		}
		wctx, cancel := context.WithCancel(ctx)
		w := &workerHandle{cancel: cancel, done: make(chan struct{}), lease: p.newLease(h, id), kick: make(chan struct{}, 1), revive: make(chan struct{}, 1)}
		workers[id] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(w.done)
			p.runCanister(wctx, c, w)
		}()
		p.log.Debug("canister polling started", "canister", id)
		return w
	}
	for id, c := range p.static {
		start(id, c)
	}

	sessions := make(map[string]map[string]struct{}) // canister → session keys
	// The static canisters are polled already: a stop meanwhile is a clean one.
	sw, err := h.Sessions.WatchAll(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("poller: watch sessions: %w", err)
	}
	defer func() { _ = sw.Stop() }()
	lw, err := h.Leases.Watch(ctx, bus.PollerLeasesFilter, jetstream.UpdatesOnly())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("poller: watch leases: %w", err)
	}
	defer func() { _ = lw.Stop() }()

	kicks := make(chan *nats.Msg, 256)
	ksub, err := p.deps.NC.ChanSubscribe(bus.SubjectKickAll, kicks)
	if err != nil {
		return fmt.Errorf("poller: subscribe to poll kicks: %w", err)
	}
	defer func() { _ = ksub.Unsubscribe() }()

	tick := time.NewTicker(max(p.cfg.Linger/4, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-sw.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("poller: sessions watch ended")
			}
			if e == nil {
				continue // end of the initial values
			}
			id, c, open := sessionChange(e)
			if id == "" {
				p.log.Warn("ignoring session entry with a bad key", "key", e.Key())
				continue
			}
			set := sessions[id]
			if open {
				if set == nil {
					set = make(map[string]struct{})
					sessions[id] = set
				}
				_, known := set[e.Key()]
				set[e.Key()] = struct{}{}
				if w := start(id, c); w != nil {
					w.idleSince = time.Time{}
					w.hasSessions.Store(true)
					if !known {
						select {
						case w.revive <- struct{}{}:
						default:
						}
					}
				}
			} else if set != nil {
				delete(set, e.Key())
				if len(set) == 0 {
					delete(sessions, id)
					if w := workers[id]; w != nil {
						w.hasSessions.Store(false)
						if w.idleSince.IsZero() {
							w.idleSince = time.Now()
						}
					}
				}
			}
		case m := <-kicks:
			if id, err := bus.ParseKickSubject(m.Subject); err == nil {
				if w := workers[id]; w != nil {
					select {
					case w.kick <- struct{}{}:
					default:
					}
				}
			}
		case e, ok := <-lw.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("poller: leases watch ended")
			}
			if e == nil || e.Operation() == jetstream.KeyValuePut {
				continue
			}
			// A released lease: wake the standby at once instead of at the next expiry check.
			if id, err := bus.ParsePollerLeaseKey(e.Key()); err == nil && workers[id] != nil {
				workers[id].lease.Wake(e.Revision())
			}
		case <-tick.C:
			for id, w := range workers {
				if _, ok := p.static[id]; ok || w.idleSince.IsZero() || time.Since(w.idleSince) < p.cfg.Linger {
					continue
				}
				w.cancel()
				<-w.done
				delete(workers, id)
				p.log.Info("canister polling stopped: no sessions", "canister", id)
			}
		}
	}
}

// sessionChange reads a sessions-bucket update: the canister and whether the session counts: open
// or detached, and confirmed — the IC executed its ws_open, so the canister exists and runs the
// ic-websocket protocol (a session a stranger opened for any canister id never gets it polled).
// The id is empty when the key is not a session key.
func sessionChange(e jetstream.KeyValueEntry) (string, principal.Principal, bool) {
	ref, err := bus.ParseSessionKey(e.Key())
	if err != nil {
		return "", principal.Principal{}, false
	}
	if e.Operation() != jetstream.KeyValuePut {
		return ref.CanisterText, ref.Canister, false
	}
	rec, err := bus.DecodeSessionRecord(e.Key(), e.Value())
	if err != nil {
		return ref.CanisterText, ref.Canister, false
	}
	return ref.CanisterText, ref.Canister, rec.Confirmed && (rec.State == bus.SessionOpen || rec.State == bus.SessionDetached)
}
