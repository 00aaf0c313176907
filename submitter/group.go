package submitter

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
)

type leaseEntry struct {
	rec     LeaseRecord
	rev     uint64
	written time.Time // the entry's time (server clock)
}

// live reports whether the lease still counts as held at now (bus.LeaseRecord.Live).
func (e leaseEntry) live(now time.Time, ttl time.Duration) bool {
	return e.rec.Live(now, e.written, ttl, 0)
}

// LeaseRecord is bus.LeaseRecord; the alias keeps the lines short.
type LeaseRecord = bus.LeaseRecord

// errLeaseWritesPaused is what lease writes fail with while the pauseRenew test hook is set.
var errLeaseWritesPaused = errors.New("lease writes paused (test hook)")

// pausableLeases is the leases bucket as the group's leases write it: while paused (the
// pauseRenew test hook) creating and renewing fail, as for a process cut off from NATS.
type pausableLeases struct {
	bus.LeaseStore
	paused *atomic.Bool
}

func (l pausableLeases) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if l.paused.Load() {
		return 0, errLeaseWritesPaused
	}
	return l.LeaseStore.Create(ctx, key, value, opts...)
}

func (l pausableLeases) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	if l.paused.Load() {
		return 0, errLeaseWritesPaused
	}
	return l.LeaseStore.Update(ctx, key, value, revision)
}

// group is one Run of a submitter: its view of the leases and the partitions it owns. Only the
// run goroutine touches owned.
type group struct {
	s      *Submitter
	h      *bus.Handles
	leases bus.LeaseStore
	owned  map[int]*partition
	// live is this process's liveness lease, kept alive by keepLive until stopLive.
	live     *bus.Lease
	stopLive func()
	// tickNow asks the run loop for a tick before the next one is due: a lease was deleted (a
	// partition may be free, a submitter gone) or the IC stopped answering.
	tickNow chan struct{}

	mu   sync.Mutex
	view map[string]leaseEntry

	// reported is the partition count last logged: one line per change, not one per partition.
	reported int
}

func (g *group) run(ctx context.Context) error {
	s := g.s
	// Operations of this run stop at a crash as well as at the end of ctx.
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.crashCh:
			cancelRun()
		case <-runCtx.Done():
		}
	}()

	g.leases = pausableLeases{LeaseStore: g.h.Leases, paused: &s.pauseRenew}
	w, err := g.h.Leases.Watch(runCtx, bus.SubmitterLeasesFilter)
	if err != nil {
		return fmt.Errorf("submitter: watch leases: %w", err)
	}
	defer func() { _ = w.Stop() }()
	g.view = map[string]leaseEntry{}
	g.tickNow = make(chan struct{}, 1)
	initial := make(chan struct{})
	go g.watch(w, initial)
	select {
	case <-initial:
	case <-ctx.Done():
		return nil
	case <-runCtx.Done():
		return nil
	}
	// A KV hiccup at start must not end the process (in `icws all` it would take every role down):
	// Acquire retries until it works.
	live := g.newLease(bus.SubmitterLiveKey(s.cfg.ID))
	if err := live.Acquire(runCtx); err != nil {
		return nil
	}
	g.startLive(runCtx, live)
	defer func() { g.stopLive() }()
	if ic, ok := s.ic.(probingIC); ok && s.cfg.ICGiveUp > 0 {
		s.icAnswered.Store(time.Now().UnixNano())
		probeCtx, stopProbe := context.WithCancel(runCtx)
		var probeWG sync.WaitGroup
		probeWG.Go(func() { g.probeIC(probeCtx, ic) })
		defer func() { stopProbe(); probeWG.Wait() }()
	}

	s.log.Debug("submitter started", "partitions", g.h.Partitions)
	t := time.NewTicker(s.cfg.rebalanceEvery())
	defer t.Stop()
	g.tick(runCtx)
	// Ready once the first round has taken this process's share of the partitions.
	s.ready.Store(true)
	defer s.ready.Store(false)
	for {
		select {
		case <-t.C:
			g.tick(runCtx)
		case <-g.tickNow:
			g.tick(runCtx)
		case <-s.crashCh:
			g.crash()
			return nil
		case <-ctx.Done():
			g.shutdown(runCtx)
			return nil
		}
	}
}

