package poller

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/safe"
	"github.com/icws/icws/internal/stagetrace"
	"github.com/icws/icws/internal/tokenbucket"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// errCursorConflict means another poller wrote the cursor: we are no longer the only one polling.
var errCursorConflict = errors.New("cursor written by another poller")

func (p *Poller) handles() *bus.Handles {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.h
}

// frameHeaderAllowance leaves room for the headers of an ICWS_OUT message within the limits.
const frameHeaderAllowance = 1024

// frameLimit is the largest frame ICWS_OUT and the NATS connection accept.
func (p *Poller) frameLimit() int {
	limit := int(p.deps.NC.MaxPayload())
	if h := p.handles(); h != nil {
		if m := int(h.Out.CachedInfo().Config.MaxMsgSize); m > 0 {
			limit = min(limit, m)
		}
	}
	return limit - frameHeaderAllowance
}

// runCanister competes for the canister's lease and polls while holding it, until ctx ends.
func (p *Poller) runCanister(ctx context.Context, c principal.Principal, w *workerHandle) {
	lease := w.lease
	id := c.Encode()
	log := p.log.With("canister", id)
	// Canister ids come from clients; a stopped worker's series must not stay behind.
	defer p.m.forget(id)
	for ctx.Err() == nil {
		if err := lease.Acquire(ctx); err != nil {
			return
		}
		log.Debug("lease acquired")
		p.m.leaseHeld.WithLabelValues(id).Set(1)
		lctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = lease.KeepAlive(lctx) })
		wg.Go(func() {
			// Polling stops as soon as the lease is lost, before another poller could start.
			select {
			case <-lease.Done():
				cancel()
			case <-lctx.Done():
			}
		})
		err := p.pollCanister(lctx, c, w)
		cancel()
		wg.Wait()
		lost := lease.Err()
		p.m.leaseHeld.WithLabelValues(id).Set(0)
		switch {
		case ctx.Err() != nil:
			if !p.abandonLeases && lost == nil {
				p.release(lease)
			}
			return
		case lost != nil:
			log.Warn("lease lost; now standby", "err", lost)
		case errors.Is(err, errCursorConflict):
			log.Warn("cursor moved by another poller; re-checking the lease")
		case err != nil:
			log.Error("polling stopped", "err", err)
		}
	}
}

