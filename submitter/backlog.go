package submitter

// Chatty clients. A client's envelopes are relayed one at a time (the canister closes a client on
// any sequence gap), so a client that sends faster than the canister executes builds a backlog
// here, and an envelope still queued at its ingress_expiry can no longer be relayed: the canister
// would see a gap and close the client with WrongSequenceNumber, later and without saying why.
// The submitter predicts that from the client's backlog and the canister's recent update latency
// and closes the client at once instead: it asks the session's edge to close the socket, drops the
// session's remaining envelopes and lets the close request of the edge's teardown through.

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icws/icws/bus"
)

// queued is one ICWS_IN message waiting in a client's queue.
type queued struct {
	msg  jetstream.Msg
	kind string
	// expiry is the envelope's ingress_expiry; zero when unreadable (the relay drops it anyway).
	expiry time.Time
	// storedAt is when ICWS_IN stored the message.
	storedAt time.Time
}

func newQueued(msg jetstream.Msg, md *jetstream.MsgMetadata) queued {
	q := queued{msg: msg, kind: msg.Headers().Get(bus.HeaderKind), storedAt: md.Timestamp}
	if q.kind == bus.KindOpen || q.kind == bus.KindMessage {
		q.expiry, _ = ingressExpiry(msg.Data())
	}
	return q
}

// paceWindow is the time constant of the moving average of update latency: the estimate follows
// what calls took over about the last ten seconds. It is averaged over time, not over calls,
// because the calls of every client queued behind an outage end together: counted one by one they
// would make the canister look as slow as the outage for a long while, and condemn every client.
const paceWindow = 10 * time.Second

// paceOutlier bounds one sample to this multiple of the estimate: the first call answered after an
// outage, which has the whole gap since the previous answer to weigh with, says little about the
// pace. A real slow-down still lifts the estimate within a few calls.
const paceOutlier = 4

// paceIdle is how long an unused canister's latency estimate is kept.
const paceIdle = 10 * time.Minute

// paceEstimator keeps, per canister, a moving average of how long the IC takes to answer one
// relayed envelope: the pace at which a client's queue drains. Only answered calls count (a
// retried outage says nothing about the pace once the IC answers again).
type paceEstimator struct {
	mu        sync.Mutex
	byCan     map[string]*paceEstimate
	lastPrune time.Time
}

type paceEstimate struct {
	avg  time.Duration
	seen time.Time
}

func newPaceEstimator() *paceEstimator { return &paceEstimator{byCan: map[string]*paceEstimate{}} }

func (e *paceEstimator) observe(canister string, d time.Duration, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Sub(e.lastPrune) > time.Minute {
		e.lastPrune = now
		for c, est := range e.byCan {
			if now.Sub(est.seen) > paceIdle {
				delete(e.byCan, c)
			}
		}
	}
	est := e.byCan[canister]
	if est == nil {
		e.byCan[canister] = &paceEstimate{avg: d, seen: now}
		return
	}
	d = min(d, paceOutlier*est.avg)
	weight := 1 - math.Exp(-float64(now.Sub(est.seen))/float64(paceWindow))
	est.avg = time.Duration(weight*float64(d) + (1-weight)*float64(est.avg))
	est.seen = now
}

// pace is the canister's current estimate; false before any answered call.
func (e *paceEstimator) pace(canister string) (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	est := e.byCan[canister]
	if est == nil {
		return 0, false
	}
	return est.avg, true
}

// doomed is a queued envelope predicted to start after its ingress_expiry.
type doomed struct {
	queued int           // envelopes of the client waiting, including the one in flight
	start  time.Duration // predicted wait before it is relayed
	left   time.Duration // time until its ingress_expiry
}

// firstDoomed finds the first queued ws_message envelope that, relayed one after another at pace
// behind ahead (what the envelope in flight still needs), would start after its ingress_expiry. Only
// envelopes that wait behind another of the client count: one that expires with nothing ahead of
// it is late for another reason (the client's clock, a stalled gateway), not a backlog. from is the
// first index to look at.
func firstDoomed(msgs []queued, from int, now time.Time, inFlight bool, ahead, pace time.Duration) (doomed, bool) {
	busy := 0
	if inFlight {
		busy = 1
	}
	for i := from; i < len(msgs); i++ {
		m := msgs[i]
		if m.kind != bus.KindMessage || m.expiry.IsZero() || (i == 0 && !inFlight) {
			continue
		}
		wait := ahead + time.Duration(i)*pace
		if !now.Add(wait).Before(m.expiry) {
			return doomed{queued: len(msgs) + busy, start: wait, left: m.expiry.Sub(now)}, true
		}
	}
	return doomed{}, false
}

// reason is the close reason the client gets; the wait is rounded up and the expiry down, so
// the two never read as equal.
func (d doomed) reason() string {
	unit := time.Second
	if d.start < 10*time.Second {
		unit = 100 * time.Millisecond
	}
	need := (d.start + unit - 1).Truncate(unit)
	left := max(d.left, 0).Truncate(unit)
	return fmt.Sprintf("icws: client sends faster than the canister executes (%d queued, turn in %s, expires in %s)",
		d.queued, need, left)
}

// condemnation is a session the submitter gave up on: its ws_message envelopes are dropped until
// its close request (or a new session's open) arrives.
type condemnation struct {
	reason   string
	since    time.Time
	notified time.Time
}

// condemnationMemory bounds how long a condemnation is kept without its close request arriving:
// longer than ICWS_IN keeps messages by default, so nothing of the session can still come.
const condemnationMemory = 15 * time.Minute

// closeRequestRepeat is how often a dropped envelope repeats the close request to the edge (a lost
// request, or an edge that was not reachable).
const closeRequestRepeat = 2 * time.Second