// startLive makes live this process's liveness lease and keeps it alive until stopLive.
func (g *group) startLive(ctx context.Context, live *bus.Lease) {
	g.live = live
	liveCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { g.keepLive(liveCtx) })
	g.stopLive = func() { stop(); wg.Wait() }
}

// newLease describes one of this process's leases (no I/O).
func (g *group) newLease(key string) *bus.Lease {
	return bus.NewLease(g.leases, bus.LeaseConfig{
		Key:       key,
		Holder:    g.s.cfg.ID,
		TTL:       g.s.cfg.LeaseTTL,
		Logger:    g.s.log,
		OnError:   g.s.cluster.LeaseFailed,
		OnRenewed: g.s.cluster.LeaseWritten,
	})
}

// keepLive keeps the liveness lease alive until ctx ends, announcing the process again whenever
// the lease was lost (NATS unreachable for longer than its TTL, or the key deleted as stale).
func (g *group) keepLive(ctx context.Context) {
	for {
		err := g.live.KeepAlive(ctx)
		if ctx.Err() != nil {
			return
		}
		g.s.log.Warn("liveness lease lost; announcing again", "err", err)
		if g.live.Acquire(ctx) != nil {
			return
		}
	}
}

// wake asks the run loop for a tick now (without waiting if one is asked for already).
func (g *group) wake() {
	select {
	case g.tickNow <- struct{}{}:
	default:
	}
}

// watch keeps view up to date with the leases bucket.
func (g *group) watch(w jetstream.KeyWatcher, initial chan struct{}) {
	first := true
	for e := range w.Updates() {
		if e == nil {
			if first {
				first = false
				close(initial)
			}
			continue
		}
		g.mu.Lock()
		if e.Operation() != jetstream.KeyValuePut {
			delete(g.view, e.Key())
			if !first {
				g.wake()
			}
		} else {
			if rec, err := bus.DecodeLeaseRecord(e.Value()); err != nil {
				g.s.log.Warn("ignoring malformed lease", "key", e.Key(), "err", err)
				delete(g.view, e.Key())
			} else {
				g.view[e.Key()] = leaseEntry{rec: rec, rev: e.Revision(), written: e.Created()}
			}
		}
		g.mu.Unlock()
	}
}

// tick forgets partitions that stopped (releasing the leases of those handed over), then moves
// partitions towards this process's fair share. Each owned partition renews its own lease.
func (g *group) tick(ctx context.Context) {
	s := g.s
	for n, p := range g.owned {
		if !p.isDone() {
			continue
		}
		if p.released() {
			g.releaseLease(ctx, p)
		}
		// A lost lease may already be someone else's, so it is left alone.
		delete(g.owned, n)
	}
	if s.pauseRenew.Load() {
		g.updateGauge()
		return
	}

	now := time.Now()
	if silence, out := s.icSilence(now); out {
		if !s.icAway.Load() {
			g.giveUp(ctx, silence)
		}
		g.updateGauge()
		return
	}
	if s.icAway.Load() && !g.comeBack(ctx) {
		g.updateGauge()
		return
	}
	target := g.fairShare(ctx, now)
	active := g.active()
	if len(active) > target {
		// Hand over the surplus gracefully; the leases are renewed until the drain ends.
		sort.Ints(active)
		for _, n := range active[target:] {
			s.log.Debug("handing over partition", "partition", n, "fair_share", target)
			g.owned[n].stopGraceful(s.cfg.DrainTimeout)
		}
	} else if len(active) < target {
		g.acquire(ctx, now, target-len(active))
	}
	g.updateGauge()
}

func (g *group) active() []int {
	var out []int
	for n, p := range g.owned {
		if !p.isStopping() {
			out = append(out, n)
		}
	}
	return out
}

func (g *group) updateGauge() {
	n := len(g.owned)
	g.s.m.partitionsOwned.Set(float64(n))
	if n != g.reported {
		g.reported = n
		g.s.log.Info("partitions owned", "count", n, "of", g.h.Partitions)
	}
}

