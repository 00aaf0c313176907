package edge

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/broker"
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
	filling bool
	dropped uint64 // core messages the subscription dropped, as last seen
	refill  bool   // pending overflowed while filling: read the stream again
	// resumedFrame is sent before the first replayed frame (resume only).
	resumedFrame []byte
	resumeStart  time.Time
}

// sendq is a per-connection bounded frame queue. It holds no buffer while empty, and its writer
// goroutine exists only while there is something to write, so an idle session costs nothing here.
type sendq struct {
	qmu     sync.Mutex
	queue   [][]byte
	limit   int
	writing bool
	stopped bool
	space   chan struct{} // closed when the writer takes frames; created on demand
}

func seqOf(h nats.Header) (uint64, bool) {
	v := h.Get(broker.HeaderSeq)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil && n > 0
}

// onLive handles a message from the core subscription (dispatch goroutine; must not block).
func (c *conn) onLive(msg *nats.Msg) {
	if f := c.e.testDropLive.Load(); f != nil && (*f)(msg) {
		return
	}
	seq, ok := seqOf(msg.Header)
	if !ok {
		c.e.log.Debug("canister message without Icws-Seq", "subject", msg.Subject)
		return
	}
	c.dmu.Lock()
	if !c.live || seq < c.next {
		c.dmu.Unlock()
		return
	}
	if c.filling || seq > c.next {
		c.holdLocked(seq, msg.Data)
		start := !c.filling
		c.filling = true
		c.dmu.Unlock()
		if start {
			c.e.m.gapFills.Inc()
			go c.fill()
		}
		return
	}
	c.deliverLocked(msg.Data)
	c.dmu.Unlock()
}

// checkDrops catches messages the core subscriptions dropped (shared channel full): a drop that
// is followed by another message shows up as a gap anyway, but a dropped last message would not,
// so any new drop starts a read of the stream.
func (e *Edge) checkDrops() {
	e.mu.RLock()
	var hit []*conn
	for sub, c := range e.bySub {
		if d, err := sub.Dropped(); err == nil && d > 0 {
			c.dmu.Lock()
			if uint64(d) > c.dropped {
				c.dropped = uint64(d)
				hit = append(hit, c)
			}
			c.dmu.Unlock()
		}
	}
	e.mu.RUnlock()
	for _, c := range hit {
		c.dmu.Lock()
		start := c.live && !c.filling
		c.filling = c.filling || start
		c.dmu.Unlock()
		if start {
			e.m.gapFills.Inc()
			go c.fill()
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
	if len(c.pending) >= c.e.cfg.PendingLimit {
		c.refill = true
		return
	}
	c.pending[seq] = data
}

// deliverLocked queues the frame for c.next and then every held frame that follows it.
func (c *conn) deliverLocked(data []byte) {
	c.next++
	c.push(data)
	for len(c.pending) > 0 {
		d, ok := c.pending[c.next]
		if !ok {
			break
		}
		delete(c.pending, c.next)
		c.next++
		c.push(d)
	}
	for s := range c.pending {
		if s < c.next {
			delete(c.pending, s)
		}
	}
	if len(c.pending) == 0 {
		c.pending = nil
	}
}

var errHistoryHole = errors.New("history incomplete")

// fill reads the client's stored messages from ICWS_OUT and delivers those from c.next on,
// merging with what the live path buffered. It repeats while a gap remains, up to GapTimeout.
func (c *conn) fill() {
	deadline := time.Now().Add(c.e.cfg.GapTimeout)
	backoff := 5 * time.Millisecond
	for {
		err := c.readHistory()
		c.dmu.Lock()
		if !c.live {
			c.filling = false
			c.dmu.Unlock()
			return
		}
		if err == nil && c.resumedFrame != nil {
			// Nothing stored after last_seq: the resume answer goes out now.
			c.push(c.resumedFrame)
			c.resumedFrame = nil
		}
		if errors.Is(err, errHistoryHole) {
			c.dmu.Unlock()
			c.notResumable("history no longer complete (messages after last_seq expired)")
			return
		}
		for s := range c.pending {
			if s < c.next { // delivered from the stream meanwhile
				delete(c.pending, s)
			}
		}
		if d, ok := c.pending[c.next]; ok && err == nil {
			delete(c.pending, c.next)
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
		progress := c.refill
		c.refill = false
		c.dmu.Unlock()
		if err != nil {
			c.e.log.Warn("read history", "subject", c.outSubj, "err", err)
		}
		if progress {
			continue
		}
		if time.Now().After(deadline) {
			c.closeWith(websocket.CloseInternalServerErr, "icws: canister message missing from the stream")
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

// readHistory walks the client's subject in ICWS_OUT with direct gets and delivers every message
// with seq ≥ c.next in order. The first message it delivers during a resume must be last_seq+1.
func (c *conn) readHistory() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.e.cfg.GapTimeout)
	defer cancel()
	var hole bool
	err := c.e.readSubject(ctx, c.outSubj, 1, func(hdr nats.Header, data []byte) error {
		if c.isGone() {
			return errStopRead
		}
		c.e.m.replayed.Inc()
		seq, ok := seqOf(hdr)
		if !ok {
			return nil
		}
		c.dmu.Lock()
		if !c.live {
			c.dmu.Unlock()
			return errStopRead
		}
		switch {
		case seq < c.next:
			c.dmu.Unlock()
			return nil
		case seq > c.next:
			if c.resumedFrame != nil {
				c.dmu.Unlock()
				hole = true
				return errStopRead
			}
			c.holdLocked(seq, data)
			c.dmu.Unlock()
			return nil
		}
		delete(c.pending, seq)
		c.next++
		first := c.resumedFrame
		c.resumedFrame = nil
		c.dmu.Unlock()
		// Only this goroutine produces frames while filling, so pushing outside the lock keeps
		// order, and waiting for queue space here throttles the replay instead of failing it.
		if first != nil && !c.pushWait(first) {
			return errStopRead
		}
		if !c.pushWait(data) {
			return errStopRead
		}
		return nil
	})
	if hole {
		return errHistoryHole
	}
	return err
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
	if len(c.queue) >= c.limit {
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
		if len(c.queue) < c.limit {
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

func (c *conn) enqueueLocked(f []byte) {
	c.queue = append(c.queue, f)
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
}

func (c *conn) stopQueue() {
	c.qmu.Lock()
	c.stopped = true
	c.queue = nil
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
		if len(batch) == 0 || c.stopped {
			c.writing = false
			c.qmu.Unlock()
			return
		}
		if c.space != nil {
			close(c.space)
			c.space = nil
		}
		c.qmu.Unlock()
		for _, f := range batch {
			c.qmu.Lock()
			stopped := c.stopped
			c.qmu.Unlock()
			if stopped {
				break
			}
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.e.cfg.WriteTimeout))
			if err := c.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
				c.qmu.Lock()
				c.stopped = true
				c.queue = nil
				c.writing = false
				c.qmu.Unlock()
				_ = c.ws.Close() // the reader sees the error and ends the session
				return
			}
			c.e.m.framesOut.Inc()
			c.e.m.bytesOut.Add(float64(len(f)))
		}
	}
}