// pollCanister is the polling loop of a canister whose lease we hold. After FailClose of nothing
// but permanent errors it declares the canister failed and sits that out (sitOutFailure).
func (p *Poller) pollCanister(ctx context.Context, c principal.Principal, w *workerHandle) error {
	id := c.Encode()
	log := p.log.With("canister", id)
	h := p.handles()
	backoff := p.cfg.BackoffMin
	var kicks tokenbucket.Bucket // polls made at once on a kick (waitNextPoll)
	fail := func(kind string, msg string, err error) bool {
		p.m.errors.WithLabelValues(kind).Inc()
		log.Warn(msg, "err", err, "retry_in", backoff)
		ok := sleep(ctx, backoff)
		backoff = min(2*backoff, p.cfg.BackoffMax)
		return ok
	}
	// permanentSince is when the current run of permanent errors began (zero: none); a transient
	// error or a usable answer ends it. failure is set once the run lasted FailClose.
	var permanentSince time.Time
	var failure *pollFailure
	var failureErr error
	// failFetch is fail for a ws_get_messages error, classified; false once ctx has ended.
	failFetch := func(err error) bool {
		if ctx.Err() != nil {
			return false
		}
		f := classify(err)
		wait := backoff
		if !f.permanent {
			permanentSince = time.Time{}
		} else {
			now := time.Now()
			if permanentSince.IsZero() {
				permanentSince = now
			}
			left := p.cfg.FailClose - now.Sub(permanentSince)
			if left <= 0 {
				p.m.errors.WithLabelValues(f.kind).Inc()
				failure, failureErr = &f, err
				return true
			}
			wait = min(wait, left) // declare on time rather than up to BackoffMax late
		}
		p.m.errors.WithLabelValues(f.kind).Inc()
		log.Warn(f.msg, "err", err, "retry_in", wait)
		ok := sleep(ctx, wait)
		backoff = min(2*backoff, p.cfg.BackoffMax)
		return ok
	}

	var cur bus.CursorRecord
	var rev uint64
	// retryTo caps the run published again after a failed publish or cursor write at the failed
	// run's last nonce (retrying says whether it is set), so its groups, and their Nats-Msg-Ids,
	// come out as before and JetStream drops what it stored already.
	var retryTo uint64
	var retrying bool
	for {
		var err error
		if cur, rev, err = loadCursor(ctx, p.deps.NC, id); err == nil {
			break
		}
		if errors.Is(err, errCorruptCursor) {
			p.m.errors.WithLabelValues(errKindCursor).Inc()
			log.Warn("corrupt cursor; polling from the canister's first retained message", "err", err)
			cur = bus.CursorRecord{}
			break
		}
		if ctx.Err() != nil || !fail(errKindCursor, "read cursor failed", err) {
			return ctx.Err()
		}
	}
	log.Info("polling from cursor", "next_nonce", cur.NextNonce, "epoch", cur.Epoch)
	p.m.cursor.WithLabelValues(id).Set(float64(cur.NextNonce))

	for ctx.Err() == nil {
		if failure != nil {
			if !p.sitOutFailure(ctx, id, w, *failure, failureErr, permanentSince) {
				return nil
			}
			failure, failureErr, permanentSince, backoff = nil, nil, time.Time{}, p.cfg.BackoffMin
		}
		start := time.Now()
		// Ask for the last published message again: seeing it unchanged proves the queue was not
		// reset since; seeing it gone or different means it was.
		overlap := cur.NextNonce > 0 && cur.LastKey != ""
		from := cur.NextNonce
		if overlap {
			from--
		}
		res, err := p.fetch(ctx, c, from)
		if err != nil {
			if !failFetch(err) {
				return nil
			}
			continue
		}
		msgs := res.Messages
		next := cur
		reset := false
		if len(msgs) > 0 || overlap {
			var first uint64
			if len(msgs) > 0 {
				first, _ = protocol.MessageKeyNonce(msgs[0].Key) // fetch checked every key (checkAnswer)
			}
			switch {
			case overlap && len(msgs) == 0:
				reset = true // the last published message is gone and nothing follows it
			case first < from:
				reset = true // the canister answered below what we asked: not the queue we knew
			case overlap && first == from:
				if msgs[0].Key != cur.LastKey || contentHash(msgs[0].Content) != cur.LastContentHash {
					reset = true
				} else {
					msgs = msgs[1:]
				}
			case first > cur.NextNonce && cur.LastKey != "":
				p.m.errors.WithLabelValues(errKindGap).Inc()
				log.Warn("queue gap: messages expired in the canister before they were polled", "from_nonce", cur.NextNonce, "to_nonce", first-1)
			}
		}
		permanentSince = time.Time{} // a usable answer
		if reset {
			log.Warn("canister queue reset detected; resynchronising from its first retained message", "next_nonce", cur.NextNonce, "last_key", cur.LastKey, "epoch", cur.Epoch+1)
			p.m.resets.WithLabelValues(id).Inc()
			if res, err = p.fetch(ctx, c, 0); err != nil {
				if !failFetch(err) {
					return nil
				}
				continue
			}
			msgs = res.Messages
			next = bus.CursorRecord{Epoch: cur.Epoch + 1}
			retrying = false // another queue: nothing of the failed run is in it
		}
		run := []answer{{res: res, msgs: msgs}}
		if len(msgs) > 0 && !res.IsEndOfQueue {
			run = p.fetchRun(ctx, c, run, time.Since(start), retryTo, retrying)
		}
		if retrying && len(msgs) > 0 {
			if first, _ := protocol.MessageKeyNonce(msgs[0].Key); first <= retryTo {
				run = capRun(run, retryTo)
			} else {
				retrying = false // the failed run's messages are gone from the queue (a gap)
			}
		}
		if ctx.Err() != nil {
			return nil // the lease is lost: nothing more may be published
		}
		advanced := false // set when the cursor moved on in the same epoch
		failedRun := func() {
			if a := run[len(run)-1]; len(a.msgs) > 0 {
				retryTo, _ = protocol.MessageKeyNonce(a.msgs[len(a.msgs)-1].Key)
				retrying = true
			}
		}
		if len(run[0].msgs) > 0 {
			n, last, err := p.publish(ctx, id, next.Epoch, run)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				failedRun()
				if !fail(errKindPublish, "publish to ICWS_OUT failed", err) {
					return nil
				}
				continue
			}
			if last.key != "" {
				next.NextNonce = last.nonce + 1
				next.LastKey = last.key
				next.LastContentHash = last.hash
			}
			p.m.publishLatency.Observe(time.Since(start).Seconds())
			p.m.messages.WithLabelValues(id).Add(float64(n))
		}
		if next != cur {
			newRev, err := saveCursor(ctx, h.Cursors, id, next, rev)
			if errors.Is(err, errCursorConflict) {
				p.m.errors.WithLabelValues(errKindCursor).Inc()
				return err
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				// The messages are in the stream; the retry publishes the same run again (retryTo),
				// which JetStream drops as duplicates.
				failedRun()
				if !fail(errKindCursor, "cursor update failed", err) {
					return nil
				}
				continue
			}
			advanced = !reset && next.NextNonce > cur.NextNonce
			cur, rev, retrying = next, newRev, false
			p.m.cursor.WithLabelValues(id).Set(float64(cur.NextNonce))
		}
		backoff = p.cfg.BackoffMin
		// Poll again at once only while a backlog drains: the canister says more is queued and this
		// poll moved the cursor on in the same queue. Anything else waits, whatever the answer
		// says: a canister claiming more than it gives, or answering the same messages whatever
		// is asked (a reset every poll), must not be polled in a busy loop.
		if run[len(run)-1].res.IsEndOfQueue || !advanced {
			if !p.waitNextPoll(ctx, start, w.kick, &kicks) {
				return nil
			}
		}
	}
	return nil
}

