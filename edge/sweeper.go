package edge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/icws/icws/bus"
	"github.com/nats-io/nats.go/jetstream"
)

// acquireLease takes this edge's liveness lease. An unexpired lease held under the same id by
// another process means two edges share an id: refuse to start.
func (e *Edge) acquireLease(ctx context.Context) (*bus.Lease, error) {
	l := bus.NewLease(e.h.Leases, bus.LeaseConfig{
		Key:               bus.EdgeLeaseKey(e.cfg.ID),
		Holder:            e.cfg.ID,
		TTL:               e.cfg.LeaseTTL,
		Skew:              e.cfg.LeaseSkew,
		SameHolderIsRival: true,
		Logger:            e.log,
		OnRenewed: func() {
			e.leaseRenewed() // the bus watch's proof that JetStream works for this edge
			e.cluster.LeaseWritten()
		},
		OnError: e.cluster.LeaseFailed,
	})
	// A bucket that was just created may have no leader for a few seconds (no responders, time-outs):
	// wait for it. A lease another process holds under our id is a configuration error.
	backoff := 200 * time.Millisecond
	for waited := false; ; {
		err := l.TryAcquire(ctx)
		var held *bus.HeldError
		switch {
		case err == nil:
			return l, nil
		case errors.As(err, &held) && held.Holder != "":
			return nil, fmt.Errorf("edge: lease %s is held until %s: is ICWS_EDGE_ID %q used by another edge?", l.Key(), held.Until.Format(time.RFC3339), e.cfg.ID)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("edge: %w", err)
		}
		if !waited {
			waited = true
			e.log.Info("waiting for the leases bucket", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("edge: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// renewLease keeps the liveness lease alive until ctx ends. A lost lease (NATS unreachable for
// longer than its TTL, or the key lost) is taken back as soon as it is free again.
func (e *Edge) renewLease(ctx context.Context, l *bus.Lease) {
	for {
		err := l.KeepAlive(ctx)
		if ctx.Err() != nil {
			return
		}
		e.log.Warn("edge lease lost; taking it back", "err", err)
		if l.Acquire(ctx) != nil {
			return
		}
	}
}

// sweep periodically acts on the sessions that need it: detached sessions past their grace,
// sessions of edges whose lease expired, and closed sessions whose close request still has to be
// published. Every action is a compare-and-set on the session record, so when several edges race,
// exactly one acts. The index it works from is kept by watchSessions, on a goroutine of its own: a
// long sweep (a flood of dropped sessions) must not leave the watcher's updates unread.
func (e *Edge) sweep(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.watchSessions(ctx) }()
	defer wg.Wait()
	orphans := map[string]time.Time{}
	t := time.NewTicker(e.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.sweepOnce(ctx, orphans)
			e.checkDrops()
		}
	}
}

// watchSessions keeps the session index from one KV watcher of the sessions bucket; when the
// watcher ends it is started again a sweep interval later, and the index rebuilt.
func (e *Edge) watchSessions(ctx context.Context) {
	retry := time.NewTicker(e.cfg.SweepInterval)
	defer retry.Stop()
	for {
		e.index.reset()
		w, err := e.h.Sessions.WatchAll(ctx)
		if err != nil {
			e.log.Warn("watch sessions", "err", err)
		} else {
			e.indexUpdates(ctx, w.Updates())
			_ = w.Stop()
		}
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
		}
	}
}

// indexUpdates applies a watcher's updates to the index until the watcher or ctx ends.
func (e *Edge) indexUpdates(ctx context.Context, updates <-chan jetstream.KeyValueEntry) {
	for {
		select {
		case <-ctx.Done():
			return
		case ent, ok := <-updates:
			if !ok {
				return
			}
			if ent == nil {
				continue // initial values done
			}
			if ent.Operation() != jetstream.KeyValuePut {
				e.index.remove(ent.Key())
				continue
			}
			rec, err := bus.DecodeSessionRecord(ent.Key(), ent.Value())
			if err != nil {
				// The sweeper deletes it: nothing else would, and its key stays unusable.
				e.index.put(ent.Key(), sessionIndexEntry{state: stateCorrupt})
				continue
			}
			e.index.put(ent.Key(), indexEntryOf(rec))
		}
	}
}

// orphanAfter is how long a session record may claim this edge without a local socket before the
// sweeper treats it as dropped (a teardown that could not reach NATS). It is far longer than the
// gap between creating or re-binding a record and registering its socket.
func (e *Edge) orphanAfter() time.Duration { return e.cfg.LeaseTTL + 2*e.cfg.WriteTimeout }

func (e *Edge) hasLocal(key string) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.byKey[key] != nil
}

// holdsSocket reports whether this edge still serves the session of rec on a live socket: the
// connection bound to key is not closing and is the one the record names (same token hash).
func (e *Edge) holdsSocket(key string, rec *bus.SessionRecord) bool {
	e.mu.RLock()
	c := e.byKey[key]
	e.mu.RUnlock()
	return c != nil && rec.Edge == e.cfg.ID && c.tokenHash == rec.TokenHash && !c.isGone()
}

func (e *Edge) sweepOnce(ctx context.Context, orphans map[string]time.Time) {
	now := time.Now()
	alive := map[string]bool{e.cfg.ID: true}
	edgeAlive := func(id string) bool {
		if v, ok := alive[id]; ok {
			return v
		}
		v := false
		if ent, err := e.h.Leases.Get(ctx, bus.EdgeLeaseKey(id)); err == nil {
			l, err := bus.DecodeLeaseRecord(ent.Value())
			v = err == nil && l.Live(now, ent.Created(), e.cfg.LeaseTTL, e.cfg.LeaseSkew)
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			v = true // cannot tell: do not act on its sessions
		}
		alive[id] = v
		return v
	}
	for key := range orphans {
		if s, ok := e.index.get(key); !ok || s.state != bus.SessionOpen || s.edge != e.cfg.ID {
			delete(orphans, key)
		}
	}
	// Candidates are picked under the index's lock; lease look-ups and record changes happen after.
	// The sessions this edge serves, almost all of its own, are passed over here: every second the
	// sweep visits the deployment's whole index, and collecting them would cost an allocation per
	// session. Lock order: Edge.mu, then the index's (no one takes them the other way round).
	type candidate struct {
		key string
		s   sessionIndexEntry
	}
	var cands []candidate
	e.mu.RLock()
	e.index.each(func(key string, s sessionIndexEntry) bool {
		local := s.edge == e.cfg.ID && e.byKey[key] != nil
		switch s.state {
		case bus.SessionDetached:
			if now.Sub(s.detachedAt) < e.cfg.ResumeGrace && !local {
				return true
			}
		case bus.SessionOpen:
			if local {
				delete(orphans, key)
				return true
			}
		case bus.SessionClosed, stateCorrupt:
		default:
			return true
		}
		cands = append(cands, candidate{key, s})
		return true
	})
	e.mu.RUnlock()
	// Closed sessions first, then detached ones by how long they have waited: under a flood of
	// dropped sessions the oldest must not wait behind newer ones for many sweeps.
	slices.SortFunc(cands, func(a, b candidate) int {
		return a.s.detachedAt.Compare(b.s.detachedAt)
	})
	// Each candidate takes a few NATS round trips; they run SweepConcurrency at once, and the sweep
	// ends when all have.
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, e.cfg.SweepConcurrency)
	budget := e.cfg.SweepBatch
	for _, cd := range cands {
		if budget == 0 || ctx.Err() != nil {
			return
		}
		key, s := cd.key, cd.s
		mine := s.edge == e.cfg.ID
		switch s.state {
		case bus.SessionDetached:
			if mine && e.hasLocal(key) {
				break // detached by another edge while our lease had lapsed: sweepSession reclaims it
			}
			if !(mine || !edgeAlive(s.edge)) {
				continue
			}
		case bus.SessionClosed:
			if !mine && edgeAlive(s.edge) {
				continue
			}
		case bus.SessionOpen:
			if mine {
				if e.hasLocal(key) {
					delete(orphans, key)
					continue
				}
				since, seen := orphans[key]
				if !seen {
					orphans[key] = now
					continue
				}
				if now.Sub(since) < e.orphanAfter() {
					continue
				}
				delete(orphans, key)
			} else if edgeAlive(s.edge) {
				continue
			}
		}
		budget--
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			e.sweepSession(ctx, key)
		}()
	}
}

