package edge

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/protocol"
)

// Connection liveness without a goroutine or timer per connection: every connection sits in one
// of livenessSlots slots of a wheel, and one edge-wide goroutine per wheel visits one slot per
// tick, so each connection is looked at once per revolution (a quarter of the shortest liveness
// period that applies to it). Connections that asked for heartbeats are on a wheel of their own,
// which turns with the heartbeat interval; the others only need pings, so their wheel turns ten
// times slower at the defaults and an edge of idle connections does not visit every one of them
// four times a second. A visit reads a few timestamps and at most queues a ping or a heartbeat,
// or closes a dead connection; the frames go out through the connection's send queue, whose
// writer goroutine exists only while it writes.
//
// A connection is alive while its client sends anything: frames, pongs and pings stamp lastSeen.
// After PingInterval without anything the edge pings; PingTimeout after that ping without an
// answer the connection is closed (half-open TCP frees its session). While the reader is busy
// relaying an envelope it reads nothing, pongs included, so the connection is not judged then.
// Connections that asked for heartbeats (docs/RESUME.md §7) get an icws_heartbeat frame whenever
// nothing else was written to them for HeartbeatInterval.

// livenessSlots is the number of slots the connections are spread over.
const livenessSlots = 32

// readerBusy in conn.lastSeen: the reader is relaying and reads nothing, so silence says nothing.
const readerBusy = -1

// CloseUnresponsive: the client answered no ping within the ping timeout (docs/RESUME.md §2).
const CloseUnresponsive = protocol.CloseUnresponsive

const reasonUnresponsive = "icws: no answer to ping"

type liveness struct {
	// wheels[1] holds the connections that asked for heartbeats, wheels[0] the others.
	wheels [2]livenessWheel
	// heartbeat is the encoded heartbeat frame (the same bytes for every connection).
	heartbeat []byte
}

type livenessWheel struct {
	slots [livenessSlots]livenessSlot
	next  atomic.Uint32 // slot of the next connection added
}

type livenessSlot struct {
	mu    sync.Mutex
	conns map[*conn]struct{}
}

func newLiveness() (*liveness, error) {
	hb, err := protocol.Heartbeat{}.Encode()
	if err != nil {
		return nil, err
	}
	l := &liveness{heartbeat: hb}
	for w := range l.wheels {
		for i := range l.wheels[w].slots {
			l.wheels[w].slots[i].conns = map[*conn]struct{}{}
		}
	}
	return l, nil
}

// wheelOf is the wheel of c: whether it asked for heartbeats is fixed when it is accepted.
func (l *liveness) wheelOf(c *conn) *livenessWheel {
	if c.heartbeat {
		return &l.wheels[1]
	}
	return &l.wheels[0]
}

func (l *liveness) add(c *conn) {
	w := l.wheelOf(c)
	c.slot = int(w.next.Add(1) % livenessSlots)
	s := &w.slots[c.slot]
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (l *liveness) remove(c *conn) {
	s := &l.wheelOf(c).slots[c.slot]
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// livenessRevolution is how long the walk of a wheel takes to visit every connection on it once.
func (e *Edge) livenessRevolution(heartbeats bool) time.Duration {
	if heartbeats {
		return min(e.cfg.PingInterval, e.cfg.PingTimeout, e.cfg.HeartbeatInterval) / 4
	}
	return min(e.cfg.PingInterval, e.cfg.PingTimeout) / 4
}

// watchLiveness walks both wheels until ctx ends.
func (e *Edge) watchLiveness(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range e.live.wheels {
		wg.Go(func() { e.walkWheel(ctx, &e.live.wheels[i], e.livenessRevolution(i == 1)) })
	}
	wg.Wait()
}

// walkWheel visits one slot of w per tick, so every connection once per rev, until ctx ends.
func (e *Edge) walkWheel(ctx context.Context, w *livenessWheel, rev time.Duration) {
	t := time.NewTicker(max(rev/livenessSlots, time.Millisecond))
	defer t.Stop()
	var visit []*conn
	for i := 0; ; i = (i + 1) % livenessSlots {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := &w.slots[i]
		s.mu.Lock()
		visit = visit[:0]
		for c := range s.conns {
			visit = append(visit, c)
		}
		s.mu.Unlock()
		now := time.Now()
		for _, c := range visit {
			e.checkLiveness(c, now, rev)
		}
		clear(visit)
	}
}

// checkLiveness is one visit of one connection (the walking goroutine only: pingSentAt is its own).
func (e *Edge) checkLiveness(c *conn, now time.Time, rev time.Duration) {
	if !c.ready.Load() || c.isGone() {
		return
	}
	nowNs := now.UnixNano()
	if since := c.msgSince.Load(); since > 0 && time.Duration(nowNs-since) > e.cfg.MessageTimeout {
		// A message begun and never finished holds its bytes in memory while the client answers
		// pings: alive, but not sending what it started.
		e.m.refused.WithLabelValues("message_timeout").Inc()
		e.log.Debug("message not completed in time", "remote", c.remote, "for", time.Duration(nowNs-since))
		c.closeWith(websocket.ClosePolicyViolation, reasonMessageTimeout)
		return
	}
	if c.heartbeat {
		if idle := time.Duration(nowNs - c.lastSent.Load()); idle >= e.cfg.HeartbeatInterval-rev {
			if c.pushHeartbeat(e.live.heartbeat) {
				e.m.heartbeats.Inc()
			}
		}
	}
	seen := c.lastSeen.Load()
	if seen == readerBusy {
		c.pingSentAt = 0
		return
	}
	switch {
	case c.pingSentAt > seen:
		// A ping is out and nothing came back since.
		if time.Duration(nowNs-c.pingSentAt) >= e.cfg.PingTimeout {
			e.m.unresponsive.Inc()
			e.log.Debug("client answered no ping: closing", "remote", c.remote, "silent", time.Duration(nowNs-seen).Round(time.Millisecond))
			c.closeWith(CloseUnresponsive, reasonUnresponsive)
		}
	case time.Duration(nowNs-seen) >= e.cfg.PingInterval:
		if c.requestPing() {
			c.pingSentAt = nowNs
			e.m.pings.Inc()
		}
	}
}

// markSeen records that the client is alive (a frame, a pong or a ping arrived).
func (c *conn) markSeen() { c.lastSeen.Store(time.Now().UnixNano()) }

// markBusy records that the reader stops reading for a while (relaying an envelope).
func (c *conn) markBusy() { c.lastSeen.Store(readerBusy) }

// requestPing has the writer send a ping; false if the queue is stopped.
func (c *conn) requestPing() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.stopped {
		return false
	}
	c.pingDue = true
	c.startWriterLocked()
	return true
}

// pushHeartbeat queues a heartbeat frame unless the writer is busy (then a frame is on its way
// anyway) or the queue is stopped.
func (c *conn) pushHeartbeat(frame []byte) bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.stopped || c.writing || len(c.queue) > 0 {
		return false
	}
	c.enqueueLocked(frame)
	return true
}
