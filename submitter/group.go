package submitter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/broker"
)

// liveKeyPrefix marks the per-process liveness leases that size each process's fair share.
const liveKeyPrefix = "submitter.live."

// leaseWatchFilter covers partition leases and liveness leases; poller leases are elsewhere.
const leaseWatchFilter = "submitter.>"

type leaseEntry struct {
	rec LeaseRecord
	rev uint64
}

// LeaseRecord is broker.LeaseRecord; the alias keeps the lines short.
type LeaseRecord = broker.LeaseRecord

// group is one Run of a submitter: its view of the leases and the partitions it owns. Only the
// run goroutine touches owned.
type group struct {
	s     *Submitter
	h     *broker.Handles
	owned map[int]*partition

	mu   sync.Mutex
	view map[string]leaseEntry
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

	w, err := g.h.Leases.Watch(runCtx, leaseWatchFilter)
	if err != nil {
		return fmt.Errorf("submitter: watch leases: %w", err)
	}
	defer func() { _ = w.Stop() }()
	g.view = map[string]leaseEntry{}
	initial := make(chan struct{})
	go g.watch(w, initial)
	select {
	case <-initial:
	case <-ctx.Done():
		return nil
	case <-runCtx.Done():
		return nil
	}
	// A KV hiccup at start must not end the process (in `icws all` it would take every role down).
	for backoff := s.cfg.RetryMin; ; backoff = min(2*backoff, s.cfg.RetryMax) {
		err := g.renewLive(runCtx)
		if err == nil {
			break
		}
		s.log.Warn("announce liveness; retrying", "err", err, "in", backoff)
		if !sleepCtx(runCtx, jitter(backoff)) {
			return nil
		}
	}
	s.ready.Store(true)
	defer s.ready.Store(false)
	s.log.Info("submitter started", "partitions", g.h.Partitions)

	t := time.NewTicker(s.cfg.renewEvery())
	defer t.Stop()
	g.tick(runCtx)
	for {
		select {
		case <-t.C:
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
		} else {
			var rec LeaseRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				g.s.log.Warn("ignoring malformed lease", "key", e.Key(), "err", err)
				delete(g.view, e.Key())
			} else {
				g.view[e.Key()] = leaseEntry{rec: rec, rev: e.Revision()}
			}
		}
		g.mu.Unlock()
	}
}

func (g *group) liveKey() string { return liveKeyPrefix + g.s.cfg.ID }

func (g *group) record(now time.Time) []byte {
	b, _ := json.Marshal(LeaseRecord{Holder: g.s.cfg.ID, ExpiresAt: now.Add(g.s.cfg.LeaseTTL)})
	return b
}

func (g *group) renewLive(ctx context.Context) error {
	_, err := g.h.Leases.Put(ctx, g.liveKey(), g.record(time.Now()))
	return err
}

