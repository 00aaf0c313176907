package submitter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
)

// consumerPrefix names a partition's consumers; each owner creates its own, suffixed with its lease
// revision, so pull requests of a previous owner can never take messages from the new consumer.
func consumerPrefix(n int) string { return "submit-p" + strconv.Itoa(n) + "-" }

// partition is one owned ICWS_IN partition: a consumer reading it in stream order and one worker
// per client that has envelopes waiting.
type partition struct {
	s *Submitter
	h *bus.Handles
	n int

	ctx    context.Context // ends when the partition must stop at once
	cancel context.CancelFunc

	// lease is the partition's lease; while it is not Valid it may be someone else's.
	lease *bus.Lease

	stopping  atomic.Bool   // no new envelopes are started
	stopCh    chan struct{} // closed with stopping
	stopChOne sync.Once
	graceful  atomic.Bool // stopped by hand-over or shutdown, not by losing the lease
	abandoned atomic.Bool // stopped at once while the lease was ours (the IC does not answer)
	stopOnce  sync.Once
	drainDone chan struct{}

	mu      sync.Mutex
	closed  bool // no more workers may start: run is waiting for them
	clients map[string]*clientQueue
	// condemned are sessions closed for their backlog, by client (see backlog.go).
	condemned map[string]*condemnation
	pending   map[uint64]struct{} // stream sequences held, to ignore redeliveries
	// lastDelivery is the consumer sequence of the last delivery received: a jump means a delivery
	// was lost in flight (a dropped NATS connection), so a client's later envelope could overtake it.
	lastDelivery uint64
	workers      sync.WaitGroup

	done chan struct{} // closed when nothing of the partition runs any more
}

type clientQueue struct {
	canister, client string // subject tokens
	msgs             []queued
	// inFlightSince is when the envelope being relayed started; zero when none is.
	inFlightSince time.Time
}

func newPartition(s *Submitter, h *bus.Handles, n int, lease *bus.Lease) *partition {
	ctx, cancel := context.WithCancel(context.Background())
	p := &partition{
		s: s, h: h, n: n, ctx: ctx, cancel: cancel, lease: lease,
		drainDone: make(chan struct{}),
		stopCh:    make(chan struct{}),
		clients:   map[string]*clientQueue{},
		condemned: map[string]*condemnation{},
		pending:   map[uint64]struct{}{},
		done:      make(chan struct{}),
	}
	return p
}

// valid reports whether the lease is certainly still ours.
func (p *partition) valid() bool { return p.lease.Valid() }

func (p *partition) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *partition) isStopping() bool { return p.stopping.Load() }

// released reports whether the lease is ours to delete once the partition is done: it was handed
// over or abandoned, not lost.
func (p *partition) released() bool { return p.graceful.Load() || p.abandoned.Load() }

// abandon stops the partition at once, as lose does, while its lease is still ours: the caller
// deletes the lease once the partition is done, so the next owner starts at once.
func (p *partition) abandon() {
	p.abandoned.Store(true)
	p.setStopping()
	p.cancel()
}

// lose stops the partition at once: in-flight calls are abandoned and nothing more is acked. The
// next owner starts again from the consumer's ack floor.
func (p *partition) lose(reason string) {
	if p.ctx.Err() == nil && !p.graceful.Load() {
		p.s.log.Warn("stopped working on partition", "partition", p.n, "reason", reason)
		if reason != "crash" {
			p.s.m.leasesLost.Inc()
		}
	}
	p.setStopping()
	p.cancel()
}

func (p *partition) setStopping() {
	p.stopping.Store(true)
	p.stopChOne.Do(func() { close(p.stopCh) })
}

// stopGraceful stops taking envelopes, lets in-flight ones finish, and after timeout abandons them.
func (p *partition) stopGraceful(timeout time.Duration) {
	p.stopOnce.Do(func() {
		if p.ctx.Err() == nil {
			p.graceful.Store(true)
		}
		p.setStopping()
		go func() {
			t := time.NewTimer(timeout)
			defer t.Stop()
			select {
			case <-p.drainDone:
			case <-t.C:
				p.s.log.Warn("drain timed out, abandoning in-flight envelopes", "partition", p.n)
				p.cancel()
			case <-p.ctx.Done():
			}
		}()
	})
}