// answer is a ws_get_messages answer and its messages still to publish (without the one asked for
// again to check the queue).
type answer struct {
	res  protocol.CanisterOutputCertifiedMessages
	msgs []protocol.CanisterOutputMessage
}

// fetchRun follows run, whose last answer was full (a backlog), with the answers after it, up to
// ICWS_POLL_RUN_ANSWERS in all, so that publish stores a client's frames of all of them together.
// Each fetch asks for the previous answer's last message again, as every poll does. The messages
// in hand wait at most ICWS_POLL_RUN_WAIT for the fetches after them: a fetch that would end later,
// judged by the one before (took), is not started, and one that does is abandoned; a retry
// (capped) does not wait for time, only for until, so that it stores the same groups (capRun). The
// run also stops at the end of the queue, at ICWS_POLL_PUBLISH_BATCH_BYTES held, at a failed fetch,
// and at an answer that does not go on from the one before (a reset, a reordered queue); the next
// poll then asks again, from the cursor this run leaves.
func (p *Poller) fetchRun(ctx context.Context, c principal.Principal, run []answer, took time.Duration, until uint64, capped bool) []answer {
	begin := time.Now()
	// A retry after a failure (capped) fetches the same run again however long it takes, so it
	// stores the same groups.
	rctx := ctx
	if !capped {
		var cancel context.CancelFunc
		rctx, cancel = context.WithDeadline(ctx, begin.Add(p.cfg.RunWait))
		defer cancel()
	}
	held := run[0].size()
	for len(run) < p.cfg.RunAnswers && held < int(p.cfg.PublishBatchBytes) && (capped || time.Since(begin)+took <= p.cfg.RunWait) {
		prev := &run[len(run)-1]
		if prev.res.IsEndOfQueue || len(prev.msgs) == 0 {
			break
		}
		tail := prev.msgs[len(prev.msgs)-1]
		nonce, _ := protocol.MessageKeyNonce(tail.Key) // fetch checked every key (checkAnswer)
		if capped && nonce >= until {
			break
		}
		fetched := time.Now()
		res, err := p.fetch(rctx, c, nonce)
		took = time.Since(fetched)
		if err != nil {
			p.log.Debug("fetching the next answer of a run failed; the next poll asks again", "canister", c.Encode(), "err", err)
			break
		}
		if len(res.Messages) == 0 {
			break
		}
		if first := res.Messages[0]; first.Key != tail.Key || !bytes.Equal(first.Content, tail.Content) {
			break
		}
		if len(res.Messages) == 1 {
			// Nothing new: the queue ended with prev, whatever prev's answer said.
			prev.res.IsEndOfQueue = res.IsEndOfQueue
			break
		}
		next := answer{res: res, msgs: res.Messages[1:]}
		held += next.size()
		run = append(run, next)
	}
	return run
}

