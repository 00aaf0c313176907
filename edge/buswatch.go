package edge

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/protocol"
)

// An edge that cannot reach NATS cannot deliver anything: live messages, relays, resumes and its
// lease all go through it. Rather than hold sockets that receive nothing, the edge sheds its clients
// (resumable ones with 4103, "resume elsewhere") and refuses new ones with 1013 until NATS answers
// again. Two signals, both kept here:
//   - contact: the NATS server answered a round trip (a flush), probed several times a second;
//   - renewal: the edge's liveness lease was renewed (JetStream works end to end), recorded by the
//     lease loop through leaseRenewed.
//
// Lost contact first makes the edge try another NATS server (after a quarter of NATSTimeout, well
// before nats.go's own ping would notice a hung server); still no contact after NATSTimeout, it
// sheds. Renewals failing while the server answers is what a server cut off from its cluster looks
// like (the process's bus.ClusterWatch moves the connection to another server), and also what every
// edge sees during a JetStream leader election (4-9 s): after twice JetStreamTimeout it sheds.

// CloseResumeElsewhere tells a resumable client to resume at once on another edge (docs/RESUME.md §2).
const CloseResumeElsewhere = protocol.CloseResumeElsewhere

const (
	reasonResumeElsewhere = "icws: edge lost its message bus, resume elsewhere"
	reasonBusLost         = "icws: gateway unavailable (no message bus)"
	reasonBusLostRetry    = "icws: gateway unavailable (no message bus), try again later"
)

// busWatch is the edge's view of its message bus.
type busWatch struct {
	lastContact atomic.Int64 // unix ns: the NATS server last answered a round trip
	lastRenewal atomic.Int64 // unix ns: the edge's lease was last renewed
	lost        atomic.Bool  // clients shed, new connections refused
}

// leaseRenewed is the lease loop's report of a successful renewal.
func (e *Edge) leaseRenewed() { e.bus.lastRenewal.Store(time.Now().UnixNano()) }

// busLost reports whether the edge currently refuses connections for lack of NATS.
func (e *Edge) busLost() bool { return e.bus.lost.Load() }

// watchBus probes the NATS server and sheds or recovers until ctx ends.
func (e *Edge) watchBus(ctx context.Context) {
	now := time.Now().UnixNano()
	e.bus.lastContact.Store(now)
	if e.bus.lastRenewal.Load() == 0 {
		e.bus.lastRenewal.Store(now)
	}
	probeTimeout := e.cfg.NATSTimeout / 4
	t := time.NewTicker(e.cfg.NATSTimeout / 10)
	defer t.Stop()
	var (
		forcedFor   int64 // lastContact when a reconnect was last forced for lost contact
		lostAt      int64
		wasHealthy  = true
		silentSince time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := e.nc.FlushWithContext(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		if err == nil {
			e.bus.lastContact.Store(now.UnixNano())
		}
		contact := e.bus.lastContact.Load()
		silent := now.Sub(time.Unix(0, contact))
		jsSilent := now.Sub(time.Unix(0, e.bus.lastRenewal.Load()))
		if healthy := silent < probeTimeout; healthy != wasHealthy {
			wasHealthy = healthy
			if !healthy {
				silentSince = now
				e.log.Warn("NATS server not answering", "err", err, "status", e.nc.Status().String())
			} else {
				e.log.Info("NATS server answering again", "after", now.Sub(silentSince).Round(time.Millisecond))
			}
		}
		switch {
		case e.busLost():
			if silent < probeTimeout && e.bus.lastRenewal.Load() > lostAt {
				e.bus.lost.Store(false)
				e.m.busLost.Set(0)
				e.log.Info("NATS and JetStream reachable again: accepting connections", "lost_for", time.Duration(now.UnixNano()-lostAt).Round(time.Millisecond))
			}
		case silent >= e.cfg.NATSTimeout:
			lostAt = now.UnixNano()
			e.shed("nats", silent)
		case jsSilent >= 2*e.cfg.JetStreamTimeout:
			lostAt = now.UnixNano()
			e.shed("jetstream", jsSilent)
		}
		if silent >= probeTimeout && forcedFor != contact {
			// A hung or unreachable server: try the others now rather than after nats.go's pings.
			forcedFor = contact
			e.log.Warn("NATS server silent: reconnecting to another server", "silent", silent.Round(time.Millisecond))
			_ = e.nc.ForceReconnect()
		}
	}
}

// shed closes every client connection because the edge cannot reach its message bus, and refuses
// new ones until it can. Resumable connections get 4103 (their sessions stay intact and are resumed
// elsewhere: the lease lapses, or the resume takes them over); standard sessions end with 1011 and
// are closed by whichever edge can reach NATS once this edge's lease has expired.
func (e *Edge) shed(why string, silent time.Duration) {
	e.bus.lost.Store(true)
	e.m.busLost.Set(1)
	e.m.sheds.WithLabelValues(why).Inc()
	e.mu.RLock()
	conns := make([]*conn, 0, len(e.conns))
	for c := range e.conns {
		conns = append(conns, c)
	}
	e.mu.RUnlock()
	e.log.Warn("lost the message bus: shedding clients, refusing new ones until it is back", "why", why, "for", silent.Round(time.Millisecond), "connections", len(conns))
	for _, c := range conns {
		if c.resumeOpt {
			c.closeWith(CloseResumeElsewhere, reasonResumeElsewhere)
		} else {
			c.closeWith(websocket.CloseInternalServerErr, reasonBusLost)
		}
	}
}
