package edge

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/safe"
	"github.com/icws/icws/internal/stagetrace"
	"github.com/icws/icws/internal/textlimit"
	"github.com/icws/icws/internal/tokenbucket"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Close codes of the icws extension (docs/RESUME.md).
const (
	CloseNotResumable      = protocol.CloseNotResumable
	CloseSlowClient        = protocol.CloseSlowClient
	CloseResumedElsewhere  = protocol.CloseResumedElsewhere
	closeGrace             = time.Second // how long we wait for the client's close reply
	reasonSlowClient       = "icws: slow client"
	reasonResumedElsewhere = "icws: session resumed elsewhere"
	notResumablePrefix     = "icws: not resumable: "
)

// conn is one client socket and, once bound, its session.
type conn struct {
	e         *Edge
	ws        *websocket.Conn
	out       *frameBatcher // ws's network connection; batches the writer's frames
	remote    string
	resumeOpt bool
	heartbeat bool   // the client asked for heartbeats (resume opt-in only)
	tokenHash string // sha256 hex of this connection's handshake token (resume opt-in only)

	// Liveness (liveness.go): the slot is fixed when the connection is added; pingSentAt belongs
	// to the edge-wide walk; ready says the handshake is out, so the send queue may write.
	slot       int
	pingSentAt int64
	ready      atomic.Bool
	lastSeen   atomic.Int64 // unix ns of the client's last frame, pong or ping; readerBusy while relaying
	lastSent   atomic.Int64 // unix ns of the last frame written to the client

	// Set once when the session is bound (open or resume), read-only afterwards.
	bound     bool
	canister  principal.Principal
	canText   string
	client    protocol.ClientKey
	clientTok string
	key       string
	partition int
	inSubj    string
	principal string // client principal text
	sessTag   string // SessionRecord.Tag of the session, part of every Nats-Msg-Id
	openedAt  time.Time
	liveSub   *liveSub   // the subscription carrying the session's live messages (guarded by Edge.mu)
	rd        connReader // the read side shared with gorilla (zero: gorilla reads alone)
	done      func()     // ends the connection's life on the edge, once its reader is finished

	// Waiting in the edge's idlePoller, guarded by its mutex: noPark once the socket is closing,
	// inEpoll once the socket is in the epoll set, parkToken of the current park.
	noPark    bool
	inEpoll   bool
	parkToken uint64
	addr      string // client address the connection is counted under
	counted   bool   // counted in Edge.byPrincipal (guarded by Edge.mu)

	// confirmed is closed once the IC has executed the session's ws_open; until then the
	// client's messages wait (the session has no effect beyond this socket).
	confirmed   chan struct{}
	confirmOnce sync.Once

	// pubMu is held while relaying one envelope, so a drop can wait until nothing is in flight.
	pubMu    sync.Mutex
	rate     tokenbucket.Bucket // client messages (reader goroutine only)
	byteRate tokenbucket.Bucket // client bytes (reader goroutine only)
	// msgSince is when the bytes of the message being read began to arrive (unix ns), 0 between
	// messages (ratelimit.go).
	msgSince atomic.Int64
	// frames follows the client's frame boundaries; firstRead is set once the first frame has
	// been read and preOpen counts what was read before (ratelimit.go; reader goroutine only).
	frames    frameMeter
	firstRead bool
	preOpen   int
	// unfinished is what this connection adds to Edge.unfinished: the bytes read since its last
	// complete message (ratelimit.go; reader goroutine only).
	unfinished int64
	// discardOnClose: the client does not read (slow, unresponsive, a write failed); closing the
	// socket discards what it has not read (discardUnsent).
	discardOnClose atomic.Bool

	delivery
	sendq

	closeOnce sync.Once
	gone      chan struct{} // closed when the edge decided to close the socket
	closeSent chan struct{} // closed once our close frame is written (or failed)
	cmu       sync.Mutex
	closeCode int
	closeText string
	// forceClose: when the socket is gone the session must be closed rather than detached.
	forceClose bool
}

func (c *conn) closeInfo() (code int, reason string, force bool) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return c.closeCode, c.closeText, c.forceClose
}

func (c *conn) setClose(code int, reason string) {
	c.cmu.Lock()
	c.closeCode, c.closeText = code, reason
	c.cmu.Unlock()
}

