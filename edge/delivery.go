package edge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/stagetrace"
	"github.com/nats-io/nats.go"
)

// delivery orders canister messages by Icws-Seq. While a fill reads from the stream (a gap, or a
// resume replay) the live path only buffers into pending; the fill goroutine is then the only
// producer of frames, so frames leave in sequence order.
type delivery struct {
	dmu     sync.Mutex
	live    bool
	next    uint64            // next sequence number to deliver
	pending map[uint64][]byte // seq > next, held until the gap closes
	// pendingBytes is the size of the frames in pending (bounded by PendingBytes).
	pendingBytes int
	filling      bool
	refill       bool // pending overflowed while filling: read the stream again
	// resumedFrame is sent before the first replayed frame (resume only).
	resumedFrame []byte
	resumeStart  time.Time
	// readFrom is the ICWS_OUT stream sequence the next read of the client's subject starts at:
	// every message stored before it has a seq below next (delivered), so a fill need not re-read
	// the client's whole history.
	readFrom uint64
}

// sendq is a per-connection bounded frame queue. It holds no buffer while empty, and its writer
// goroutine exists only while there is something to write, so an idle session costs nothing here.
type sendq struct {
	qmu     sync.Mutex
	queue   [][]byte
	limit   int
	bytes   int // size of the frames in queue
	maxB    int // byte limit of the queue (SendQueueBytes)
	writing bool
	stopped bool
	pingDue bool          // the writer sends a WebSocket ping before its next frames
	space   chan struct{} // closed when the writer takes frames; created on demand
}

// topSeqOf is the highest sequence number an ICWS_OUT message holds.
func topSeqOf(hdr nats.Header, data []byte) (uint64, bool) {
	var one [1]bus.OutFrame
	frames, err := bus.DecodeOutFrames(one[:0], hdr, data)
	if err != nil {
		return 0, false
	}
	return frames[len(frames)-1].Seq, true
}

// badOutMessage reports an ICWS_OUT message no poller writes; it is skipped, and a client missing
// a frame of it sees a gap and is closed.
func (e *Edge) badOutMessage(subject string, err error) {
	e.warnings.Warn(e.log, "bad_out_message", "skipping an ICWS_OUT message no poller writes", "subject", subject, "err", err)
}

// onLive handles a message from the core subscription (dispatch goroutine; must not block).
func (c *conn) onLive(msg *nats.Msg) {
	if f := c.e.testDropLive.Load(); f != nil && (*f)(msg) {
		return
	}
	stagetrace.Mark(context.Background(), c.e.log, stagetrace.EdgeLive)
	var one [1]bus.OutFrame
	frames, err := bus.DecodeOutFrames(one[:0], msg.Header, msg.Data)
	if err != nil {
		c.e.badOutMessage(msg.Subject, err)
		return
	}
	c.dmu.Lock()
	if !c.live {
		c.dmu.Unlock()
		return
	}
	startFill := false
	for _, f := range frames {
		switch {
		case f.Seq < c.next:
		case c.filling || f.Seq > c.next:
			c.holdLocked(f.Seq, f.Frame)
			startFill = startFill || !c.filling
			c.filling = true
		default:
			c.deliverLocked(f.Frame)
		}
	}
	c.dmu.Unlock()
	if startFill {
		c.e.m.gapFills.Inc()
		go c.fill()
	}
}

// liveSub is a core NATS subscription to live subjects (bus.LiveSubject) and the number of this
// edge's sessions it carries: one per canister (bus.LiveCanisterFilter), or one per session with
// ICWS_EDGE_LIVE_SUBSCRIPTION=session. Either way a message is routed to its session by subject
// (Edge.dispatch), so a connection replacing another of the same session shares its subscription.
// filter, users, sub and err are guarded by Edge.mu; sub and err are set once ready is closed.
//
// Subscribing and unsubscribing happen outside Edge.mu: nats.go holds its connection's lock while
// it dials during a reconnect (2 s per unreachable server), and every new connection, every
// session's registration and every live message's dispatch takes Edge.mu.
type liveSub struct {
	filter  string
	users   int
	ready   chan struct{} // closed once the subscription exists or failed
	sub     *nats.Subscription
	err     error
	dropped atomic.Int64 // messages the subscription dropped, as last seen by checkDrops (the sweeper alone)
}

