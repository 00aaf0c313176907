package edge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// takeoverWait bounds the wait for the previous edge to stop relaying a resumed session.
const takeoverWait = 500 * time.Millisecond

// edgeMissedRenewal reports whether edge id has not written its liveness lease for two renewal
// periods (a renewal is due every third of the lease's TTL, which edges share): it is dead, hung
// or cut off, and would not answer a request. When that cannot be told it reports false.
func (e *Edge) edgeMissedRenewal(ctx context.Context, id string) bool {
	ent, err := e.h.Leases.Get(ctx, bus.EdgeLeaseKey(id))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return true
	case err != nil:
		return false
	}
	return time.Since(ent.Created()) > 2*e.cfg.LeaseTTL/3
}

// resume handles an icws_resume first frame (docs/RESUME.md). On success the session is bound to
// this connection, {icws_resumed} and the replay are under way, and it returns true.
func (c *conn) resume(req *protocol.ResumeRequest) bool {
	start := time.Now()
	fail := func(why string) bool {
		c.e.m.resumes.WithLabelValues("not_resumable").Inc()
		c.reject(CloseNotResumable, notResumablePrefix+why, "not_resumable")
		return false
	}
	if !c.resumeOpt {
		return fail("the connection did not opt in (icws-resume=1)")
	}
	if len(req.CanisterID) == 0 || len(req.CanisterID) > 29 || len(req.ClientKey.ClientPrincipal) == 0 || len(req.ClientKey.ClientPrincipal) > 29 {
		return fail("resume frame without a valid canister_id or client_key")
	}
	canister := principal.Principal{Raw: req.CanisterID}
	if len(c.e.canisters) > 0 && !c.e.canisters[canister.Encode()] {
		c.reject(websocket.ClosePolicyViolation, "icws: canister not allowed: "+canister.Encode(), "rejected")
		return false
	}
	c.bind(canister, protocol.ClientKey{ClientPrincipal: principal.Principal{Raw: req.ClientKey.ClientPrincipal}, ClientNonce: req.ClientKey.ClientNonce})
	c.bound = false // until the record is ours, nothing needs undoing
	sum := sha256.Sum256(req.Token)
	presented := hex.EncodeToString(sum[:])

	var prev bus.SessionRecord
	// Reads and the compare-and-set are retried in short attempts through a NATS reconnect or a
	// leader election (a refused resume would cost the client its reconnect backoff on top).
	deadline := time.Now().Add(c.e.busOutage())
	backoff := 20 * time.Millisecond
	unavailable := func(what string, err error) bool {
		if time.Now().Before(deadline) && !c.isGone() {
			time.Sleep(backoff)
			backoff = min(backoff*2, 500*time.Millisecond)
			return false
		}
		c.e.m.resumes.WithLabelValues("error").Inc()
		c.e.log.Warn("resume: "+what, "session", c.key, "err", err)
		c.reject(websocket.CloseInternalServerErr, "icws: gateway unavailable", "error")
		return true
	}
	for rebound, putTried, fromLeader := false, false, false; !rebound; {
		ctx, cancel := context.WithTimeout(context.Background(), busAttempt)
		read := c.e.sessions.Get
		if fromLeader {
			read = c.e.sessions.GetLatest
		}
		rec, rev, err := read(ctx, c.key)
		if errors.Is(err, bus.ErrCorruptSessionRecord) {
			cancel()
			c.e.log.Warn("resume refused: the session record is corrupt", "err", err)
			return fail("unknown session")
		}
		if err != nil {
			cancel()
			if unavailable("read session", err) {
				return false
			}
			continue
		}
		if putTried && rec != nil && rec.Edge == c.e.cfg.ID && rec.TokenHash == c.tokenHash && rec.State == bus.SessionOpen {
			// Our compare-and-set landed although its answer did not: prev is what it replaced.
			cancel()
			break
		}
		var refusal string
		switch {
		case rec == nil:
			refusal = "unknown session"
			if why, failed := c.e.canisterFailedFor(c.canText, time.Time{}); failed {
				refusal = why // the likely end of the session: say why
			}
		case !rec.Resumable:
			refusal = "session did not opt in to resume"
		case subtle.ConstantTimeCompare([]byte(presented), []byte(rec.TokenHash)) != 1:
			refusal = "wrong token"
		case rec.State == bus.SessionClosed:
			refusal = "session closed"
		case rec.State == bus.SessionDetached && time.Since(rec.DetachedAt) >= c.e.cfg.ResumeGrace:
			refusal = "grace period over"
		}
		if refusal != "" {
			cancel()
			if !fromLeader && rec != nil {
				// A replica's copy may be older than the client's last resume (another token): a
				// refusal rests on the bucket's leader (Get asked it already when it found none).
				fromLeader = true
				continue
			}
			return fail(refusal)
		}
		if why, failed := c.e.canisterFailedFor(c.canText, rec.OpenedAt); failed {
			cancel()
			return fail(why)
		}
		if last, err := c.e.h.Out.GetLastMsgForSubject(ctx, c.outSubject()); err == nil && last.Sequence >= rec.OutFrom {
			if top, ok := topSeqOf(last.Header, last.Data); ok && req.LastSeq > top {
				// A poller that lost its lease may have stored an older group after a newer
				// one: a refusal rests on every message stored for the session.
				top, err := c.e.highestStoredSeq(ctx, c.outSubject(), rec.OutFrom, req.LastSeq)
				if err != nil {
					cancel()
					if unavailable("read the stored canister messages", err) {
						return false
					}
					continue
				}
				if req.LastSeq > top {
					cancel()
					return fail("last_seq " + strconv.FormatUint(req.LastSeq, 10) + " is above the highest stored sequence number " + strconv.FormatUint(top, 10))
				}
			}
		} else if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
			// Nothing stored for this session: the client cannot have verified anything the
			// gateway delivered.
			if req.LastSeq > 0 {
				cancel()
				return fail("last_seq " + strconv.FormatUint(req.LastSeq, 10) + " is above the highest stored sequence number 0")
			}
		} else {
			cancel()
			if unavailable("read the last canister message", err) {
				return false
			}
			continue
		}
		prev = *rec
		rec.State, rec.Edge, rec.TokenHash, rec.DetachedAt = bus.SessionOpen, c.e.cfg.ID, c.tokenHash, time.Time{}
		putTried = true
		_, err = c.e.sessions.Put(ctx, rec, rev)
		if f := c.e.testLosePutAnswer.Load(); err == nil && f != nil && (*f)() {
			err = context.DeadlineExceeded
		}
		cancel()
		if err == nil {
			rebound = true
		} else if unavailable("take the session record", err) {
			return false
		}
	}
	if prev.Partition >= c.e.h.Partitions {
		// ICWS_PARTITIONS was lowered (ICWS_STREAM_REPARTITION) since the session opened: nobody
		// consumes its partition any more.
		return fail("the gateway was repartitioned since the session opened")
	}
	c.bound = true
	c.sessTag = prev.Tag()
	c.openedAt = prev.OpenedAt
	if prev.Confirmed {
		c.confirm()
	}
	c.partition = prev.Partition
	c.inSubj = bus.InSubject(prev.Partition, c.canText, c.clientTok)

	// The old connection must stop relaying before we read the last accepted client sequence
	// number, so everything it relayed is counted and nothing of it lands after our relays.
	if prev.State == bus.SessionOpen {
		if prev.Edge == c.e.cfg.ID {
			c.e.mu.RLock()
			old := c.e.byKey[c.key]
			c.e.mu.RUnlock()
			if old != nil && old != c {
				old.dropResumedElsewhere()
			}
		} else {
			m := nats.NewMsg(bus.EdgeControlSubject(prev.Edge))
			m.Data = []byte(c.key)
			m.Header.Set(bus.HeaderTokenHash, c.tokenHash)
			// No answer is fine: a dead edge has nothing in flight, and whatever a hung or cut-off
			// one relays late carries the Msg-Id of a message the client re-sends after our
			// answer, so the stream drops the later of the two. Waiting longer would only add to
			// the silence of a client that left a hung edge, and an edge that has missed a lease
			// renewal is not waited for at all.
			lctx, cancel := context.WithTimeout(context.Background(), takeoverWait)
			stale := c.e.edgeMissedRenewal(lctx, prev.Edge)
			cancel()
			if stale {
				_ = c.e.nc.PublishMsg(m)
			} else {
				_, _ = c.e.nc.RequestMsg(m, takeoverWait)
			}
		}
	}
	var lastClient uint64
	err := c.retryBus("read the last client message", func(ctx context.Context) error {
		m, err := c.e.h.In.GetLastMsgForSubject(ctx, c.inSubj)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil
		case err != nil:
			return err
		}
		if m.Header.Get(bus.HeaderKind) == bus.KindMessage {
			lastClient, _ = strconv.ParseUint(m.Header.Get(bus.HeaderClientSeq), 10, 64)
		}
		return nil
	})
	if err != nil {
		c.e.log.Warn("resume: read last client message", "session", c.key, "err", err)
		c.e.m.resumes.WithLabelValues("error").Inc()
		c.closeWith(websocket.CloseInternalServerErr, "icws: gateway unavailable")
		c.teardown("resume failed")
		return false
	}
	resumed, err := protocol.ResumedAnswer{LastClientSeq: lastClient}.Encode()
	if err != nil {
		c.closeWith(websocket.CloseInternalServerErr, "icws: internal error")
		c.teardown("resume failed")
		return false
	}
	// Race-free replay: the live subscription buffers (filling = true) before history is read.
	c.dmu.Lock()
	c.next = req.LastSeq + 1
	c.readFrom = prev.OutFrom
	c.filling = true
	c.resumedFrame = resumed
	c.resumeStart = start
	c.dmu.Unlock()
	if err := c.subscribe(); err != nil {
		c.e.log.Warn("resume: subscribe", "session", c.key, "err", err)
		c.closeWith(websocket.CloseInternalServerErr, "icws: gateway unavailable")
		c.teardown("resume failed")
		return false
	}
	c.e.m.resumes.WithLabelValues("ok").Inc()
	c.e.m.connectionsTotal.WithLabelValues("resume").Inc()
	c.e.log.Debug("session resumed", "client", c.clientTok, "canister", c.canText, "last_seq", req.LastSeq,
		"last_client_seq", lastClient, "previous_edge", prev.Edge, "previous_state", prev.State, "remote", c.remote)
	go c.fill()
	return true
}