// size is about how many bytes a's answer holds in memory.
func (a answer) size() int {
	n := len(a.res.Cert) + len(a.res.Tree)
	for _, m := range a.msgs {
		n += len(m.Key) + len(m.Content)
	}
	return n
}

// capRun drops the messages of run above nonce; a run cut short does not end the queue.
func capRun(run []answer, nonce uint64) []answer {
	for i := range run {
		for j, m := range run[i].msgs {
			if n, _ := protocol.MessageKeyNonce(m.Key); n > nonce {
				run[i].msgs = run[i].msgs[:j]
				run[i].res.IsEndOfQueue = false
				return run[:i+1]
			}
		}
	}
	return run
}

// fetch runs one ws_get_messages query with the poll timeout and decodes the answer. A canister
// Err answer is an error too.
func (p *Poller) fetch(ctx context.Context, c principal.Principal, nonce uint64) (res protocol.CanisterOutputCertifiedMessages, err error) {
	defer safe.Recover(p.log, p.m.panics, "poll", func() {
		res, err = protocol.CanisterOutputCertifiedMessages{}, &decodeError{fmt.Errorf("ws_get_messages(%d): the answer could not be handled", nonce)}
	})
	arg, err := protocol.EncodeWsGetMessagesArgs(protocol.CanisterWsGetMessagesArguments{Nonce: nonce})
	if err != nil {
		return protocol.CanisterOutputCertifiedMessages{}, err
	}
	qctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	start := time.Now()
	stagetrace.Mark(ctx, p.log, stagetrace.PollerPollStart)
	reply, err := p.deps.IC.Query(qctx, c, "ws_get_messages", arg)
	p.m.pollLatency.Observe(time.Since(start).Seconds())
	if err != nil {
		// A reject is an answer: the IC is reachable, only this canister fails.
		var re *icclient.RejectError
		p.notePoll(errors.As(err, &re))
		return protocol.CanisterOutputCertifiedMessages{}, fmt.Errorf("ws_get_messages(%d): %w", nonce, err)
	}
	p.notePoll(true)
	res, err = protocol.DecodeGetMessagesResult(reply)
	if err == nil {
		err = p.checkAnswer(res)
	}
	switch {
	case errors.Is(err, protocol.ErrGetMessagesRefused):
		return protocol.CanisterOutputCertifiedMessages{}, &canisterError{fmt.Errorf("ws_get_messages(%d): %w", nonce, err)}
	case err != nil:
		return protocol.CanisterOutputCertifiedMessages{}, &decodeError{fmt.Errorf("ws_get_messages(%d): %w", nonce, err)}
	}
	stagetrace.Mark(ctx, p.log, stagetrace.PollerPolled)
	return res, nil
}

// maxMessageKeyBytes bounds a canister message key: the CDK writes the gateway's principal text
// (at most 63 bytes), '_' and a 20-digit nonce. The key goes into every frame and Nats-Msg-Id.
const maxMessageKeyBytes = 128