// sweepSession re-reads one record and moves it one step: open (dead edge) → detached or closed,
// detached past grace → closed, closed → close request published and record deleted.
func (e *Edge) sweepSession(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.WriteTimeout)
	defer cancel()
	rec, rev, err := e.sessions.Get(ctx, key)
	if errors.Is(err, bus.ErrCorruptSessionRecord) {
		// No session can use its key while it stays, and no role acts on it.
		if derr := e.sessions.Delete(ctx, key, rev); derr == nil {
			e.m.sweeps.WithLabelValues("deleted_corrupt").Inc()
			e.log.Warn("deleted a corrupt session record", "err", err)
		}
		return
	}
	if err != nil || rec == nil {
		return
	}
	now := time.Now()
	switch rec.State {
	case bus.SessionOpen:
		if rec.Edge == e.cfg.ID && e.hasLocal(key) {
			return
		}
		if rec.Resumable {
			rec.State, rec.DetachedAt = bus.SessionDetached, now
			if _, err := e.sessions.Put(ctx, rec, rev); err == nil {
				e.m.sweeps.WithLabelValues("detached_dead_edge").Inc()
				e.log.Debug("session detached: its edge is gone", "session", key, "dead_edge", rec.Edge)
			}
			return
		}
		rec.State = bus.SessionClosed
		if rev, err = e.sessions.Put(ctx, rec, rev); err != nil {
			return
		}
		e.m.sweeps.WithLabelValues("closed_dead_edge").Inc()
		e.finishSession(ctx, rec, rev, "edge gone")
	case bus.SessionDetached:
		if e.holdsSocket(key, rec) {
			// Another edge detached it while our lease had lapsed (NATS blip), but the socket is
			// still here and relaying: the session is open, not to be closed.
			rec.State, rec.DetachedAt = bus.SessionOpen, time.Time{}
			if _, err := e.sessions.Put(ctx, rec, rev); err == nil {
				e.m.sweeps.WithLabelValues("reclaimed").Inc()
				e.log.Debug("session reclaimed: its socket is still here", "session", key)
			}
			return
		}
		if now.Sub(rec.DetachedAt) < e.cfg.ResumeGrace {
			return
		}
		rec.State = bus.SessionClosed
		if rev, err = e.sessions.Put(ctx, rec, rev); err != nil {
			return
		}
		e.m.sweeps.WithLabelValues("expired").Inc()
		e.log.Debug("session closed: resume grace over", "session", key)
		e.finishSession(ctx, rec, rev, "resume grace over")
	case bus.SessionClosed:
		e.m.sweeps.WithLabelValues("finished").Inc()
		e.finishSession(ctx, rec, rev, "session closed")
	}
}

// finishSession ends a session already marked closed: close request published, record deleted.
// If publishing fails the record stays closed and a later sweep retries; the close request is
// de-duplicated by its Nats-Msg-Id.
func (e *Edge) finishSession(ctx context.Context, rec *bus.SessionRecord, rev uint64, reason string) {
	if err := e.sessions.Finish(ctx, rec, rev, reason); err != nil {
		e.log.Debug("finish session", "session", rec.Key(), "err", err)
	}
}