func (p *partition) start() { go p.run() }

func (p *partition) run() {
	defer close(p.done)
	defer p.cancel()
	// The lease is renewed until nothing of the partition runs any more, a graceful drain
	// included; losing it stops the partition at once.
	keepCtx, stopKeep := context.WithCancel(context.Background())
	var keep sync.WaitGroup
	keep.Go(func() { _ = p.lease.KeepAlive(keepCtx) })
	keep.Go(func() {
		select {
		case <-p.lease.Done():
			p.lose(lossReason(p.lease.Err()))
		case <-keepCtx.Done():
		}
	})
	defer func() { stopKeep(); keep.Wait() }()
	p.s.track(p, true)
	defer p.s.track(p, false)

	// A delivery in flight when the connection dropped comes back only after AckWait, and if it
	// was a client's last envelope no later delivery shows the gap: start again from the ack floor
	// after every reconnect instead.
	reconnected := p.s.nc.StatusChanged(nats.CONNECTED)
	defer p.s.nc.RemoveStatusListener(reconnected)
	cc, err := p.subscribe()
	if err == nil {
		select {
		case <-p.stopCh:
		case <-cc.Closed():
			p.lose("consumer closed")
		case <-reconnected:
			p.lose("NATS reconnected; restarting from the ack floor")
		}
		cc.Stop()
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.workers.Wait()
	close(p.drainDone)
	// Acks are fire-and-forget; flush them so the next owner's start point is as late as possible.
	_ = p.s.nc.FlushTimeout(time.Second)
}

// lossReason says why a partition's lease ended, for the log.
func lossReason(err error) string {
	switch {
	case errors.Is(err, bus.ErrLeaseTaken):
		return "lease taken over"
	case errors.Is(err, bus.ErrLeaseExpired):
		return "lease not renewed in time"
	case err == nil:
		return "lease ended"
	default:
		return err.Error()
	}
}

// subscribe replaces any earlier consumer of the partition with one of our own that starts at the
// earliest envelope not acknowledged by the previous owner, so unfinished envelopes come first and
// at once, in stream order. Envelopes above that point which were already done are sent again;
// that is safe because the IC de-duplicates by request id.
func (p *partition) subscribe() (jetstream.ConsumeContext, error) {
	backoff := p.s.cfg.RetryMin
	for {
		cc, err := p.trySubscribe()
		if err == nil {
			return cc, nil
		}
		if p.ctx.Err() != nil || p.stopping.Load() {
			return nil, err
		}
		p.s.log.Warn("set up partition consumer", "partition", p.n, "err", err)
		if !sleepCtx(p.ctx, jitter(backoff)) {
			return nil, p.ctx.Err()
		}
		backoff = min(2*backoff, p.s.cfg.RetryMax)
	}
}

// pullExpiryHeartbeats is how many heartbeats one pull request lasts (nats.go wants more than
// two).
const pullExpiryHeartbeats = 5

func (p *partition) trySubscribe() (jetstream.ConsumeContext, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.s.cfg.CallTimeout)
	defer cancel()
	// A stop (hand-over, shutdown) ends the set-up at once: nothing was taken from the partition
	// yet, so there is nothing to drain, and a JetStream request that gets no answer must not hold
	// the stop for CallTimeout.
	go func() {
		select {
		case <-p.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	prefix := consumerPrefix(p.n)
	own := prefix + strconv.FormatUint(p.lease.Revision(), 10)
	// Names only: the meta leader answers them from its assignments, where listing every
	// consumer's info waits for each consumer leader of the stream (up to 4 s for one that does
	// not answer, a cluster node busy or cut off); only this partition's consumers are asked.
	lister := p.h.In.ConsumerNames(ctx)
	var olds []string
	ownExists := false
	for name := range lister.Name() {
		if name == own {
			// Left by an earlier attempt of ours whose Consume failed: reuse it as it is.
			ownExists = true
			continue
		}
		if strings.HasPrefix(name, prefix) {
			olds = append(olds, name)
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("list consumers of %s: %w", bus.StreamIn, err)
	}
	var floor uint64
	found := 0
	for _, name := range olds {
		// A consumer without a leader (an election under way) may leave the request unanswered:
		// give up after a lease's lifetime and try again, rather than after CallTimeout.
		ictx, icancel := context.WithTimeout(ctx, p.s.cfg.LeaseTTL)
		c, err := p.h.In.Consumer(ictx, name)
		icancel()
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue // deleted since the listing, by an owner before us that was still setting up
		}
		if err != nil {
			return nil, fmt.Errorf("read previous consumer %s: %w", name, err)
		}
		if f := c.CachedInfo().AckFloor.Stream; found == 0 || f < floor {
			floor = f
		}
		found++
	}
	if len(olds) > 0 && found == 0 {
		return nil, fmt.Errorf("the previous consumers of partition %d are gone since the listing", p.n)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       own,
		Description:   "icws submitter, partition " + strconv.Itoa(p.n) + ", holder " + p.s.cfg.ID,
		FilterSubject: bus.InPartitionFilter(p.n),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       p.s.cfg.AckWait,
		MaxAckPending: p.s.cfg.MaxPending,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(olds) > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = floor + 1
	}
	var cons jetstream.Consumer
	var err error
	// As for the reads above: during an election the request may go unanswered; give up after a
	// lease's lifetime and try again, rather than after CallTimeout. A create that was carried out
	// after all is found and reused by the next attempt (ownExists).
	cctx, ccancel := context.WithTimeout(ctx, p.s.cfg.LeaseTTL)
	if ownExists {
		cons, err = p.h.In.Consumer(cctx, own)
	} else {
		cons, err = p.h.In.CreateOrUpdateConsumer(cctx, cfg)
	}
	ccancel()
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", cfg.Durable, err)
	}
	// Ours exists before the old ones go, so a crash in between never leaves the partition
	// without a consumer (a successor would then start from the beginning of the stream).
	for _, name := range olds {
		if name == cfg.Durable {
			continue
		}
		// As for reading it: a consumer whose leader is being elected may not answer; try again
		// after a lease's lifetime rather than after CallTimeout. Ours is reused then.
		dctx, dcancel := context.WithTimeout(ctx, p.s.cfg.LeaseTTL)
		err := p.h.In.DeleteConsumer(dctx, name)
		dcancel()
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("delete previous consumer %s: %w", name, err)
		}
	}
	p.s.log.Debug("partition consumer ready", "partition", p.n, "consumer", cfg.Durable,
		"previous", olds, "start_seq", cfg.OptStartSeq)
	cc, err := cons.Consume(p.onMsg,
		jetstream.PullMaxMessages(min(p.s.cfg.MaxPending, 512)),
		// nats.go waits two heartbeats before it repeats a pull request that got no answer; by
		// default they are 15 s apart. A request is lost whenever it reaches a consumer without a
		// leader: right after the consumer is created on a cluster, or while its leader moves.
		jetstream.PullHeartbeat(p.s.cfg.PullHeartbeat),
		jetstream.PullExpiry(pullExpiryHeartbeats*p.s.cfg.PullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				// Another process took the partition over; stop before doing anything more.
				p.lose("consumer deleted")
				return
			}
			p.s.log.Debug("partition consumer", "partition", p.n, "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", cfg.Durable, err)
	}
	return cc, nil
}