// tick renews what this process holds, then moves partitions towards its fair share.
func (g *group) tick(ctx context.Context) {
	s := g.s
	paused := s.pauseRenew.Load()
	if !paused {
		if err := g.renewLive(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("renew liveness lease", "err", err)
		}
	}
	var renewals sync.WaitGroup
	for n, p := range g.owned {
		switch {
		case p.isDone() && p.released():
			g.deleteLease(ctx, p)
			delete(g.owned, n)
		case p.isDone():
			// Lost: the lease may already be someone else's, so it is left alone.
			delete(g.owned, n)
		case !paused:
			// In parallel: one slow KV round trip must not let the other leases run out.
			renewals.Add(1)
			go func() {
				defer renewals.Done()
				g.renew(ctx, p)
			}()
		}
	}
	renewals.Wait()
	if paused {
		g.updateGauge()
		return
	}

	now := time.Now()
	target := g.fairShare(ctx, now)
	active := g.active()
	if len(active) > target {
		// Hand over the surplus gracefully; the leases are renewed until the drain ends.
		sort.Ints(active)
		for _, n := range active[target:] {
			s.log.Info("handing over partition", "partition", n, "fair_share", target)
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

func (g *group) updateGauge() { g.s.m.partitionsOwned.Set(float64(len(g.owned))) }

// fairShare is ceil(partitions / live submitters); stale liveness keys are cleaned up on the way.
func (g *group) fairShare(ctx context.Context, now time.Time) int {
	live := 1
	var stale []string
	var staleRevs []uint64
	g.mu.Lock()
	for k, e := range g.view {
		id, ok := strings.CutPrefix(k, liveKeyPrefix)
		if !ok || id == g.s.cfg.ID {
			continue
		}
		if now.Before(e.rec.ExpiresAt) {
			live++
		} else if now.Sub(e.rec.ExpiresAt) > 10*g.s.cfg.LeaseTTL {
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
		key := broker.SubmitterLeaseKey(n)
		g.mu.Lock()
		e, exists := g.view[key]
		g.mu.Unlock()
		if exists && e.rec.Holder != s.cfg.ID && now.Before(e.rec.ExpiresAt) {
			continue
		}
		t0 := time.Now()
		var rev uint64
		var err error
		if exists {
			rev, err = g.h.Leases.Update(ctx, key, g.record(t0), e.rev)
		} else {
			rev, err = g.h.Leases.Create(ctx, key, g.record(t0))
		}
		if err != nil {
			// Someone else was quicker, or our view is behind; the next tick sees the new state.
			s.log.Debug("partition lease not acquired", "partition", n, "err", err)
			continue
		}
		prev := ""
		if exists {
			prev = e.rec.Holder
		}
		s.log.Info("partition acquired", "partition", n, "previous_holder", prev)
		s.m.takeovers.Inc()
		p := newPartition(s, g.h, n, rev, t0.Add(s.cfg.LeaseTTL-s.cfg.safetyMargin()))
		g.owned[n] = p
		p.start()
		want--
	}
}

// renew extends a held lease by compare-and-set; a conflict means another process took it.
func (g *group) renew(ctx context.Context, p *partition) {
	t0 := time.Now()
	rev, err := g.h.Leases.Update(ctx, broker.SubmitterLeaseKey(p.n), g.record(t0), p.leaseRev())
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) {
			g.s.log.Warn("partition lease taken by another process", "partition", p.n, "err", err)
			p.lose("lease taken over")
			return
		}
		// Transient: the partition's watchdog stops it if the lease runs out before a renewal works.
		g.s.log.Warn("renew partition lease", "partition", p.n, "err", err)
		return
	}
	p.extend(rev, t0.Add(g.s.cfg.LeaseTTL-g.s.cfg.safetyMargin()))
}

func (g *group) deleteLease(ctx context.Context, p *partition) {
	if err := g.h.Leases.Delete(ctx, broker.SubmitterLeaseKey(p.n), jetstream.LastRevision(p.leaseRev())); err != nil && ctx.Err() == nil {
		g.s.log.Warn("release partition lease", "partition", p.n, "err", err)
		return
	}
	g.s.log.Info("partition released", "partition", p.n)
}

// shutdown hands every partition over: stop taking envelopes, finish in-flight ones (renewing the
// leases meanwhile), then delete the leases so successors start at once.
func (g *group) shutdown(ctx context.Context) {
	s := g.s
	s.log.Info("submitter stopping", "partitions", len(g.owned))
	for _, p := range g.owned {
		p.stopGraceful(s.cfg.DrainTimeout)
	}
	allDone := make(chan struct{})
	go func() {
		for _, p := range g.owned {
			<-p.done
		}
		close(allDone)
	}()
	t := time.NewTicker(s.cfg.renewEvery())
	defer t.Stop()
wait:
	for {
		select {
		case <-allDone:
			break wait
		case <-t.C:
			for _, p := range g.owned {
				if !p.isDone() {
					g.renew(ctx, p)
				}
			}
		case <-ctx.Done():
			g.crash()
			return
		}
	}
	for n, p := range g.owned {
		if p.released() {
			g.deleteLease(ctx, p)
		}
		delete(g.owned, n)
	}
	g.updateGauge()
	if err := g.h.Leases.Delete(ctx, g.liveKey()); err != nil {
		s.log.Warn("delete liveness lease", "err", err)
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