// checkAnswer refuses a ws_get_messages answer that no canister following the protocol gives,
// before any of it is published: a certificate above ICWS_POLL_MAX_CERT_BYTES (each frame carries
// it), a message key that is not "<gateway>_<nonce>" of a sensible length, or nonces that do not
// increase or leave no next nonce for the cursor.
func (p *Poller) checkAnswer(res protocol.CanisterOutputCertifiedMessages) error {
	if len(res.Cert) > int(p.cfg.MaxCertBytes) {
		return fmt.Errorf("a certificate of %d bytes, above ICWS_POLL_MAX_CERT_BYTES (%d)", len(res.Cert), p.cfg.MaxCertBytes)
	}
	var prev uint64
	for i, m := range res.Messages {
		if len(m.Key) > maxMessageKeyBytes {
			return fmt.Errorf("message %d: a key of %d bytes, above %d", i, len(m.Key), maxMessageKeyBytes)
		}
		nonce, err := protocol.MessageKeyNonce(m.Key)
		switch {
		case err != nil:
			return fmt.Errorf("message %d: %w", i, err)
		case nonce == math.MaxUint64:
			return fmt.Errorf("message %d: nonce %d leaves no next nonce", i, nonce)
		case i > 0 && nonce <= prev:
			return fmt.Errorf("message %d: nonce %d after %d", i, nonce, prev)
		}
		prev = nonce
	}
	return nil
}

type decodeError struct{ error }

func (e *decodeError) Unwrap() error { return e.error }

type canisterError struct{ error }

func (e *canisterError) Unwrap() error { return e.error }

type published struct {
	nonce uint64
	key   string
	hash  string
}

// publish writes the messages of run, answers fetch checked, to ICWS_OUT in order and waits for
// every PubAck. It returns how many canister messages it published and the last one. A message
// whose content cannot be read is skipped (the client could not verify it either). Each frame
// carries its answer's certificate and its own message's witness cut from its answer's tree
// (protocol.BatchFrames). A client's frames of the run are stored as one stream message
// (outGroup), since JetStream's cost is per stored message far more than per byte. Frames are
// published in parts of at most ICWS_POLL_PUBLISH_BATCH_BYTES, each acknowledged before the next
// is built.
func (p *Poller) publish(ctx context.Context, canister string, epoch uint64, run []answer) (int, published, error) {
	part := outPart{canister: canister, epoch: strconv.FormatUint(epoch, 10), limit: p.frameLimit()}
	if arena, ok := p.arenas.Get().(*[]byte); ok {
		part.arena = *arena
	}
	defer func() {
		arena := part.arena[:0]
		p.arenas.Put(&arena)
	}()
	var sent int
	tokens := make(map[clientKeyID]string) // a batch holds few clients; Token encodes a principal
	var last published
	var lastSum [32]byte // of last; hex-encoded once, after the loop
	var prev *uint64
	gaps := 0
	for _, a := range run {
		frames := protocol.NewBatchFrames(a.res.Cert, a.res.Tree)
		for _, m := range a.msgs {
			nonce, _ := protocol.MessageKeyNonce(m.Key) // fetch checked every key (checkAnswer)
			if prev != nil && nonce != *prev+1 {
				gaps++
			}
			prev = &nonce
			sum := sha256.Sum256(m.Content)
			last, lastSum = published{nonce: nonce, key: m.Key}, sum
			wm, err := protocol.DecodeWebsocketMessageCBOR(m.Content)
			if err != nil {
				p.m.errors.WithLabelValues(errKindBadContent).Inc()
				p.log.Error("skipping canister message whose content is not a WebsocketMessage", "canister", canister, "key", m.Key, "err", err)
				continue
			}
			id := clientKeyID{principal: string(m.ClientKey.ClientPrincipal.Raw), nonce: m.ClientKey.ClientNonce}
			token, ok := tokens[id]
			if !ok {
				token = m.ClientKey.Token()
				tokens[id] = token
			}
			start := len(part.arena)
			part.arena = frames.AppendFrame(part.arena, m.Key, m.Content)
			frame := part.arena[start:]
			if len(frame) > part.limit {
				part.arena = part.arena[:start]
				// JetStream would refuse it on every retry and stall the canister's other clients.
				// The client sees a sequence gap and closes; nothing else is held up.
				p.m.errors.WithLabelValues(errKindTooLarge).Inc()
				p.log.Error("skipping canister message larger than the stream accepts", "canister", canister, "key", m.Key,
					"client", token, "frame_bytes", len(frame), "limit_bytes", part.limit)
				continue
			}
			if start > 0 && len(part.arena) > int(p.cfg.PublishBatchBytes) {
				// The part is full without this frame: publish it, and this frame starts the next.
				frame = bytes.Clone(frame)
				part.arena = part.arena[:start]
				if err := p.publishOrdered(ctx, part.messages()); err != nil {
					return 0, last, err
				}
				sent += part.frames
				part.reset()
				start = 0
				part.arena = append(part.arena, frame...)
			}
			part.add(id, token, outEntry{seq: wm.SequenceNum, nonce: nonce, key: m.Key, sum: sum}, start)
		}
	}
	if gaps > 0 {
		p.m.errors.WithLabelValues(errKindGap).Add(float64(gaps))
		p.log.Warn("non-consecutive nonces in one batch", "canister", canister, "gaps", gaps, "last_nonce", last.nonce)
	}
	if last.key != "" {
		last.hash = hex.EncodeToString(lastSum[:])
	}
	if err := p.publishOrdered(ctx, part.messages()); err != nil {
		return 0, last, err
	}
	stagetrace.Mark(ctx, p.log, stagetrace.PollerPublished)
	return sent + part.frames, last, nil
}