// onMsg queues a message behind the client's earlier ones; it runs on the consumer's goroutine, in
// stream order, and never blocks.
func (p *partition) onMsg(msg jetstream.Msg) {
	if p.stopping.Load() {
		return
	}
	md, err := msg.Metadata()
	if err != nil {
		p.s.log.Warn("message without metadata", "partition", p.n, "err", err)
		return
	}
	client := orderingKey(msg.Subject())
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	// Every owner has a consumer of its own, so its first delivery is number 1.
	if last := p.lastDelivery; md.Sequence.Consumer != last+1 {
		// The lost delivery would only come back after AckWait, behind this one. Start again
		// from the ack floor instead (the next owner, possibly this process, does), in order.
		go p.lose(fmt.Sprintf("delivery %d was lost in flight (got %d)", last+1, md.Sequence.Consumer))
		p.closed = true
		return
	}
	p.lastDelivery = md.Sequence.Consumer
	if _, held := p.pending[md.Sequence.Stream]; held {
		return // redelivered after AckWait while still queued here
	}
	p.pending[md.Sequence.Stream] = struct{}{}
	item := newQueued(msg, md)
	q, ok := p.clients[client]
	if !ok {
		canister, clientTok, _ := strings.Cut(client, ".")
		q = &clientQueue{canister: canister, client: clientTok}
		p.clients[client] = q
		p.workers.Add(1)
		go p.relayClient(client, q)
	}
	q.msgs = append(q.msgs, item)
	backlog := len(q.msgs)
	if !q.inFlightSince.IsZero() {
		backlog++
	}
	p.s.m.clientBacklog.Observe(float64(backlog))
	p.checkBacklogLocked(client, q, len(q.msgs)-1, time.Now())
}