func newConn(e *Edge, ws *websocket.Conn, r *http.Request) *conn {
	q := r.URL.Query()
	c := &conn{
		e: e, ws: ws, remote: r.RemoteAddr, resumeOpt: q.Get(protocol.ResumeQueryParam) == "1",
		gone: make(chan struct{}), closeSent: make(chan struct{}), confirmed: make(chan struct{}),
	}
	c.heartbeat = c.resumeOpt && q.Get(protocol.HeartbeatQueryParam) == "1"
	now := time.Now().UnixNano()
	c.lastSeen.Store(now)
	c.lastSent.Store(now)
	c.sendq.limit = e.cfg.SendQueue
	c.sendq.maxB = e.cfg.SendQueueBytes
	return c
}

// closeWith closes the socket from the edge's side with a code and reason: queued frames are
// dropped, the close frame is written, and the reader gets closeGrace to see the client's reply.
func (c *conn) closeWith(code int, reason string) {
	if code == CloseSlowClient || code == CloseUnresponsive {
		c.discardOnClose.Store(true)
	}
	c.closeOnce.Do(func() {
		c.setClose(code, reason)
		c.stopQueue()
		close(c.gone)
		c.e.idle.release(c) // its reader waits for the client's close reply
		go func() {
			_ = c.ws.WriteControl(websocket.CloseMessage, closePayload(code, reason), time.Now().Add(c.e.cfg.WriteTimeout))
			_ = c.ws.SetReadDeadline(time.Now().Add(closeGrace))
			close(c.closeSent)
		}()
	})
}

// drainAfterClose reads and discards what the client still sends after our close frame, until its
// own close frame arrives or closeGrace runs out: closing a socket with unread data makes the
// kernel answer with a reset, which can destroy our close frame, and its reason, before the client
// reads it.
func (c *conn) drainAfterClose() string {
	_, reason, _ := c.closeInfo()
	<-c.closeSent // the read deadline is set once the close frame is written
	for {
		_, _, err := c.ws.ReadMessage()
		c.messageRead()
		if err != nil {
			return reason
		}
	}
}

func (c *conn) isGone() bool {
	select {
	case <-c.gone:
		return true
	default:
		return false
	}
}

// reject closes the socket during the first-frame phase (nothing is bound yet).
func (c *conn) reject(code int, reason string, outcome string) {
	c.e.m.connectionsTotal.WithLabelValues(outcome).Inc()
	c.e.log.Debug("first frame rejected", "remote", c.remote, "code", code, "reason", reason)
	c.closeOnce.Do(func() {
		c.setClose(code, reason)
		close(c.gone)
		_ = c.ws.WriteControl(websocket.CloseMessage, closePayload(code, reason), time.Now().Add(c.e.cfg.WriteTimeout))
		close(c.closeSent)
	})
}

// closePayload keeps the reason within the 123 bytes a close frame allows, as valid UTF-8: some
// reasons come from a canister (a refused ws_open) or another role.
func closePayload(code int, reason string) []byte {
	return websocket.FormatCloseMessage(code, textlimit.Cut(reason, 123))
}

// closeSocket closes the TCP connection, after our close frame if one is being written.
func (c *conn) closeSocket() {
	if c.isGone() {
		select {
		case <-c.closeSent:
		case <-time.After(c.e.cfg.WriteTimeout):
		}
	}
	if c.discardOnClose.Load() {
		c.discardUnsent()
	}
	_ = c.ws.Close()
}