// clientKeyID identifies a client key within one batch.
type clientKeyID struct {
	principal string
	nonce     uint64
}

// outEntry is one canister message about to be stored.
type outEntry struct {
	seq, nonce uint64
	key        string
	sum        [sha256.Size]byte // of the message's content
}

// outGroup is one ICWS_OUT message: frames of one client, in the order of their nonces.
type outGroup struct {
	token     string
	first     outEntry
	lastNonce uint64
	frames    []frameRef
	size      int       // encoded size of frames
	sums      hash.Hash // over every content's sha256, from the second frame on
}

// frameRef is a frame cut into outPart.arena.
type frameRef struct {
	seq        uint64
	start, end int
}

// outPart is the frames of one part of a run of answers, grouped by client in the order each
// client's first frame came, so every client's frames keep their order and stream messages their
// nonce order.
type outPart struct {
	canister, epoch string
	limit           int    // largest stream message data
	arena           []byte // the part's frames, cut one after the other; reused across polls
	open            map[clientKeyID]*outGroup
	groups          []*outGroup
	frames          int
}

// add puts the frame arena[start:] into the group of client id, or into a new group if it would
// not fit or its sequence number does not follow the group's (a group holds rising sequence
// numbers above zero, or one frame: a canister that breaks the order costs the client that frame,
// as before grouping, not its neighbours).
func (pt *outPart) add(id clientKeyID, token string, e outEntry, start int) {
	n := len(pt.arena) - start
	g := pt.open[id]
	if g == nil || g.size+n+bus.OutFrameOverhead > pt.limit || len(g.frames) == bus.MaxOutFrames ||
		!(0 < g.frames[len(g.frames)-1].seq && g.frames[len(g.frames)-1].seq < e.seq) {
		g = &outGroup{token: token, first: e}
		if pt.open == nil {
			pt.open = make(map[clientKeyID]*outGroup)
		}
		pt.open[id] = g
		pt.groups = append(pt.groups, g)
	}
	switch len(g.frames) {
	case 0:
	case 1:
		g.sums = sha256.New()
		g.sums.Write(g.first.sum[:])
		fallthrough
	default:
		g.sums.Write(e.sum[:])
	}
	g.frames = append(g.frames, frameRef{seq: e.seq, start: start, end: len(pt.arena)})
	g.size += n + bus.OutFrameOverhead
	g.lastNonce = e.nonce
	pt.frames++
}