// fairShare is ceil(partitions / live submitters); stale liveness keys are cleaned up on the way.
func (g *group) fairShare(ctx context.Context, now time.Time) int {
	live := 1
	var stale []string
	var staleRevs []uint64
	g.mu.Lock()
	for k, e := range g.view {
		id, err := bus.ParseSubmitterLiveKey(k)
		if err != nil || id == g.s.cfg.ID {
			continue
		}
		if e.live(now, g.s.cfg.LeaseTTL) {
			live++
		} else if now.Sub(e.rec.Expiry(e.written, g.s.cfg.LeaseTTL, 0)) > 10*g.s.cfg.LeaseTTL {
			stale = append(stale, k)
			staleRevs = append(staleRevs, e.rev)
		}
	}
	g.mu.Unlock()
	for i, k := range stale {
		_ = g.h.Leases.Delete(ctx, k, jetstream.LastRevision(staleRevs[i]))
	}
	p := g.h.Partitions
	return (p + live - 1) / live
}

// acquire takes up to want free or expired partitions, scanning from a per-process offset so that
// processes starting together do not all race for the same partitions.
func (g *group) acquire(ctx context.Context, now time.Time, want int) {
	s := g.s
	total := g.h.Partitions
	h := fnv.New32a()
	h.Write([]byte(s.cfg.ID))
	off := int(h.Sum32() % uint32(total))
	for i := 0; i < total && want > 0 && ctx.Err() == nil; i++ {
		n := (off + i) % total
		if _, mine := g.owned[n]; mine {
			continue
		}
		key := bus.SubmitterLeaseKey(n)
		g.mu.Lock()
		e, exists := g.view[key]
		g.mu.Unlock()
		if exists && e.rec.Holder != s.cfg.ID && e.live(now, s.cfg.LeaseTTL) {
			continue
		}
		lease := g.newLease(key)
		if err := lease.TryAcquire(ctx); err != nil {
			// Someone else was quicker, or our view is behind; the next tick sees the new state.
			s.log.Debug("partition lease not acquired", "partition", n, "err", err)
			continue
		}
		prev := ""
		if exists {
			prev = e.rec.Holder
		}
		s.log.Debug("partition acquired", "partition", n, "previous_holder", prev)
		s.m.takeovers.Inc()
		p := newPartition(s, g.h, n, lease)
		g.owned[n] = p
		p.start()
		want--
	}
}

// releaseLease deletes the lease of a partition handed over, so its successor starts at once.
func (g *group) releaseLease(ctx context.Context, p *partition) {
	if err := p.lease.Release(ctx); err != nil && ctx.Err() == nil {
		g.s.log.Warn("release partition lease", "partition", p.n, "err", err)
		return
	}
	g.s.log.Debug("partition released", "partition", p.n)
}

// shutdown hands every partition over: stop taking envelopes, finish in-flight ones (the leases
// are renewed meanwhile), then delete the leases so successors start at once.
func (g *group) shutdown(ctx context.Context) {
	s := g.s
	s.log.Info("submitter stopping", "partitions", len(g.owned))
	g.reported = 0 // the stopping and stopped lines say the rest
	for _, p := range g.owned {
		p.stopGraceful(s.cfg.DrainTimeout)
	}
	for _, p := range g.owned {
		select {
		case <-p.done:
		case <-ctx.Done():
			g.crash()
			return
		}
	}
	for n, p := range g.owned {
		if p.released() {
			g.releaseLease(ctx, p)
		}
		delete(g.owned, n)
	}
	g.updateGauge()
	g.stopLive()
	if !s.icAway.Load() { // else withdrawn already
		if err := g.live.Release(ctx); err != nil {
			s.log.Warn("delete liveness lease", "err", err)
		}
	}
	s.log.Info("submitter stopped")
}

// crash stops every partition at once without acknowledging or releasing anything.
func (g *group) crash() {
	for _, p := range g.owned {
		p.lose("crash")
	}
	for n, p := range g.owned {
		<-p.done
		delete(g.owned, n)
	}
	g.updateGauge()
}