// discardUnsent makes closing the socket drop what the kernel still holds for the client (a reset
// instead of a graceful end): a client that does not read would otherwise keep its socket's send
// buffer, megabytes, for minutes after the edge let go of it, beyond every limit the edge counts.
func (c *conn) discardUnsent() {
	if c.out == nil {
		return
	}
	nc := c.out.Conn
	if t, ok := nc.(interface{ NetConn() net.Conn }); ok { // behind the edge's own TLS
		nc = t.NetConn()
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// start sends the handshake and handles the first frame on the HTTP handler's goroutine. It
// returns true when a session is bound; the caller then runs the reader on a fresh goroutine, so
// net/http's request state and the stack grown while opening are released for idle sessions.
func (c *conn) start() bool {
	// Until the client is known, a frame may be as large as a ws_open envelope or a resume
	// request needs: any larger one is not read into memory.
	c.ws.SetReadLimit(min(c.e.cfg.MaxFirstFrameBytes, c.e.cfg.MaxMessageBytes))
	c.ws.SetPongHandler(c.onPong)
	c.ws.SetPingHandler(c.onPing)
	hs := c.e.handshake
	if c.resumeOpt {
		token := make([]byte, 32)
		if _, err := rand.Read(token); err != nil {
			c.reject(websocket.CloseInternalServerErr, "icws: internal error", "error")
			return false
		}
		sum := sha256.Sum256(token)
		c.tokenHash = hex.EncodeToString(sum[:])
		var err error
		offer := &protocol.ResumeOffer{Version: protocol.ResumeVersion, Token: token}
		if c.heartbeat {
			offer.HeartbeatMillis = uint64(c.e.cfg.HeartbeatInterval.Milliseconds())
		}
		if hs, err = (protocol.GatewayHandshake{GatewayPrincipal: c.e.gateway.Raw, Resume: offer}).Encode(); err != nil {
			c.reject(websocket.CloseInternalServerErr, "icws: internal error", "error")
			return false
		}
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.e.cfg.WriteTimeout))
	if err := c.ws.WriteMessage(websocket.BinaryMessage, hs); err != nil {
		c.e.m.connectionsTotal.WithLabelValues("gone").Inc()
		return false
	}
	c.e.m.framesOut.Inc()
	c.e.m.bytesOut.Add(float64(len(hs)))
	c.lastSent.Store(time.Now().UnixNano())
	// From here on only the send queue writes (pings and heartbeats included).
	c.ready.Store(true)

	_ = c.ws.SetReadDeadline(time.Now().Add(c.e.cfg.OpenTimeout))
	typ, frame, err := c.ws.ReadMessage()
	c.messageRead()
	c.firstRead = true
	if err != nil {
		c.readFailed(err, true)
		return false
	}
	c.markBusy() // until the reader loop reads again
	c.e.m.framesIn.Inc()
	c.e.m.bytesIn.Add(float64(len(frame)))
	if typ != websocket.BinaryMessage {
		c.reject(websocket.CloseUnsupportedData, "icws: text frames are not supported", "rejected")
		return false
	}
	ff, err := protocol.DecodeFirstFrame(frame)
	if err != nil {
		c.reject(websocket.CloseProtocolError, "icws: undecodable frame: "+short(err), "rejected")
		return false
	}
	_ = c.ws.SetReadDeadline(time.Time{})
	c.ws.SetReadLimit(c.e.cfg.MaxMessageBytes)
	if ff.Resume != nil {
		return c.resume(ff.Resume)
	}
	return c.open(frame)
}

// onPong notes a client's pong. Pongs, and pings, count against the client's message rate: each
// costs a read and a wake-up, and a ping a pong too; a client answering the edge's pings sends one
// every ICWS_PING_INTERVAL.
func (c *conn) onPong(string) error {
	c.markSeen()
	if !c.rate.Take(time.Now(), 1, c.e.cfg.MaxClientRate, float64(c.e.cfg.MaxClientBurst)) {
		c.closeWith(websocket.ClosePolicyViolation, reasonRateExceeded)
		return errRateExceeded
	}
	return nil
}

// onPing answers a client's ping.
func (c *conn) onPing(data string) error {
	if err := c.onPong(data); err != nil {
		return err
	}
	err := c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.e.cfg.WriteTimeout))
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		return err
	}
	return nil
}

// readMessage returns the client's next data message, taking the pings and pongs before it
// itself (idleread.go). It returns type 0 when it took pings or pongs and nothing more is buffered.
func (c *conn) readMessage() (int, []byte, error) {
	for c.rd.br != nil {
		took, err := c.rd.takeControl(c.onPing, c.onPong)
		if err != nil {
			return 0, nil, err
		}
		if !took {
			break
		}
		c.messageRead()
		if c.rd.idle() {
			return 0, nil, nil
		}
	}
	typ, frame, err := c.ws.ReadMessage()
	c.messageRead()
	return typ, frame, err
}

// serve relays the client's frames until the connection waits idle (parked, or handed to a fresh
// goroutine) or the socket ends; then it ends or detaches the session and calls done. ready says
// the socket is readable or closing: read before waiting. A panic closes the connection (1011).
func (c *conn) serve(ready bool) {
	ended := true
	defer func() {
		if ended {
			c.done()
		}
	}()
	defer safe.Recover(c.e.log, c.e.m.panics.WithLabelValues("read"), "connection", func() {
		c.closeWith(websocket.CloseInternalServerErr, "icws: internal error")
		c.teardown("internal error")
	})
	reason, next := c.readLoop(ready)
	switch next {
	case readerParked:
		ended = false
		return
	case readerHandOff:
		ended = false
		go c.serve(false)
		return
	}
	c.teardown(reason)
}