// orderingKey is the per-client ordering key of an ICWS_IN subject, the client's session key. A
// subject that does not parse is its own key; handle drops its message.
func orderingKey(subject string) string {
	_, ref, err := bus.ParseInSubject(subject)
	if err != nil {
		return subject
	}
	return bus.SessionKey(ref.CanisterText, ref.Client)
}

// relayClient relays one client's queued envelopes in order and ends when the queue is empty. It
// holds an in-flight slot only while one envelope is relayed, so a client with a long backlog (or
// a slow canister) takes turns with the others instead of holding a slot for its whole backlog.
// The envelopes of a session condemned for its backlog are dropped instead (backlog.go).
func (p *partition) relayClient(client string, q *clientQueue) {
	defer p.workers.Done()
	for {
		p.mu.Lock()
		if len(q.msgs) == 0 || p.stopping.Load() || p.ctx.Err() != nil {
			delete(p.clients, client)
			p.mu.Unlock()
			return
		}
		now := time.Now()
		p.checkBacklogLocked(client, q, 0, now)
		item := q.msgs[0]
		if cd := p.condemned[client]; cd != nil {
			if item.kind == bus.KindMessage {
				q.msgs[0] = queued{}
				q.msgs = q.msgs[1:]
				if now.Sub(cd.notified) >= closeRequestRepeat {
					cd.notified = now
					tag, _ := bus.SessionTagOfMsgID(item.msg.Headers().Get(bus.HeaderMsgID))
					p.requestCloseLocked(q, cd, tag)
				}
				p.mu.Unlock()
				p.dropCondemned(item)
				p.release(item.msg)
				continue
			}
			delete(p.condemned, client) // its close request, or a new session's open
		}
		msg := item.msg
		p.mu.Unlock()
		if !p.valid() {
			p.lose("lease not renewed in time")
			p.forget(client)
			return
		}
		select {
		case p.s.sem <- struct{}{}:
		case <-p.stopCh:
			p.forget(client)
			return
		case <-p.ctx.Done():
			p.forget(client)
			return
		}
		if p.stopping.Load() || !p.valid() {
			<-p.s.sem
			p.forget(client)
			return
		}
		p.mu.Lock()
		q.msgs[0] = queued{}
		q.msgs = q.msgs[1:]
		q.inFlightSince = time.Now()
		p.mu.Unlock()
		p.s.m.clientsInFlight.Inc()
		if p.s.handle(p.ctx, p.n, msg) {
			if err := msg.Ack(); err != nil {
				p.s.log.Debug("ack", "partition", p.n, "err", err)
			}
		}
		p.s.m.clientsInFlight.Dec()
		<-p.s.sem
		p.mu.Lock()
		q.inFlightSince = time.Time{}
		p.mu.Unlock()
		p.release(msg)
	}
}

// release forgets a message that is finished or left to the next owner.
func (p *partition) release(msg jetstream.Msg) {
	if md, err := msg.Metadata(); err == nil {
		p.mu.Lock()
		delete(p.pending, md.Sequence.Stream)
		p.mu.Unlock()
	}
}

func (p *partition) forget(client string) {
	p.mu.Lock()
	delete(p.clients, client)
	p.mu.Unlock()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