// acquireLive returns the subscription carrying c's live messages, subscribing if none does. A
// subscription to a canister costs the NATS client and server about 2 KB once, instead of for
// every session; what it receives for sessions of other edges is dropped by the dispatch.
func (e *Edge) acquireLive(c *conn) (*liveSub, error) {
	var filter string
	if e.cfg.LiveSubscription == LiveByCanister {
		filter = bus.LiveCanisterFilter(c.canText)
	} else {
		filter = bus.LiveSubject(c.canText, c.clientTok)
	}
	e.mu.Lock()
	ls := e.liveSubs[filter]
	first := ls == nil
	if first {
		ls = &liveSub{filter: filter, ready: make(chan struct{})}
		e.liveSubs[filter] = ls
	}
	ls.users++
	e.mu.Unlock()
	if first {
		// One subject filter always lands in one shard, so a session's messages stay in order.
		sub, err := e.nc.ChanSubscribe(filter, e.shardFor(filter))
		e.mu.Lock()
		ls.sub, ls.err = sub, err
		if err != nil && e.liveSubs[filter] == ls {
			delete(e.liveSubs, filter) // the next session tries again
		}
		close(ls.ready)
		e.mu.Unlock()
	} else {
		<-ls.ready
	}
	if ls.err != nil {
		e.mu.Lock()
		ls.users--
		e.mu.Unlock()
		return nil, fmt.Errorf("subscribe %s: %w", filter, ls.err)
	}
	return ls, nil
}

// releaseLiveLocked drops c's use of ls and returns the subscription to end, once no session of
// this edge needs it, for the caller to unsubscribe after unlocking Edge.mu.
func (e *Edge) releaseLiveLocked(ls *liveSub) *nats.Subscription {
	if ls.users--; ls.users > 0 {
		return nil
	}
	if e.liveSubs[ls.filter] == ls {
		delete(e.liveSubs, ls.filter)
	}
	return ls.sub
}

// checkDrops catches messages the core subscriptions dropped (shared channel full): a drop that
// is followed by another message shows up as a gap anyway, but a dropped last message would not,
// so any new drop makes every session of that subscription read the stream.
func (e *Edge) checkDrops() {
	e.mu.RLock()
	var dropping map[*liveSub]bool
	for _, ls := range e.liveSubs {
		if ls.sub == nil {
			continue // still subscribing
		}
		if d, err := ls.sub.Dropped(); err == nil && int64(d) > ls.dropped.Load() {
			ls.dropped.Store(int64(d))
			if dropping == nil {
				dropping = map[*liveSub]bool{}
			}
			dropping[ls] = true
		}
	}
	var hit []*conn
	if dropping != nil {
		for _, c := range e.byKey {
			if dropping[c.liveSub] {
				hit = append(hit, c)
			}
		}
	}
	e.mu.RUnlock()
	e.startFills(hit)
}

// refillAll reads the stream for every live connection: core subscriptions miss everything
// published while the NATS connection was down, and a missed last message shows no gap.
func (e *Edge) refillAll() {
	e.mu.RLock()
	cs := make([]*conn, 0, len(e.byKey))
	for _, c := range e.byKey {
		cs = append(cs, c)
	}
	e.mu.RUnlock()
	e.startFills(cs)
}

// startFills starts a fill for each connection, or makes a running one read once more.
func (e *Edge) startFills(cs []*conn) {
	for _, c := range cs {
		c.dmu.Lock()
		start := c.live && !c.filling
		if c.live && c.filling {
			c.refill = true
		}
		c.filling = c.filling || start
		c.dmu.Unlock()
		if start {
			e.m.gapFills.Inc()
			go c.fill()
		}
	}
}