// readFailed classifies a read error; first tells whether no session is bound yet.
func (c *conn) readFailed(err error, first bool) string {
	var ce *websocket.CloseError
	var ne interface{ Timeout() bool }
	switch {
	case errors.As(err, &ce):
		if first {
			c.e.m.connectionsTotal.WithLabelValues("gone").Inc()
		}
		return fmt.Sprintf("client closed (%d)", ce.Code)
	case errors.Is(err, errFirstFrameBytes):
		c.reject(websocket.CloseMessageTooBig, errFirstFrameBytes.Error(), "rejected")
		return "first frame too large"
	case errors.Is(err, errFrameLength):
		c.closeRead(first, websocket.CloseProtocolError, errFrameLength.Error())
		return "frame length out of range"
	case errors.Is(err, errUnfinishedBudget):
		c.closeRead(first, websocket.CloseTryAgainLater, reasonUnfinishedBudget)
		return "unfinished-message budget full"
	case errors.Is(err, errByteRateExceeded):
		c.e.m.refused.WithLabelValues("byte_rate").Inc()
		c.closeRead(first, websocket.ClosePolicyViolation, reasonByteRateExceeded)
		return "client byte rate exceeded"
	case errors.Is(err, websocket.ErrReadLimit):
		if first {
			c.e.m.connectionsTotal.WithLabelValues("rejected").Inc()
		}
		return "frame too large"
	case first && errors.As(err, &ne) && ne.Timeout():
		c.reject(websocket.ClosePolicyViolation, "icws: no first frame within the open timeout", "timeout")
		return "open timeout"
	default:
		if first {
			c.e.m.connectionsTotal.WithLabelValues("gone").Inc()
			c.e.log.Debug("no first frame", "remote", c.remote, "err", err)
		}
		return "connection lost: " + short(err)
	}
}

// closeRead closes a connection whose read failed: as a rejected first frame if nothing is bound
// yet.
func (c *conn) closeRead(first bool, code int, reason string) {
	if first {
		c.reject(code, reason, "rejected")
	} else {
		c.closeWith(code, reason)
	}
}

