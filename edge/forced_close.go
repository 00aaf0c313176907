package edge

import (
	"context"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/nats-io/nats.go"
)

// Causes of icws_edge_forced_closes_total.
const (
	causeCanisterFailed = "canister_failed"
	causeBacklog        = "backlog"
)

// failureMemory is how long an edge remembers a canister failure to refuse resumes into the
// canister's sessions. The poller repeats its notice while the canister has sessions, and any
// edge closes a detached session on a repeat, so the records are gone long before this.
const failureMemory = 10 * time.Minute

// canisterFailure is a poller's declaration that a canister stopped answering ws_get_messages.
type canisterFailure struct {
	at     time.Time // when the poller declared it; sessions opened later are not concerned
	reason string    // the close reason
	noted  time.Time // when this edge last heard of it
}

// closeForced closes the socket and ends the session for good: teardown closes the session record
// (the close request goes out) instead of detaching it, so the session cannot be resumed.
func (c *conn) closeForced(code int, reason string) {
	c.cmu.Lock()
	c.forceClose = true
	c.cmu.Unlock()
	c.closeWith(code, reason)
}

// watchCanisterFailures handles the pollers' canister failure notices one at a time until ctx ends.
func (e *Edge) watchCanisterFailures(ctx context.Context, notices <-chan *nats.Msg) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-notices:
			canister, at, reason, err := bus.ParseCanisterFailed(m)
			if err != nil {
				e.log.Warn("ignoring a malformed canister failure notice", "err", err)
				continue
			}
			if ahead := time.Until(at); ahead > e.cfg.LeaseSkew {
				// Sessions opened before the failure are closed, and resumes refused for a
				// while: a time ahead of every clock would end sessions not yet opened.
				e.log.Warn("ignoring a canister failure notice from the future", "canister", canister, "ahead", ahead.Round(time.Millisecond))
				continue
			}
			e.closeFailedCanister(ctx, canister, at, reason)
		}
	}
}

// closeFailedCanister ends every session of canister that opened before the failure at: sockets on
// this edge are closed (1011) and their teardown closes the session; records without a socket are
// closed here, by compare-and-set, so when edges race exactly one finishes each. A session of this
// edge is acted on at once; a detached session of another edge (which may be dead) only on a
// repeated notice, which the poller sends only while sessions remain.
func (e *Edge) closeFailedCanister(ctx context.Context, canister string, at time.Time, reason string) {
	now := time.Now()
	e.fmu.Lock()
	prev, seen := e.failed[canister]
	repeat := seen && prev.at.Equal(at)
	e.failed[canister] = canisterFailure{at: at, reason: reason, noted: now}
	for id, f := range e.failed {
		if now.Sub(f.noted) > failureMemory {
			delete(e.failed, id)
		}
	}
	e.fmu.Unlock()

	var conns []*conn
	e.mu.RLock()
	for _, c := range e.byKey {
		if c.canText == canister && !c.openedAt.After(at) && !c.isGone() {
			conns = append(conns, c)
		}
	}
	e.mu.RUnlock()
	closing := make(map[string]bool, len(conns))
	for _, c := range conns {
		c.closeForced(websocket.CloseInternalServerErr, reason)
		closing[c.key] = true
		e.m.forcedCloses.WithLabelValues(causeCanisterFailed).Inc()
	}
	if !repeat || len(conns) > 0 {
		e.log.Warn("closing the sessions of a failed canister", "canister", canister, "failed_at", at, "sockets", len(conns), "reason", reason)
	}

	var keys []string
	e.index.each(func(key string, s sessionIndexEntry) bool {
		// A socket closed above has its record closed by its teardown.
		if s.canister == canister && !closing[key] && (s.state == bus.SessionOpen && s.edge == e.cfg.ID ||
			s.state == bus.SessionDetached && (s.edge == e.cfg.ID || repeat)) {
			keys = append(keys, key)
		}
		return true
	})
	for _, key := range keys {
		if ctx.Err() != nil {
			return
		}
		e.closeFailedRecord(ctx, key, at, reason, repeat)
	}
}

// closeFailedRecord closes the record of a session of a failed canister that has no socket here:
// detached, or open on this edge without a socket (a teardown that never reached NATS).
func (e *Edge) closeFailedRecord(ctx context.Context, key string, at time.Time, reason string, repeat bool) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.WriteTimeout)
	defer cancel()
	rec, rev, err := e.sessions.Get(ctx, key)
	if err != nil || rec == nil || rec.OpenedAt.After(at) {
		return
	}
	was := rec.State
	switch was {
	case bus.SessionOpen:
		if rec.Edge != e.cfg.ID || e.hasLocal(key) {
			return // its socket is closed by its edge
		}
	case bus.SessionDetached:
		if rec.Edge != e.cfg.ID && !repeat {
			return // its edge acts first
		}
	default:
		return
	}
	rec.State = bus.SessionClosed
	if rev, err = e.sessions.Put(ctx, rec, rev); err != nil {
		return // another edge, or a resume, changed it first
	}
	e.m.forcedCloses.WithLabelValues(causeCanisterFailed).Inc()
	e.log.Debug("session of a failed canister closed", "session", key, "was", was)
	e.finishSession(ctx, rec, rev, reason)
}

// canisterFailedFor returns the close reason when canister was declared failed after a session
// opened at openedAt (so the session is one the failure ends).
func (e *Edge) canisterFailedFor(canister string, openedAt time.Time) (string, bool) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	f, ok := e.failed[canister]
	if !ok || openedAt.After(f.at) {
		return "", false
	}
	return strings.TrimPrefix(f.reason, "icws: "), true
}

// onSessionClose handles a submitter's request to close a session whose client sends faster than
// the canister executes: the socket is closed (1008) and the session ended, not detached (the
// submitter dropped envelopes of it, so it could not continue in sequence).
func (e *Edge) onSessionClose(msg *nats.Msg) {
	key, tag, reason := bus.ParseSessionClose(msg)
	e.mu.RLock()
	c := e.byKey[key]
	e.mu.RUnlock()
	if c == nil || c.sessTag != tag || c.isGone() {
		return // another session of the key, or the socket is gone already
	}
	c.closeForced(websocket.ClosePolicyViolation, reason)
	e.m.forcedCloses.WithLabelValues(causeBacklog).Inc()
	e.log.Debug("session closed at the submitter's request", "session", key, "reason", reason)
}