func (pt *outPart) reset() {
	clear(pt.open)
	pt.groups = pt.groups[:0]
	pt.arena = pt.arena[:0]
	pt.frames = 0
}

// messages builds the part's stream messages, each in a buffer of its own (an asynchronous
// publish may still hold one after the part is reset). One frame is stored as itself, several as
// bus.AppendOutFrame records with their count in Icws-Frames; either way Icws-Seq and Icws-Nonce
// are the first frame's. The Nats-Msg-Id names the first message's key, and for several the last
// nonce and a hash over every content, so the same run published again is dropped as a duplicate.
func (pt *outPart) messages() []*nats.Msg {
	out := make([]*nats.Msg, 0, len(pt.groups))
	for _, g := range pt.groups {
		// One map literal, sized once, instead of an empty map grown by Header.Set calls.
		h := nats.Header{
			bus.HeaderSeq:       {strconv.FormatUint(g.first.seq, 10)},
			bus.HeaderNonce:     {strconv.FormatUint(g.first.nonce, 10)},
			bus.HeaderClientKey: {g.token},
			bus.HeaderEpoch:     {pt.epoch},
		}
		var data []byte
		if len(g.frames) == 1 {
			data = bytes.Clone(pt.arena[g.frames[0].start:g.frames[0].end])
			h[bus.HeaderMsgID] = []string{pt.canister + "." + g.first.key + "." + hex.EncodeToString(g.first.sum[:16])}
		} else {
			data = make([]byte, 0, g.size)
			for _, f := range g.frames {
				data = bus.AppendOutFrame(data, f.seq, pt.arena[f.start:f.end])
			}
			h[bus.HeaderFrames] = []string{strconv.Itoa(len(g.frames))}
			h[bus.HeaderMsgID] = []string{pt.canister + "." + g.first.key + "." + strconv.FormatUint(g.lastNonce, 10) + "." + hex.EncodeToString(g.sums.Sum(nil)[:16])}
		}
		out = append(out, &nats.Msg{Subject: bus.OutSubject(pt.canister, g.token), Data: data, Header: h})
	}
	return out
}