// watchReconnects refills every connection each time the NATS connection is (re)established.
// A status listener rather than a ReconnectHandler, so the handler set by whoever built the
// connection (bus.Connect logs with it) stays in place.
func (e *Edge) watchReconnects(ctx context.Context, ch chan nats.Status) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			e.log.Info("nats (re)connected: reading missed canister messages from the stream")
			e.refillAll()
		}
	}
}

// watchLeaderChanges refills every connection when ICWS_OUT elects a new leader: messages the old
// leader committed but had not applied are stored without reaching the live subjects.
func (e *Edge) watchLeaderChanges(ctx context.Context, ch chan *nats.Msg) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			e.log.Info("ICWS_OUT has a new leader: reading canister messages it may not have re-published")
			e.refillAll()
		}
	}
}

func (c *conn) holdLocked(seq uint64, data []byte) {
	if c.pending == nil {
		c.pending = map[uint64][]byte{}
	}
	if _, dup := c.pending[seq]; dup {
		return
	}
	if len(c.pending) >= c.e.cfg.PendingLimit || (len(c.pending) > 0 && c.pendingBytes+len(data) > c.e.cfg.PendingBytes) {
		c.refill = true
		return
	}
	c.pending[seq] = data
	c.pendingBytes += len(data)
}

// takeLocked removes seq from pending and returns its frame.
func (c *conn) takeLocked(seq uint64) ([]byte, bool) {
	d, ok := c.pending[seq]
	if ok {
		delete(c.pending, seq)
		c.pendingBytes -= len(d)
	}
	return d, ok
}

// prunePendingLocked drops held frames that were delivered meanwhile.
func (c *conn) prunePendingLocked() {
	for s, d := range c.pending {
		if s < c.next {
			delete(c.pending, s)
			c.pendingBytes -= len(d)
		}
	}
	if len(c.pending) == 0 {
		c.pending = nil
		c.pendingBytes = 0
	}
}

// deliverLocked queues the frame for c.next and then every held frame that follows it.
func (c *conn) deliverLocked(data []byte) {
	c.next++
	c.push(data)
	for len(c.pending) > 0 {
		d, ok := c.takeLocked(c.next)
		if !ok {
			break
		}
		c.next++
		c.push(d)
	}
	c.prunePendingLocked()
}

var (
	errHistoryHole = errors.New("history incomplete")
	errReadAborted = errors.New("read aborted: the connection is closing")
)

// reasonHistoryUnavailable ends a resume whose history could not be read within GapTimeout.
const reasonHistoryUnavailable = "history unavailable (message bus not answering)"