// checkBacklogLocked condemns the client when an envelope of its queue from index from on would
// expire before its turn. Callers hold p.mu.
func (p *partition) checkBacklogLocked(client string, q *clientQueue, from int, now time.Time) {
	if _, already := p.condemned[client]; already {
		return
	}
	pace, known := p.s.pace.pace(q.canister)
	if !known {
		return
	}
	var ahead time.Duration
	inFlight := !q.inFlightSince.IsZero()
	if inFlight {
		ahead = max(pace-now.Sub(q.inFlightSince), 0)
	}
	d, ok := firstDoomed(q.msgs, from, now, inFlight, ahead, pace)
	if !ok {
		return
	}
	for c, cd := range p.condemned {
		if now.Sub(cd.since) > condemnationMemory {
			delete(p.condemned, c)
		}
	}
	cd := &condemnation{reason: d.reason(), since: now, notified: now}
	p.condemned[client] = cd
	p.s.m.backlogCloses.Inc()
	p.s.clientWarnings.Warn(p.s.log, "backlog", "closing a client that sends faster than the canister executes; dropping its queued envelopes",
		"partition", p.n, "client", client, "queued", d.queued, "pace", pace, "need", d.start, "expires_in", d.left)
	tag := ""
	for _, m := range q.msgs {
		if m.kind == bus.KindMessage {
			tag, _ = bus.SessionTagOfMsgID(m.msg.Headers().Get(bus.HeaderMsgID))
			break
		}
	}
	p.requestCloseLocked(q, cd, tag)
}

// requestCloseLocked starts the close request of a condemned session (tag: its session tag, empty
// if unknown) off the partition lock. Callers hold p.mu and the partition cannot have finished
// (onMsg checks closed; a worker keeps run waiting).
func (p *partition) requestCloseLocked(q *clientQueue, cd *condemnation, tag string) {
	p.workers.Add(1)
	go p.requestClose(q.canister, q.client, tag, cd.reason)
}

// requestClose asks the session's edge to close the client's socket; the edge's teardown then
// publishes the close request. A detached session has no socket: its record is closed here.
func (p *partition) requestClose(canister, client, tag, reason string) {
	defer p.workers.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.s.cfg.CallTimeout)
	defer cancel()
	key := bus.SessionKey(canister, client)
	log := p.s.log.With("partition", p.n, "session", key)
	rec, rev, err := p.s.sessions.Get(ctx, key)
	switch {
	case err != nil:
		log.Warn("close request for a client with a backlog: read its session; repeated with its next envelope", "err", err)
		return
	case rec == nil || rec.State == bus.SessionClosed || (tag != "" && rec.Tag() != tag):
		return // the session is ending already, or the key has a newer session
	case rec.State == bus.SessionDetached:
		// Marked closed, the session is finished by the sweeper of the edge it names (close
		// request behind the client's envelopes, record deleted), as every closed session is.
		rec.State = bus.SessionClosed
		if _, err = p.s.sessions.Put(ctx, rec, rev); err != nil {
			log.Debug("close the detached session of a client with a backlog: resumed meanwhile; its next envelope asks its new edge", "err", err)
		}
		return
	}
	if err := p.s.nc.PublishMsg(bus.SessionCloseMsg(rec.Edge, key, rec.Tag(), reason)); err != nil {
		log.Debug("close request to the edge not sent; repeated with the client's next envelope", "err", err)
	}
}

// dropCondemned acks a ws_message envelope of a condemned session without relaying it.
func (p *partition) dropCondemned(m queued) {
	p.s.count(bus.KindMessage, outcomeBacklogDropped)
	if err := m.msg.Ack(); err != nil {
		p.s.log.Debug("ack", "partition", p.n, "err", err)
	}
}

// backlogStats are the largest backlog of a client (queued and in flight) and the age of the oldest
// queued envelope over every partition of this process.
func (s *Submitter) backlogStats(now time.Time) (largest int, oldest time.Duration) {
	s.pmu.Lock()
	parts := make([]*partition, 0, len(s.parts))
	for p := range s.parts {
		parts = append(parts, p)
	}
	s.pmu.Unlock()
	for _, p := range parts {
		p.mu.Lock()
		for _, q := range p.clients {
			n := len(q.msgs)
			if !q.inFlightSince.IsZero() {
				n++
			}
			largest = max(largest, n)
			if len(q.msgs) > 0 && !q.msgs[0].storedAt.IsZero() {
				oldest = max(oldest, now.Sub(q.msgs[0].storedAt))
			}
		}
		p.mu.Unlock()
	}
	return largest, oldest
}

// backlogCollector exports backlogStats at scrape time. Per-client gauges would be one series per
// client — 20,000 and more on a busy gateway, each gone when its client leaves — more than a
// Prometheus server should hold; the largest backlog, the oldest envelope's age and the histogram
// of backlogs (icws_submitter_client_backlog) say whether clients fall behind and how many, and the
// log line of each close names the client.
type backlogCollector struct {
	s       *Submitter
	largest *prometheus.Desc
	oldest  *prometheus.Desc
}

func newBacklogCollector(s *Submitter) *backlogCollector {
	return &backlogCollector{
		s: s,
		largest: prometheus.NewDesc("icws_submitter_client_backlog_max",
			"Largest number of envelopes one client has waiting in this process (queued and in flight).", nil, nil),
		oldest: prometheus.NewDesc("icws_submitter_oldest_queued_seconds",
			"Age of the oldest envelope waiting in a client queue of this process (since ICWS_IN stored it).", nil, nil),
	}
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.largest
	ch <- c.oldest
}

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	largest, oldest := c.s.backlogStats(time.Now())
	ch <- prometheus.MustNewConstMetric(c.largest, prometheus.GaugeValue, float64(largest))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, oldest.Seconds())
}