// publishOrdered publishes asynchronously (one connection keeps the order) and waits for all acks.
// If any publish fails, the whole batch is sent again synchronously: JetStream drops the copies of
// those already stored by their Nats-Msg-Id.
func (p *Poller) publishOrdered(ctx context.Context, msgs []*nats.Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var asyncErr error
	for _, m := range msgs {
		f, err := p.deps.JS.PublishMsgAsync(m)
		if err != nil {
			asyncErr = err
			break
		}
		futures = append(futures, f)
	}
	if asyncErr == nil {
		timer := time.NewTimer(p.cfg.PublishTimeout)
		defer timer.Stop()
	wait:
		for i, f := range futures {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					p.announce(msgs[i])
				}
			case err := <-f.Err():
				asyncErr = err
				break wait
			case <-timer.C:
				asyncErr = errors.New("timed out waiting for PubAcks")
				break wait
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if asyncErr == nil {
		return nil
	}
	p.log.Warn("async publish failed; re-publishing the batch synchronously", "err", asyncErr)
	for _, m := range msgs {
		pctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
		ack, err := p.deps.JS.PublishMsg(pctx, m)
		cancel()
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		if ack.Duplicate {
			p.announce(m)
		}
	}
	return nil
}

// announce publishes a message ICWS_OUT already held on its live subject. The stream re-publishes
// a message only as its leader stores it, so a copy stored by an earlier attempt whose leader lost
// office before re-publishing it (the attempt then times out, and this one is acknowledged as a
// duplicate) would reach no edge; a client with nothing after it would wait for it for good, since
// only a later message shows an edge the gap. Edges drop what they delivered already (Icws-Seq).
func (p *Poller) announce(m *nats.Msg) {
	live, ok := bus.LiveSubjectOf(m.Subject)
	if !ok {
		return
	}
	if err := p.deps.NC.PublishMsg(&nats.Msg{Subject: live, Header: m.Header, Data: m.Data}); err != nil {
		p.log.Warn("announce a message already stored", "subject", live, "err", err)
		return
	}
	frames := 1
	if n, err := strconv.Atoi(m.Header.Get(bus.HeaderFrames)); err == nil {
		frames = n
	}
	p.m.announced.Add(float64(frames))
}

func contentHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// loadCursor reads a canister's cursor from the cursors bucket's leader: a lagging replica's copy
// would make the new active poller publish again what the last one published (or, without any
// copy, the whole queue), and fail its first cursor write.
func loadCursor(ctx context.Context, nc *nats.Conn, canister string) (bus.CursorRecord, uint64, error) {
	val, rev, err := bus.GetFromLeader(ctx, nc, bus.BucketCursors, canister)
	if err != nil {
		return bus.CursorRecord{}, 0, fmt.Errorf("read cursor %s: %w", canister, err)
	}
	if val == nil {
		return bus.CursorRecord{}, 0, nil
	}
	rec, err := decodeCursor(val)
	if err != nil {
		return bus.CursorRecord{}, rev, fmt.Errorf("cursor %s: %w", canister, err)
	}
	return rec, rev, nil
}

// decodeCursor reads a cursor's JSON value; one no poller writes is errCorruptCursor.
func decodeCursor(val []byte) (bus.CursorRecord, error) {
	var rec bus.CursorRecord
	if err := json.Unmarshal(val, &rec); err != nil {
		return bus.CursorRecord{}, fmt.Errorf("%w: %w", errCorruptCursor, err)
	}
	if rec.NextNonce > 0 && rec.LastKey == "" {
		// Every poller that moves a cursor past a message records that message's key: without
		// it a reset of the canister's queue could not be recognised.
		return bus.CursorRecord{}, fmt.Errorf("%w: next nonce %d without the last message's key", errCorruptCursor, rec.NextNonce)
	}
	return rec, nil
}

// errCorruptCursor means a cursor no poller writes. Its canister is polled from its first retained
// message, as after a queue reset (edges drop what they delivered already), and the first cursor
// write replaces it at its revision.
var errCorruptCursor = errors.New("corrupt cursor")

func saveCursor(ctx context.Context, kv jetstream.KeyValue, canister string, rec bus.CursorRecord, rev uint64) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	var newRev uint64
	if rev == 0 {
		newRev, err = kv.Create(ctx, canister, b)
	} else {
		newRev, err = kv.Update(ctx, canister, b, rev)
	}
	if bus.IsConflict(err) {
		return 0, fmt.Errorf("cursor %s: %w", canister, errCursorConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("write cursor %s: %w", canister, err)
	}
	return newRev, nil
}

// waitNextPoll waits until Interval after the last poll started, or until a kick arrives. Kicked
// polls spend kicks, a bucket refilled at one per KickGap up to KickBurst: an echo-style exchange
// (a kick per round trip) polls at once, while a stream of kicks cannot turn into a busy loop. It
// reports whether ctx is still alive.
func (p *Poller) waitNextPoll(ctx context.Context, lastStart time.Time, kick <-chan struct{}, kicks *tokenbucket.Bucket) bool {
	t := time.NewTimer(max(p.cfg.Interval-time.Since(lastStart), 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-kick:
		stagetrace.Mark(ctx, p.log, stagetrace.PollerKicked)
		if p.cfg.KickGap <= 0 {
			return ctx.Err() == nil
		}
		return sleep(ctx, kicks.Reserve(time.Now(), 1, 1/p.cfg.KickGap.Seconds(), float64(p.cfg.KickBurst)))
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