func short(err error) string {
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// verifyFrame decodes a client frame and verifies its envelope as the IC would (signature,
// sender, delegations, expiry window) after the caller's cheap checks, so nothing a client did
// not sign can have an effect. On failure it returns the close code and reason.
func (c *conn) verifyFrame(frame []byte, expected string, check protocol.Precheck) (protocol.Envelope, *protocol.Request, int, string) {
	env, req, err := c.e.ingress.VerifyClientFrame(frame, time.Now(), check)
	var ie *protocol.IngressError
	switch {
	case err == nil && req.Anonymous:
		c.e.m.refused.WithLabelValues("anonymous").Inc()
		return env, nil, websocket.ClosePolicyViolation, "icws: anonymous clients are not served"
	case err == nil:
		return env, req, 0, ""
	case !errors.As(err, &ie):
		return env, nil, websocket.CloseProtocolError, "icws: undecodable frame: " + short(err)
	case ie.Kind == protocol.IngressMalformed:
		return env, nil, websocket.CloseProtocolError, "icws: undecodable frame: " + short(err)
	case ie.Kind == protocol.IngressRefused:
		return env, nil, websocket.ClosePolicyViolation, "icws: " + short(err)
	case ie.Kind == protocol.IngressRequestType:
		return env, nil, websocket.ClosePolicyViolation, "icws: " + expected
	}
	c.e.m.refused.WithLabelValues("forged_envelope").Inc()
	c.e.log.Debug("envelope refused", "remote", c.remote, "kind", ie.Kind.String(), "err", err)
	return env, nil, websocket.ClosePolicyViolation, "icws: envelope refused (" + ie.Kind.String() + "): " + short(err)
}

// refusal is what a precheck returns to refuse a request with a reason the client sees.
func refusal(format string, args ...any) error {
	return &protocol.IngressError{Kind: protocol.IngressRefused, Msg: fmt.Sprintf(format, args...)}
}

// open handles a ws_open first frame. It returns true with the session bound and live.
func (c *conn) open(frame []byte) bool {
	env, req, code, reason := c.verifyFrame(frame, "first frame must be a ws_open call", func(r *protocol.Request) error {
		if r.Method != "ws_open" {
			return refusal("first frame must be a ws_open call, not %s", strconv.Quote(trunc(r.Method, 40)))
		}
		if len(c.e.canisters) > 0 && !c.e.canisters[r.Canister.Encode()] {
			return refusal("canister not allowed: %s", r.Canister.Encode())
		}
		return nil
	})
	if code != 0 {
		c.reject(code, reason, "rejected")
		return false
	}
	canister := req.Canister
	canText := canister.Encode()
	args, err := protocol.DecodeWsOpenArgs(req.Arg)
	if err != nil {
		c.reject(websocket.CloseProtocolError, "icws: ws_open argument is not CanisterWsOpenArguments", "rejected")
		return false
	}
	if !args.GatewayPrincipal.Equal(c.e.gateway) {
		c.reject(websocket.ClosePolicyViolation, "icws: ws_open names another gateway: "+args.GatewayPrincipal.Encode(), "rejected")
		return false
	}
	client := protocol.ClientKey{ClientPrincipal: req.Sender, ClientNonce: args.ClientNonce}
	if code, reason, outcome := c.e.admitSession(canText, client.ClientPrincipal.Encode(), c.addr); code != 0 {
		c.reject(code, reason, outcome)
		return false
	}
	c.bind(canister, client)

	ctx, cancel := context.WithTimeout(context.Background(), c.e.cfg.WriteTimeout)
	defer cancel()
	// What the stream holds for this client key now belongs to earlier sessions.
	outFrom, err := c.e.nextOutSeq(ctx, c.outSubject())
	if err != nil {
		c.e.log.Warn("open: read the client's stored messages", "session", c.key, "err", err)
		c.reject(websocket.CloseInternalServerErr, "icws: gateway unavailable", "error")
		return false
	}
	rec := &bus.SessionRecord{
		State: bus.SessionOpen, Canister: c.canText, Client: c.clientTok, Edge: c.e.cfg.ID,
		Resumable: c.resumeOpt, TokenHash: c.tokenHash, OpenedAt: time.Now().UTC(), Partition: c.partition,
		OutFrom: outFrom,
	}
	rev, err := c.e.sessions.Create(ctx, rec)
	if errors.Is(err, bus.ErrSessionConflict) {
		// A closed record is a finished session whose deletion is pending: the key is free again.
		old, oldRev, gerr := c.e.sessions.Get(ctx, c.key)
		switch {
		case errors.Is(gerr, bus.ErrCorruptSessionRecord):
			// No session of any version: the key is free, the record is replaced.
			c.e.log.Warn("replacing a corrupt session record", "err", gerr)
			rev, err = c.e.sessions.Put(ctx, rec, oldRev)
		case gerr != nil:
			err = gerr
		case old == nil:
			rev, err = c.e.sessions.Create(ctx, rec)
		case old.State == bus.SessionClosed:
			// Its close request may not be out yet: publish it first, so the canister sees the
			// old session end before the new one opens (the record is all that remembers it).
			if err = c.e.sessions.PublishClose(ctx, old, "session closed"); err == nil {
				if rev, err = c.e.sessions.Put(ctx, rec, oldRev); err != nil {
					// A sweeper finished and deleted the closed record meanwhile.
					rev, err = c.e.sessions.Create(ctx, rec)
				}
			}
		default:
			c.reject(websocket.ClosePolicyViolation, "icws: duplicate client key (its session is live)", "rejected")
			return false
		}
	}
	if err != nil {
		c.e.log.Warn("create session", "session", c.key, "err", err)
		c.reject(websocket.CloseInternalServerErr, "icws: gateway unavailable", "error")
		return false
	}
	c.sessTag = rec.Tag()
	c.openedAt = rec.OpenedAt
	// Subscribe before the open goes out, so the OpenMessage cannot be missed.
	c.next = 1
	c.readFrom = outFrom
	if err := c.subscribe(); err != nil {
		c.e.log.Warn("subscribe", "session", c.key, "err", err)
		_ = c.e.sessions.Delete(ctx, c.key, rev)
		c.reject(websocket.CloseInternalServerErr, "icws: gateway unavailable", "error")
		return false
	}
	msg := nats.NewMsg(c.inSubj)
	msg.Header.Set(bus.HeaderKind, bus.KindOpen)
	msg.Header.Set(bus.HeaderSessionTag, c.sessTag)
	msg.Header.Set(bus.HeaderMsgID, bus.OpenMsgID(c.canText, c.clientTok, c.sessTag))
	msg.Data = env.Raw
	if err := c.retryBus("publish open", func(ctx context.Context) error {
		_, err := c.e.js.PublishMsg(ctx, msg)
		return err
	}); err != nil {
		c.e.log.Warn("publish open", "session", c.key, "err", err)
		c.unsubscribe()
		_ = c.e.sessions.Delete(ctx, c.key, rev)
		code, reason := publishFailure(err)
		c.reject(code, reason, "error")
		return false
	}
	c.e.m.connectionsTotal.WithLabelValues("open").Inc()
	c.e.log.Debug("session opening", "client", c.clientTok, "canister", c.canText, "resumable", c.resumeOpt, "remote", c.remote)
	return true
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (c *conn) bind(canister principal.Principal, client protocol.ClientKey) {
	c.bound = true
	c.canister = canister
	c.client = client
	canText, tok := canister.Encode(), client.Token()
	c.partition = bus.Partition(canText, tok, c.e.h.Partitions)
	// Every idle session keeps these names, so they share one string: the ICWS_IN subject ends
	// with the session key, <canister>.<client token>, and the token starts with the principal.
	in := bus.InSubject(c.partition, canText, tok)
	c.inSubj = in
	c.key = in[len(in)-len(canText)-1-len(tok):]
	c.canText, c.clientTok = c.key[:len(canText)], c.key[len(canText)+1:]
	c.principal = clientPrincipal(c.clientTok)
}

// outSubject is the session's ICWS_OUT subject (built when needed: it is rarely).
func (c *conn) outSubject() string { return bus.OutSubject(c.canText, c.clientTok) }

func (c *conn) subscribe() error {
	c.dmu.Lock()
	c.live = true
	c.dmu.Unlock()
	old, err := c.e.register(c)
	if err != nil {
		c.dmu.Lock()
		c.live = false
		c.dmu.Unlock()
		return err
	}
	if old != nil {
		old.dropResumedElsewhere()
	}
	return nil
}

func (c *conn) unsubscribe() {
	c.dmu.Lock()
	c.live = false
	c.pending = nil
	c.dmu.Unlock()
	c.e.unregister(c)
}

// dropResumedElsewhere closes this socket with 4102 and waits until no envelope of it is in flight.
func (c *conn) dropResumedElsewhere() {
	c.closeWith(CloseResumedElsewhere, reasonResumedElsewhere)
	c.pubMu.Lock()
	//lint:ignore SA2001 the empty critical section waits for an in-flight relay to finish
	c.pubMu.Unlock()
}

// What a reader goroutine does once readLoop returns.
type readerNext int

const (
	readerEnded   readerNext = iota // the socket ended: tear the session down
	readerParked                    // the connection waits in the idle poller, which starts the next reader
	readerHandOff                   // go on reading on a fresh goroutine
)

// readLoop relays the client's envelopes until the socket ends, and returns why. When nothing
// is left to read the connection waits in the edge's idle poller without a goroutine
// (idlepoll_linux.go); where it cannot, once this goroutine has read something readLoop returns
// readerHandOff: the caller goes on reading on a fresh goroutine. Reading from the socket grows a
// goroutine's stack to 4 KiB and relaying to 8 KiB, and the garbage collector never shrinks a
// parked goroutine's stack below 4 KiB (it shrinks only while a quarter of the stack, less a
// reserve of 800 bytes, suffices), so a reader that stayed would keep that stack for the
// connection's life; a fresh one waits in 2 KiB (idleread.go).
func (c *conn) readLoop(ready bool) (reason string, next readerNext) {
	grown := false // this goroutine has read: its stack is larger than waiting needs
	for {
		c.markSeen()
		if c.rd.idle() && !ready {
			if c.e.idle.park(c) {
				return "", readerParked
			}
			if grown {
				return "", readerHandOff
			}
			c.rd.waitReadable()
		}
		grown, ready = true, false
		typ, frame, err := c.readMessage()
		if err != nil {
			if c.isGone() {
				_, reason, _ := c.closeInfo()
				return reason, readerEnded
			}
			return c.readFailed(err, false), readerEnded
		}
		if c.isGone() {
			return c.drainAfterClose(), readerEnded
		}
		if typ == 0 {
			continue // pings and pongs only
		}
		c.e.m.framesIn.Inc()
		c.e.m.bytesIn.Add(float64(len(frame)))
		if f := c.e.testFrame.Load(); f != nil {
			(*f)(frame)
		}
		if typ != websocket.BinaryMessage {
			c.closeWith(websocket.CloseUnsupportedData, "icws: text frames are not supported")
			return "text frame", readerEnded
		}
		if !c.rate.Take(time.Now(), 1, c.e.cfg.MaxClientRate, float64(c.e.cfg.MaxClientBurst)) {
			c.closeWith(websocket.ClosePolicyViolation, reasonRateExceeded)
			return "client message rate exceeded", readerEnded
		}
		c.markBusy()
		stagetrace.Mark(context.Background(), c.e.log, stagetrace.EdgeRead)
		code, reason := c.relay(frame)
		if code != 0 {
			c.closeWith(code, reason)
			return reason, readerEnded
		}
	}
}

// relay checks one client frame and publishes it to ICWS_IN, waiting for the PubAck so that the
// stream holds the client's envelopes in the order they were sent.
func (c *conn) relay(frame []byte) (int, string) {
	env, req, code, reason := c.verifyFrame(frame, "only ws_message calls are relayed", func(r *protocol.Request) error {
		switch {
		case r.Method != "ws_message":
			return refusal("only ws_message calls are relayed, not %s", strconv.Quote(trunc(r.Method, 40)))
		case !r.Canister.Equal(c.canister):
			return refusal("ws_message for another canister than the session's")
		case !r.Sender.Equal(c.client.ClientPrincipal):
			return refusal("ws_message from another sender than the session's")
		}
		return nil
	})
	if code != 0 {
		return code, reason
	}
	stagetrace.Mark(context.Background(), c.e.log, stagetrace.EdgeVerified)
	seq, err := decodeMessageSeq(req.Arg)
	if err != nil {
		return websocket.CloseProtocolError, "icws: ws_message argument: " + short(err)
	}
	msg := nats.NewMsg(c.inSubj)
	msg.Header.Set(bus.HeaderKind, bus.KindMessage)
	seqText := strconv.FormatUint(seq, 10)
	msg.Header.Set(bus.HeaderClientSeq, seqText)
	msg.Header.Set(bus.HeaderMsgID, bus.MessageMsgID(c.canText, c.clientTok, c.sessTag, seq))
	msg.Data = env.Raw

	if code, reason := c.awaitConfirmed(); code != 0 {
		return code, reason
	}
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if c.isGone() {
		return 0, "" // dropped for a newer connection; that one relays from here on
	}
	// Retried through a leader election of ICWS_IN: the Msg-Id makes a repeat harmless, and the
	// client's next envelopes wait behind this one, so order holds.
	err = c.retryBus("relay envelope", func(ctx context.Context) error {
		if c.isGone() {
			return errConnGone
		}
		_, err := c.e.js.PublishMsg(ctx, msg)
		return err
	})
	if errors.Is(err, errConnGone) {
		return 0, ""
	}
	if err != nil {
		c.e.log.Warn("relay envelope", "session", c.key, "err", err)
		return publishFailure(err)
	}
	stagetrace.Mark(context.Background(), c.e.log, stagetrace.EdgeRelayed)
	// Per message: the arguments would be allocated even with debug logging off.
	if c.e.log.Enabled(context.Background(), slog.LevelDebug) {
		c.e.log.Debug("envelope relayed", "session", c.key, "seq", seq)
	}
	return 0, ""
}

// decodeMessageSeq reads msg.sequence_num from ws_message's Candid arguments.
func decodeMessageSeq(arg []byte) (uint64, error) {
	m, err := protocol.DecodeWsMessageArgs(arg)
	if err != nil {
		return 0, err
	}
	return m.SequenceNum, nil
}

// teardown runs when the socket has ended: standard sessions are closed (close request after
// everything the client sent, then the record is deleted); resumable ones are detached.
func (c *conn) teardown(reason string) {
	if !c.bound {
		return
	}
	c.unsubscribe()
	c.stopQueue()
	c.closeSocket()
	log := c.e.log.With("client", c.clientTok, "canister", c.canText, "reason", reason)
	code, _, force := c.closeInfo()
	if code == CloseResumedElsewhere {
		log.Debug("session moved to another connection")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.e.cfg.DrainTimeout)
	defer cancel()
	ours := func(rec *bus.SessionRecord) bool {
		return rec != nil && rec.Edge == c.e.cfg.ID && rec.TokenHash == c.tokenHash && rec.State != bus.SessionClosed
	}
	for attempt := 0; attempt < 3; attempt++ {
		rec, rev, err := c.e.sessions.Get(ctx, c.key)
		if err == nil && rec != nil && !ours(rec) {
			// A lagging replica's copy may predate this connection's resume: ask the leader (Get
			// asked it already when it found no record).
			rec, rev, err = c.e.sessions.GetLatest(ctx, c.key)
		}
		if err != nil {
			log.Warn("session end: read record", "err", err)
			return
		}
		if !ours(rec) {
			log.Debug("session end: record no longer ours")
			return
		}
		if rec.Resumable && !force {
			if rec.State == bus.SessionDetached {
				return
			}
			rec.State, rec.DetachedAt = bus.SessionDetached, time.Now().UTC()
			if _, err := c.e.sessions.Put(ctx, rec, rev); err != nil {
				continue
			}
			log.Debug("session detached", "grace", c.e.cfg.ResumeGrace)
			return
		}
		rec.State = bus.SessionClosed
		nrev, err := c.e.sessions.Put(ctx, rec, rev)
		if err != nil {
			continue
		}
		c.e.finishSession(ctx, rec, nrev, reason)
		log.Debug("session closed")
		return
	}
	log.Warn("session end: record kept changing; left to the sweeper")
}

// confirm records that the IC executed the session's ws_open: the client's messages flow.
func (c *conn) confirm() {
	c.confirmOnce.Do(func() {
		close(c.confirmed)
		c.e.m.opens.WithLabelValues("confirmed").Inc()
	})
}

func (c *conn) isConfirmed() bool {
	select {
	case <-c.confirmed:
		return true
	default:
		return false
	}
}

// refuse ends a session whose ws_open the canister refused. The submitter has removed its record
// already, so teardown finds nothing to detach or close.
func (c *conn) refuse(reason string) {
	c.e.m.opens.WithLabelValues("refused").Inc()
	c.e.log.Debug("ws_open refused by the canister", "client", c.clientTok, "canister", c.canText, "reason", reason)
	c.closeWith(websocket.ClosePolicyViolation, "icws: the canister refused ws_open: "+reason)
}

// awaitConfirmed blocks a client message until the session's ws_open is confirmed. The
// submitter's report is the fast path; the session record is re-read every sweep interval in
// case that report was lost. It returns a close code when the session must end instead.
func (c *conn) awaitConfirmed() (int, string) {
	if c.isConfirmed() {
		return 0, ""
	}
	began := time.Now()
	c.e.log.Debug("client message waits for the session's ws_open to be confirmed", "session", c.key)
	defer func() {
		c.e.log.Debug("ws_open wait over", "session", c.key, "waited", time.Since(began), "confirmed", c.isConfirmed())
	}()
	deadline := time.NewTimer(time.Until(c.openedAt.Add(c.e.cfg.OpenConfirmTimeout)))
	defer deadline.Stop()
	tick := time.NewTicker(c.e.cfg.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.confirmed:
			return 0, ""
		case <-c.gone:
			return 0, "" // the caller sees the socket closing
		case <-deadline.C:
			c.e.m.opens.WithLabelValues("timeout").Inc()
			return websocket.CloseInternalServerErr, "icws: ws_open was not executed in time"
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.e.cfg.WriteTimeout)
			rec, _, err := c.e.sessions.GetSession(ctx, c.key, c.sessTag)
			cancel()
			switch {
			case err != nil:
				// NATS unreachable: keep waiting, the deadline bounds it.
			case rec == nil || rec.Tag() != c.sessTag:
				c.e.m.opens.WithLabelValues("refused").Inc()
				return websocket.ClosePolicyViolation, "icws: the canister refused ws_open"
			case rec.Confirmed:
				c.confirm()
				return 0, ""
			}
		}
	}
}

// nextOutSeq is the ICWS_OUT stream sequence after the last message stored on subject (1 if
// none): a session that opens now owns nothing stored before it.
func (e *Edge) nextOutSeq(ctx context.Context, subject string) (uint64, error) {
	m, err := e.h.Out.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 1, nil
	case err != nil:
		return 0, fmt.Errorf("last message on %s: %w", subject, err)
	}
	return m.Sequence + 1, nil
}