// fill reads the client's stored messages from ICWS_OUT and delivers those from c.next on,
// merging with what the live path buffered. It repeats while a gap remains or the read fails
// (NATS reconnecting, a direct get timing out), up to GapTimeout; a resume's answer is sent only
// once the history was read completely.
func (c *conn) fill() {
	deadline := time.Now().Add(c.e.cfg.GapTimeout)
	// Failing reads (NATS reconnecting, a leader election) are waited out for longer than a
	// missing message: the stream still has it.
	busDeadline := time.Now().Add(c.e.busOutage())
	backoff := 5 * time.Millisecond
	for {
		err := c.readHistory()
		switch {
		case errors.Is(err, errHistoryHole):
			c.dmu.Lock()
			c.filling = false
			c.dmu.Unlock()
			c.notResumable("history no longer complete (messages after last_seq expired)")
			return
		case errors.Is(err, errReadAborted):
			c.dmu.Lock()
			c.filling = false
			c.dmu.Unlock()
			return
		}
		c.dmu.Lock()
		if !c.live {
			c.filling = false
			c.dmu.Unlock()
			return
		}
		progress := false
		if err == nil {
			if c.resumedFrame != nil {
				// Nothing stored after last_seq: the resume answer goes out now.
				c.push(c.resumedFrame)
				c.resumedFrame = nil
			}
			c.prunePendingLocked()
			if d, ok := c.takeLocked(c.next); ok {
				c.deliverLocked(d)
			}
			if len(c.pending) == 0 && !c.refill {
				c.filling = false
				if !c.resumeStart.IsZero() {
					c.e.m.replayLatency.Observe(time.Since(c.resumeStart).Seconds())
					c.resumeStart = time.Time{}
				}
				c.dmu.Unlock()
				return
			}
			progress = c.refill
			c.refill = false
		}
		resuming := c.resumedFrame != nil
		c.dmu.Unlock()
		if err != nil {
			c.e.log.Warn("read history", "subject", c.outSubject(), "err", err)
		}
		if progress {
			continue
		}
		if now := time.Now(); now.After(deadline) && (err == nil || now.After(busDeadline)) {
			c.dmu.Lock()
			c.filling = false
			c.dmu.Unlock()
			switch {
			case resuming:
				// The answer was never sent, so the client cannot be told anything but 4100.
				c.notResumable(reasonHistoryUnavailable)
			case err != nil:
				c.closeWith(websocket.CloseInternalServerErr, "icws: message bus unavailable")
			default:
				c.closeWith(websocket.CloseInternalServerErr, "icws: canister message missing from the stream")
			}
			return
		}
		select {
		case <-c.gone:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// readHistory walks the client's subject in ICWS_OUT with direct gets, from c.readFrom on, and
// delivers every message with seq ≥ c.next in sequence order (the stream may hold a client's
// messages out of order: a batch re-published after a partial failure, two pollers across a lease
// hand-over), holding those above c.next. During a resume the first frame it delivers is preceded
// by the resume answer; a hole is declared only after the whole subject was read: last_seq+1 was
// never found although a later message is stored.
func (c *conn) readHistory() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.e.cfg.GapTimeout)
	defer cancel()
	c.dmu.Lock()
	from := max(c.readFrom, 1)
	c.dmu.Unlock()
	var (
		above     bool   // a stored message above c.next was seen
		firstHeld uint64 // stream sequence of the first message not delivered when read
		last      = from - 1
		aborted   bool
	)
	err := c.e.readSubject(ctx, c.outSubject(), from, func(sseq uint64, hdr nats.Header, data []byte) error {
		if c.isGone() {
			aborted = true
			return errStopRead
		}
		last = sseq
		var one [1]bus.OutFrame
		stored, err := bus.DecodeOutFrames(one[:0], hdr, data)
		if err != nil {
			c.e.badOutMessage(c.outSubject(), err)
			return nil
		}
		c.e.m.replayed.Add(float64(len(stored)))
		c.dmu.Lock()
		if !c.live {
			c.dmu.Unlock()
			aborted = true
			return errStopRead
		}
		var frames [][]byte
		for _, f := range stored {
			switch {
			case f.Seq < c.next:
				continue
			case f.Seq > c.next:
				above = true
				if firstHeld == 0 {
					firstHeld = sseq
				}
				c.holdLocked(f.Seq, f.Frame)
				continue
			}
			c.takeLocked(f.Seq)
			c.next++
			if c.resumedFrame != nil {
				frames = append(frames, c.resumedFrame)
				c.resumedFrame = nil
			}
			frames = append(frames, f.Frame)
			for {
				d, ok := c.takeLocked(c.next)
				if !ok {
					break
				}
				c.next++
				frames = append(frames, d)
			}
		}
		c.dmu.Unlock()
		// Only this goroutine produces frames while filling, so pushing outside the lock keeps
		// order, and waiting for queue space here throttles the replay instead of failing it.
		for _, f := range frames {
			if !c.pushWait(f) {
				aborted = true
				return errStopRead
			}
		}
		return nil
	})
	if aborted {
		return errReadAborted
	}
	if err != nil {
		return err
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.resumedFrame != nil && above {
		return errHistoryHole
	}
	if firstHeld != 0 {
		c.readFrom = firstHeld
	} else {
		c.readFrom = last + 1
	}
	return nil
}

// notResumable ends a resume that cannot deliver a complete history: 4100, and the session is
// closed (its history is gone, a later resume could not succeed either).
func (c *conn) notResumable(why string) {
	c.cmu.Lock()
	c.forceClose = true
	c.cmu.Unlock()
	c.e.m.resumes.WithLabelValues("not_resumable").Inc()
	c.closeWith(CloseNotResumable, notResumablePrefix+why)
}

// push queues a frame without blocking; a full queue closes the connection as slow (4101).
func (c *conn) push(f []byte) bool {
	c.qmu.Lock()
	if c.stopped {
		c.qmu.Unlock()
		return false
	}
	if c.fullLocked(len(f)) {
		c.qmu.Unlock()
		c.e.m.overflows.Inc()
		c.closeWith(CloseSlowClient, reasonSlowClient)
		return false
	}
	c.enqueueLocked(f)
	c.qmu.Unlock()
	return true
}

// pushWait queues a frame, waiting up to WriteTimeout for space.
func (c *conn) pushWait(f []byte) bool {
	timer := time.NewTimer(c.e.cfg.WriteTimeout)
	defer timer.Stop()
	for {
		c.qmu.Lock()
		if c.stopped {
			c.qmu.Unlock()
			return false
		}
		if !c.fullLocked(len(f)) {
			c.enqueueLocked(f)
			c.qmu.Unlock()
			return true
		}
		if c.space == nil {
			c.space = make(chan struct{})
		}
		space := c.space
		c.qmu.Unlock()
		select {
		case <-space:
		case <-c.gone:
			return false
		case <-timer.C:
			c.e.m.overflows.Inc()
			c.closeWith(CloseSlowClient, reasonSlowClient)
			return false
		}
	}
}

// fullLocked reports whether a frame of n bytes does not fit; a frame always fits an empty queue.
func (c *conn) fullLocked(n int) bool {
	return len(c.queue) >= c.limit || (len(c.queue) > 0 && c.bytes+n > c.maxB)
}

func (c *conn) enqueueLocked(f []byte) {
	c.queue = append(c.queue, f)
	c.bytes += len(f)
	c.startWriterLocked()
}

func (c *conn) startWriterLocked() {
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
}

// writeFailed stops the queue after a failed write and, with closeSocket, closes the socket: the
// reader sees the error and ends the session.
func (c *conn) writeFailed(closeSocket bool) {
	c.qmu.Lock()
	c.stopped = true
	c.queue = nil
	c.writing = false
	c.qmu.Unlock()
	if closeSocket {
		c.e.idle.release(c)
		c.discardUnsent()
		_ = c.ws.Close()
	}
}

func (c *conn) stopQueue() {
	c.qmu.Lock()
	c.stopped = true
	c.queue = nil
	c.bytes = 0
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
	c.qmu.Unlock()
}

func (c *conn) writeLoop() {
	for {
		c.qmu.Lock()
		batch := c.queue
		c.queue = nil
		c.bytes = 0
		ping := c.pingDue
		c.pingDue = false
		if (len(batch) == 0 && !ping) || c.stopped {
			c.writing = false
			c.qmu.Unlock()
			return
		}
		if c.space != nil {
			close(c.space)
			c.space = nil
		}
		c.qmu.Unlock()
		if ping {
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.e.cfg.WriteTimeout)); err != nil {
				// After our close frame the reader waits for the client's reply: leave the socket.
				c.writeFailed(!errors.Is(err, websocket.ErrCloseSent))
				return
			}
		}
		// The frames taken together leave in one write (frameBatcher).
		c.out.begin()
		var written, bytes int
		err := func() error {
			for _, f := range batch {
				c.qmu.Lock()
				stopped := c.stopped
				c.qmu.Unlock()
				if stopped {
					return nil
				}
				_ = c.ws.SetWriteDeadline(time.Now().Add(c.e.cfg.WriteTimeout))
				if err := c.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
					return err
				}
				written++
				bytes += len(f)
			}
			return nil
		}()
		if endErr := c.out.end(time.Now().Add(c.e.cfg.WriteTimeout)); err == nil {
			err = endErr
		}
		if err != nil {
			c.writeFailed(true)
			return
		}
		if written > 0 {
			c.lastSent.Store(time.Now().UnixNano())
			stagetrace.Mark(context.Background(), c.e.log, stagetrace.EdgeWritten)
		}
		c.e.m.framesOut.Add(float64(written))
		c.e.m.bytesOut.Add(float64(bytes))
	}
}
