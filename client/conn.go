// Package client is a Go client for ic-websocket gateways (icws and the Rust ic-websocket-gateway):
// it speaks the client side of the protocol exactly as ic-websocket-js 0.5.0 does — signed ws_open /
// ws_message envelopes, verification of every certified canister message, sequence numbers,
// ack / keep-alive and the ack watchdog — and, opted in with Config.Resume, the icws resume
// extension (docs/RESUME.md): on a dropped connection it reconnects and resumes the session without
// losing or duplicating a message.
//
// Wire details, each checked against ic-websocket-js 0.5.0 / @dfinity/candid 2.4.1:
//   - ws_open and ws_message arguments are byte-identical to the SDK's; the second ws_message
//     argument is `opt null` = none, as the SDK's IDL declares it.
//   - Envelopes: content {request_type "call", canister_id, method_name, arg, sender,
//     ingress_expiry (now + 4 min, rounded down to the minute, like agent-js), nonce (16 random
//     bytes)}, sender_sig over "\x0Aic-request" ‖ request id, sender_pubkey as DER.
//   - Every canister frame is verified (protocol.Verifier: certificate, time, certified_data,
//     tree leaf) before its sequence number is checked; the client also checks the client key of
//     every message, where the SDK checks it only on OpenMessage.
//
// Resume: sent ws_messages are kept until the canister acks them or the gateway reports them in
// last_client_seq; after a resume the rest are re-sent in order — as the same signed envelope while
// its ingress_expiry is more than a minute away (so the IC deduplicates a repeat by request id too),
// signed anew otherwise.
package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/internal/stagetrace"
	"github.com/icws/icws/protocol"
)

// Errors that end a connection (see Conn.Err).
var (
	// ErrNotResumable: the gateway refused to resume the session (close code 4100, or the gateway
	// does not offer the extension any more). The caller decides whether to Dial a new session.
	ErrNotResumable = errors.New("client: session not resumable")
	// ErrAckTimeout: no AckMessage within AckInterval + LatencyBound (the SDK's watchdog), or acked
	// messages older than that window were still pending.
	ErrAckTimeout = errors.New("client: ack message timeout")
	// ErrOpenTimeout: no OpenMessage within OpenTimeout after ws_open.
	ErrOpenTimeout = errors.New("client: open timeout")
	// ErrConnectionLost: the WebSocket dropped and resume was off or impossible.
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrInvalidMessage: a canister message failed verification, sequence or client key checks.
	ErrInvalidMessage = errors.New("client: invalid message from gateway")
	// ErrClosed: Send on a connection that has ended.
	ErrClosed = errors.New("client: connection closed")
	// ErrClosedByApplication: the canister closed the connection (CloseMessage ClosedByApplication).
	ErrClosedByApplication = errors.New("client: closed by the canister application")
)

// CloseMessageError reports a CloseMessage from the canister with a reason other than
// ClosedByApplication (WrongSequenceNumber, KeepAliveTimeout, ...).
type CloseMessageError struct{ Reason string }

func (e *CloseMessageError) Error() string {
	return "client: received close message from canister: " + e.Reason
}

// Message is one verified application message from the canister, in sequence order.
type Message struct {
	// Seq is the canister → client sequence number (service messages take numbers too).
	Seq uint64
	// Content is the Candid payload the canister sent.
	Content []byte
	// Timestamp is the canister's time of sending (ns since the epoch).
	Timestamp uint64
	// Key is the canister's queue key of the message.
	Key string
}

// fatalError marks errors that end the connection even when resume is on.
type fatalError struct {
	err    error
	code   int
	reason string
}

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func fatal(err error, code int, reason string) error {
	return &fatalError{err: err, code: code, reason: reason}
}

// Conn is one ic-websocket session. Send, Messages, Close, Err and Done are safe for concurrent use.
type Conn struct {
	cfg      Config
	log      *slog.Logger
	rootKey  []byte
	key      protocol.ClientKey
	verifier *protocol.Verifier

	msgs       chan Message
	done       chan struct{}
	readerDone chan struct{}
	opened     chan struct{}
	stopOnce   sync.Once
	errMu      sync.Mutex
	err        error
	cur        atomic.Pointer[websocket.Conn]

	resumes atomic.Int64
	resent  atomic.Int64

	// mu guards the session state below and serialises writes, so the wire order of ws_messages
	// is their sequence order.
	mu        sync.Mutex
	ws        *websocket.Conn // nil while reconnecting
	gateway   principal.Principal
	token     []byte        // resume token; nil if the gateway did not offer resume
	heartbeat time.Duration // heartbeat interval the current connection's gateway announced; 0: none
	// candidates are the tokens of resume attempts whose answer never came: the session's token
	// is token or one of these.
	candidates [][]byte
	outSeq     uint64
	pending    []outgoing // sent, not yet confirmed by gateway or canister
	acks       ackQueue
	ackTimer   *time.Timer
	lastIn     uint64
	openedFlag bool
}

// Dial connects to the gateway, opens a session for cfg.Canister and returns once the canister's
// OpenMessage has been verified. ctx bounds the connect and open phase only.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	rootKey, err := RootKey(ctx, cfg.ICURL, cfg.RootKey, cfg.HTTPClient)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, fmt.Errorf("client: client nonce: %w", err)
	}
	c := &Conn{
		cfg:        cfg,
		log:        cfg.Logger,
		rootKey:    rootKey,
		key:        protocol.ClientKey{ClientPrincipal: cfg.Identity.Sender(), ClientNonce: binary.BigEndian.Uint64(nb[:])},
		msgs:       make(chan Message, cfg.MessageBuffer),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		opened:     make(chan struct{}),
		acks:       ackQueue{expiration: cfg.AckInterval + cfg.LatencyBound},
		verifier:   &protocol.Verifier{Canister: cfg.Canister, RootKey: rootKey, MaxCertAge: cfg.MaxCertAge},
	}
	c.log = c.log.With("client_key", c.key.String(), "canister", cfg.Canister.Encode())

	dctx, cancel := context.WithTimeout(ctx, cfg.OpenTimeout)
	defer cancel()
	ws, gw, offer, err := c.connect(dctx)
	if err != nil {
		return nil, err
	}
	if cfg.Resume && offer == nil {
		c.log.Warn("gateway does not offer the icws resume extension; continuing without resume")
	}
	arg, err := protocol.EncodeWsOpenArgs(protocol.CanisterWsOpenArguments{ClientNonce: c.key.ClientNonce, GatewayPrincipal: gw})
	if err != nil {
		ws.Close()
		return nil, err
	}
	frame, _, err := signCall(cfg.Identity, cfg.Canister, "ws_open", arg, cfg.Now())
	if err != nil {
		ws.Close()
		return nil, err
	}
	c.mu.Lock()
	c.ws, c.gateway = ws, gw
	if offer != nil {
		c.token = offer.Token
		c.heartbeat = time.Duration(offer.HeartbeatMillis) * time.Millisecond
	}
	c.cur.Store(ws)
	err = c.write(ws, frame)
	c.mu.Unlock()
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("client: send ws_open: %w", err)
	}
	c.log.Debug("ws_open sent", "gateway", gw.Encode())
	go c.run(ws)

	timer := time.NewTimer(cfg.OpenTimeout)
	defer timer.Stop()
	select {
	case <-c.opened:
		return c, nil
	case <-c.done:
		<-c.readerDone
		return nil, c.Err()
	case <-timer.C:
		c.fail(ErrOpenTimeout, 4000, "Open connection timeout")
	case <-ctx.Done():
		c.fail(ctx.Err(), websocket.CloseNormalClosure, "")
	}
	<-c.readerDone
	return nil, c.Err()
}

// connect dials the gateway and reads its handshake, within ConnectTimeout.
func (c *Conn) connect(ctx context.Context) (*websocket.Conn, principal.Principal, *protocol.ResumeOffer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	u := c.cfg.GatewayURL
	if c.cfg.Resume {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, principal.Principal{}, nil, fmt.Errorf("client: GatewayURL: %w", err)
		}
		q := pu.Query()
		q.Set(ResumeQueryParam, "1")
		if c.cfg.HeartbeatSilence >= 0 {
			q.Set(HeartbeatQueryParam, "1")
		}
		pu.RawQuery = q.Encode()
		u = pu.String()
	}
	ws, resp, err := c.cfg.Dialer.DialContext(ctx, u, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, principal.Principal{}, nil, fmt.Errorf("client: dial %s: %w", c.cfg.GatewayURL, err)
	}
	ws.SetReadLimit(c.cfg.MaxFrameSize)
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	typ, frame, err := ws.ReadMessage()
	if !stop() {
		ws.Close()
		return nil, principal.Principal{}, nil, fmt.Errorf("client: read handshake: %w", ctx.Err())
	}
	if err != nil {
		ws.Close()
		return nil, principal.Principal{}, nil, fmt.Errorf("client: read handshake: %w", err)
	}
	if typ != websocket.BinaryMessage {
		c.closeWith(ws, 4000, "Handshake message error")
		return nil, principal.Principal{}, nil, fmt.Errorf("client: handshake is not a binary frame")
	}
	hs, err := protocol.DecodeHandshake(frame)
	if err != nil {
		c.closeWith(ws, 4000, "Handshake message error")
		return nil, principal.Principal{}, nil, fmt.Errorf("client: %w", err)
	}
	gw, offer := hs.Gateway(), hs.Resume
	if !c.cfg.Resume {
		offer = nil
	}
	return ws, gw, offer, nil
}

func (c *Conn) closeWith(ws *websocket.Conn, code int, reason string) {
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	ws.Close()
}

// write sends one frame; callers hold c.mu.
func (c *Conn) write(ws *websocket.Conn, frame []byte) error {
	if err := ws.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout)); err != nil {
		return err
	}
	return ws.WriteMessage(websocket.BinaryMessage, frame)
}

// ClientKey is this session's client key (principal and random nonce).
func (c *Conn) ClientKey() protocol.ClientKey { return c.key }

// Gateway is the gateway principal from the handshake.
func (c *Conn) Gateway() principal.Principal {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gateway
}

// Messages delivers verified application messages in order; it is closed when the connection ends.
// Drain it: a full buffer stops reading from the gateway (and with it the ack/keep-alive cycle).
func (c *Conn) Messages() <-chan Message { return c.msgs }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended: nil while it is open and after Close.
func (c *Conn) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// Resumes counts successful session resumes.
func (c *Conn) Resumes() int { return int(c.resumes.Load()) }

// Resent counts ws_messages re-sent after resumes.
func (c *Conn) Resent() int { return int(c.resent.Load()) }

// LastIncomingSeq is the last verified canister → client sequence number.
func (c *Conn) LastIncomingSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastIn
}

// LastOutgoingSeq is the sequence number of the last ws_message sent (keep-alives included).
func (c *Conn) LastOutgoingSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outSeq
}

// Send sends one application message (its Candid bytes) as a ws_message. Like the SDK it does not
// wait for the canister; the canister's acks confirm delivery. With Resume on, a message sent while
// the connection is down is queued and sent on resume.
func (c *Conn) Send(ctx context.Context, content []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-c.done:
		if err := c.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return ErrClosed
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendLocked(content, false)
}

// sendLocked assigns the next sequence number and sends the ws_message; callers hold c.mu.
func (c *Conn) sendLocked(content []byte, isService bool) error {
	// Only a resumable session needs its sent messages; keep-alives are never refused, or the
	// canister would close us for a missing keep-alive.
	keep := c.token != nil
	if keep && !isService && len(c.pending) >= c.cfg.MaxPending {
		return fmt.Errorf("client: %d sent messages wait for confirmation (MaxPending)", len(c.pending))
	}
	now := c.cfg.Now()
	c.outSeq++
	m := protocol.WebsocketMessage{
		ClientKey:        c.key,
		SequenceNum:      c.outSeq,
		Timestamp:        uint64(now.UnixNano()),
		IsServiceMessage: isService,
		Content:          content,
	}
	if keep {
		c.pending = append(c.pending, outgoing{msg: m})
	}
	if err := c.acks.add(m.SequenceNum, now); err != nil {
		return err
	}
	if c.ackTimer == nil {
		c.startAckWatchdogLocked()
	}
	if c.ws == nil {
		return nil // queued; re-sent on resume
	}
	var out *outgoing
	if keep {
		out = &c.pending[len(c.pending)-1]
	} else {
		out = &outgoing{msg: m}
	}
	if err := c.writeMessageLocked(c.ws, out); err != nil {
		if c.token != nil {
			// The reader sees the broken socket and resumes; the message stays pending.
			c.ws.Close()
			return nil
		}
		// A write usually fails because the gateway closed the connection (ErrCloseSent after its
		// close frame, or a broken pipe), and the reader is about to end the connection with the
		// close code and reason, which say more than this failure; it gets a moment to do so.
		sendErr := fmt.Errorf("client: send ws_message %d: %w", m.SequenceNum, err)
		time.AfterFunc(readerGrace, func() {
			c.fail(fmt.Errorf("%w: %w", ErrConnectionLost, sendErr), 4000, "Message sending failed")
		})
		return sendErr
	}
	return nil
}

// readerGrace is how long a failed write leaves the reader to report why the connection ended.
const readerGrace = 2 * time.Second

// outgoing is a sent ws_message and the signed frame that carried it.
type outgoing struct {
	msg    protocol.WebsocketMessage
	frame  []byte
	expiry time.Time
}

// resignMargin: a kept frame is re-sent as is (same request id, so the IC itself deduplicates a
// repeat) unless its ingress_expiry is this close; then it is signed anew.
const resignMargin = time.Minute

// writeMessageLocked sends o, signing it first unless its frame is still fresh; callers hold c.mu.
func (c *Conn) writeMessageLocked(ws *websocket.Conn, o *outgoing) error {
	now := c.cfg.Now()
	if o.frame == nil || now.Add(resignMargin).After(o.expiry) {
		arg, err := protocol.EncodeWsMessageArgs(o.msg)
		if err != nil {
			return err
		}
		frame, _, err := signCall(c.cfg.Identity, c.cfg.Canister, "ws_message", arg, now)
		if err != nil {
			return err
		}
		o.frame, o.expiry = frame, time.Unix(0, int64(ingressExpiry(now)))
	}
	if err := c.write(ws, o.frame); err != nil {
		return err
	}
	stagetrace.Mark(context.Background(), c.cfg.Logger, stagetrace.ClientWritten)
	return nil
}

func (c *Conn) startAckWatchdogLocked() {
	if c.ackTimer != nil {
		c.ackTimer.Stop()
	}
	c.ackTimer = time.AfterFunc(c.acks.expiration, func() {
		c.mu.Lock()
		pending := c.acks.pending()
		c.mu.Unlock()
		c.fail(fmt.Errorf("%w: not received ack for sequence numbers %v", ErrAckTimeout, pending), 4000, "Ack message timeout")
	})
}

// Close ends the session with close code 1000; the gateway then calls ws_close. Err stays nil.
func (c *Conn) Close() error {
	c.fail(nil, websocket.CloseNormalClosure, "")
	select {
	case <-c.readerDone:
	case <-time.After(c.cfg.WriteTimeout):
	}
	return nil
}

// fail ends the connection once, recording err and closing the socket with code and reason.
func (c *Conn) fail(err error, code int, reason string) {
	c.stopOnce.Do(func() {
		c.errMu.Lock()
		c.err = err
		c.errMu.Unlock()
		close(c.done)
		if err != nil {
			c.log.Warn("connection ended", "err", err)
		}
		if ws := c.cur.Load(); ws != nil {
			c.closeWith(ws, code, reason)
		}
	})
}

func (c *Conn) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// run reads from the gateway until the connection ends, resuming dropped connections if enabled.
func (c *Conn) run(ws *websocket.Conn) {
	defer close(c.readerDone)
	defer close(c.msgs)
	defer func() {
		c.mu.Lock()
		if c.ackTimer != nil {
			c.ackTimer.Stop()
		}
		c.mu.Unlock()
	}()
	for {
		err := c.readLoop(ws)
		if c.finished() {
			return
		}
		var fe *fatalError
		if errors.As(err, &fe) {
			c.fail(fe.err, fe.code, fe.reason)
			return
		}
		c.mu.Lock()
		c.ws = nil
		resumable := c.token != nil && c.openedFlag
		c.mu.Unlock()
		if !resumable || !isResumableDrop(err) {
			c.fail(fmt.Errorf("%w: %w", ErrConnectionLost, err), 4000, "Connection lost")
			return
		}
		c.log.Info("connection dropped; resuming", "err", err)
		ws, err = c.reconnect(resumeAtOnce(err))
		if err != nil {
			c.fail(err, 4000, "Resume failed")
			return
		}
	}
}

// isResumableDrop tells drops worth resuming from closes that mean the session is gone.
func isResumableDrop(err error) bool {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return true // network error, abnormal closure
	}
	switch ce.Code {
	case websocket.CloseGoingAway, websocket.CloseAbnormalClosure, websocket.CloseInternalServerErr,
		websocket.CloseServiceRestart, websocket.CloseTryAgainLater, websocket.CloseNoStatusReceived, CloseSlowClient,
		CloseResumeElsewhere, CloseUnresponsive:
		return true
	}
	return false
}

// resumeAtOnce tells drops after which the first resume attempt should not wait: the gateway
// asked the client to go elsewhere (4103), or it fell silent (the client already waited for it).
func resumeAtOnce(err error) bool {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code == CloseResumeElsewhere
	}
	return errors.Is(err, errGatewaySilent)
}

func (c *Conn) readLoop(ws *websocket.Conn) error {
	c.mu.Lock()
	icws := c.token != nil
	window := c.silenceWindowLocked()
	c.mu.Unlock()
	if icws && c.cfg.PingInterval > 0 {
		// Only on icws connections (resume offered): the Rust gateway treats a ping as a protocol
		// error.
		stop := c.pingGateway(ws)
		defer stop()
	}
	// A silent gateway (hung, cut off, half-open TCP) is noticed after window and resumed. Only
	// the time the reader spends waiting counts: while it verifies a frame (a long replay on a
	// busy machine) the frames behind it wait in the socket, which says nothing about the gateway.
	var waiting atomic.Int64 // unix ns since which the reader waits for a frame; readerBusy while it handles one
	var silent atomic.Bool
	if window > 0 {
		ws.SetPongHandler(func(string) error { waiting.Store(time.Now().UnixNano()); return nil })
		stop := watchSilence(ws, window, &waiting, &silent)
		defer stop()
	}
	for {
		waiting.Store(time.Now().UnixNano())
		typ, frame, err := ws.ReadMessage()
		waiting.Store(readerBusy)
		if err != nil {
			if silent.Load() {
				return fmt.Errorf("%w for %s", errGatewaySilent, window)
			}
			return err
		}
		if typ != websocket.BinaryMessage {
			return fatal(fmt.Errorf("%w: text frame", ErrInvalidMessage), 4000, "Error receiving message")
		}
		if isHeartbeat(frame) {
			continue
		}
		stagetrace.Mark(context.Background(), c.cfg.Logger, stagetrace.ClientRead)
		if err := c.handleFrame(frame); err != nil {
			return err
		}
	}
}

// errGatewaySilent: nothing arrived on the connection for its silence window.
var errGatewaySilent = errors.New("nothing from the gateway")

// readerBusy in the reader's waiting time: it is handling a frame, not waiting for one.
const readerBusy = -1

// watchSilence closes ws once the reader has waited for window without a frame, and sets silent
// first. Silence must be seen on two checks in a row: if this process itself was not scheduled for
// a while, frames that arrived meanwhile wait in the socket, and the reader gets a chance to take
// them before the connection is given up. It returns a function that stops the watch.
func watchSilence(ws *websocket.Conn, window time.Duration, waiting *atomic.Int64, silent *atomic.Bool) func() {
	tick := max(window/8, 5*time.Millisecond)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		suspect := false
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			since := waiting.Load()
			if since == readerBusy || time.Since(time.Unix(0, since)) < window {
				suspect = false
				continue
			}
			if !suspect {
				suspect = true
				continue
			}
			silent.Store(true)
			_ = ws.NetConn().Close()
			return
		}
	})
	return func() { close(stop); wg.Wait() }
}

// silenceWindowLocked is how long the current connection may stay silent before it counts as
// dropped: twice the gateway's heartbeat interval (or HeartbeatSilence) and twice PingInterval,
// whichever is shorter; 0 for no limit (not an icws connection). Callers hold c.mu.
func (c *Conn) silenceWindowLocked() time.Duration {
	if c.token == nil {
		return 0
	}
	var w time.Duration
	if c.cfg.PingInterval > 0 {
		w = 2 * c.cfg.PingInterval
	}
	if c.heartbeat > 0 && c.cfg.HeartbeatSilence >= 0 {
		hb := c.cfg.HeartbeatSilence
		if hb == 0 {
			hb = 2 * c.heartbeat
		}
		if w == 0 || hb < w {
			w = hb
		}
	}
	return w
}

// maxCandidateTokens bounds the tokens kept from resume attempts whose answer was lost.
const maxCandidateTokens = 8

func (c *Conn) keepCandidateToken(token []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.candidates) < maxCandidateTokens {
		c.candidates = append(c.candidates, token)
	}
}

// nextToken replaces the session token, which the gateway refused, with the oldest candidate;
// false if there is none.
func (c *Conn) nextToken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.candidates) == 0 {
		return false
	}
	c.token, c.candidates = c.candidates[0], c.candidates[1:]
	return true
}

// pingGateway pings ws every PingInterval (the pongs extend the read deadline); it returns a
// function that stops the pinger.
func (c *Conn) pingGateway(ws *websocket.Conn) func() {
	d := c.cfg.PingInterval
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(d)); err != nil {
					return
				}
			}
		}
	})
	return func() { close(stop); wg.Wait() }
}

func (c *Conn) handleFrame(frame []byte) error {
	invalid := func(err error) error {
		return fatal(fmt.Errorf("%w: %w", ErrInvalidMessage, err), 4000, "Error receiving message")
	}
	msg, err := protocol.DecodeCanisterToClientMessage(frame)
	if err != nil {
		return invalid(err)
	}
	wm, err := c.verifier.Verify(msg, c.cfg.Now())
	if err != nil {
		return invalid(err)
	}
	stagetrace.Mark(context.Background(), c.cfg.Logger, stagetrace.ClientVerified)
	c.mu.Lock()
	defer c.mu.Unlock()
	if want := c.lastIn + 1; wm.SequenceNum != want {
		return invalid(fmt.Errorf("sequence number %d, expected %d", wm.SequenceNum, want))
	}
	// The SDK checks the client key only on OpenMessage; checking every message costs nothing and
	// stops a gateway from handing us another client's certified messages.
	if !wm.ClientKey.Equal(c.key) {
		return invalid(fmt.Errorf("message %d is for client %s", wm.SequenceNum, wm.ClientKey))
	}
	c.lastIn = wm.SequenceNum
	if !wm.IsServiceMessage {
		if !c.openedFlag {
			return invalid(fmt.Errorf("application message %d before OpenMessage", wm.SequenceNum))
		}
		m := Message{Seq: wm.SequenceNum, Content: wm.Content, Timestamp: wm.Timestamp, Key: msg.Key}
		select {
		case c.msgs <- m:
			return nil
		default:
		}
		// Buffer full: wait for the consumer without holding the lock.
		c.mu.Unlock()
		defer c.mu.Lock()
		select {
		case c.msgs <- m:
		case <-c.done:
		}
		return nil
	}
	return c.handleServiceLocked(wm)
}

func (c *Conn) handleServiceLocked(wm protocol.WebsocketMessage) error {
	sm, err := protocol.DecodeServiceMessage(wm.Content)
	if err != nil {
		return fatal(fmt.Errorf("%w: %w", ErrInvalidMessage, err), 4000, "Service message error")
	}
	switch {
	case sm.OpenMessage != nil:
		if !sm.OpenMessage.ClientKey.Equal(c.key) {
			return fatal(fmt.Errorf("%w: OpenMessage for client %s", ErrInvalidMessage, sm.OpenMessage.ClientKey), 4000, "Service message error")
		}
		if !c.openedFlag {
			c.openedFlag = true
			close(c.opened)
			c.log.Debug("session open")
		}
		return nil
	case sm.AckMessage != nil:
		n := sm.AckMessage.LastIncomingSequenceNum
		expired, err := c.acks.ack(n, c.cfg.Now())
		if err != nil {
			return fatal(fmt.Errorf("%w: %w", ErrInvalidMessage, err), 4000, "Ack message error")
		}
		if len(expired) > 0 {
			return fatal(fmt.Errorf("%w: not received ack for sequence numbers %v", ErrAckTimeout, expired), 4000, "Ack message timeout")
		}
		c.trimPendingLocked(n)
		c.startAckWatchdogLocked()
		ka, err := protocol.EncodeServiceMessage(protocol.WebsocketServiceMessageContent{
			KeepAliveMessage: &protocol.ClientKeepAliveMessageContent{LastIncomingSequenceNum: c.lastIn},
		})
		if err != nil {
			return fatal(err, 4000, "Keep alive message was not sent")
		}
		if err := c.sendLocked(ka, true); err != nil {
			return fatal(fmt.Errorf("keep-alive: %w", err), 4000, "Keep alive message was not sent")
		}
		c.log.Debug("ack received, keep-alive sent", "acked", n, "last_incoming", c.lastIn)
		return nil
	case sm.CloseMessage != nil:
		reason := sm.CloseMessage.Reason.String()
		if sm.CloseMessage.Reason.ClosedByApplication != nil {
			return fatal(ErrClosedByApplication, 4001, "ClosedByApplication")
		}
		return fatal(&CloseMessageError{Reason: reason}, 4000, "Received close message from canister")
	default:
		return fatal(fmt.Errorf("%w: invalid service message from canister", ErrInvalidMessage), 4000, "Service message error")
	}
}

// trimPendingLocked forgets sent messages up to seq: the canister or gateway has them.
func (c *Conn) trimPendingLocked(seq uint64) {
	i := 0
	for i < len(c.pending) && c.pending[i].msg.SequenceNum <= seq {
		i++
	}
	c.pending = append(c.pending[:0:0], c.pending[i:]...)
}

// reconnect retries resuming with exponential backoff until it works, the session turns out not to
// be resumable, ResumeTimeout passes, or the connection is closed. With atOnce the first attempt
// does not wait.
func (c *Conn) reconnect(atOnce bool) (*websocket.Conn, error) {
	deadline := time.Now().Add(c.cfg.ResumeTimeout)
	backoff := c.cfg.ReconnectMin
	var last error
	for attempt := 1; ; attempt++ {
		wait := backoff/2 + jitter(backoff/2)
		if attempt == 1 && atOnce {
			wait = 0
		}
		if rem := time.Until(deadline); wait > rem {
			wait = rem
		}
		t := time.NewTimer(wait)
		select {
		case <-c.done:
			t.Stop()
			return nil, ErrClosed
		case <-t.C:
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		go func() {
			select {
			case <-c.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		ws, err := c.tryResume(ctx)
		cancel()
		if err == nil {
			c.resumes.Add(1)
			c.log.Info("session resumed", "attempt", attempt)
			return ws, nil
		}
		if c.finished() {
			return nil, ErrClosed
		}
		var fe *fatalError
		if errors.Is(err, ErrNotResumable) || errors.As(err, &fe) {
			return nil, err
		}
		last = err
		c.log.Debug("resume attempt failed", "attempt", attempt, "err", err)
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w: resume gave up after %s: %w", ErrConnectionLost, c.cfg.ResumeTimeout, last)
		}
		backoff = min(backoff*2, c.cfg.ReconnectMax)
	}
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d)))
	if err != nil {
		return d / 2
	}
	return time.Duration(n.Int64())
}

// tryResume opens a new WebSocket, sends the resume frame and re-sends what the gateway lacks.
func (c *Conn) tryResume(ctx context.Context) (*websocket.Conn, error) {
	// A gateway that sends heartbeats answers a new connection at once: one that keeps the
	// handshake back longer than the silence window is as good as silent (a hung process behind a
	// load balancer that has not noticed yet).
	c.mu.Lock()
	window, hb := c.silenceWindowLocked(), c.heartbeat
	c.mu.Unlock()
	cctx := ctx
	if window > 0 && hb > 0 && window < c.cfg.ConnectTimeout {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, window)
		defer cancel()
	}
	ws, gw, offer, err := c.connect(cctx)
	if err != nil {
		return nil, err
	}
	if offer == nil {
		c.closeWith(ws, websocket.CloseNormalClosure, "")
		return nil, fmt.Errorf("%w: gateway no longer offers resume", ErrNotResumable)
	}
	c.mu.Lock()
	token, lastSeq := c.token, c.lastIn
	if !gw.Equal(c.gateway) {
		c.log.Warn("gateway principal changed on resume", "old", c.gateway.Encode(), "new", gw.Encode())
	}
	c.mu.Unlock()
	frame, err := protocol.ResumeRequest{
		Token:      token,
		CanisterID: c.cfg.Canister.Raw,
		ClientKey:  protocol.ResumeClientKey{ClientPrincipal: c.key.ClientPrincipal.Raw, ClientNonce: c.key.ClientNonce},
		LastSeq:    lastSeq,
	}.Encode()
	if err != nil {
		ws.Close()
		return nil, fatal(err, 4000, "Resume failed")
	}
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	err = ws.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	if err == nil {
		err = ws.WriteMessage(websocket.BinaryMessage, frame)
	}
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("client: send resume frame: %w", err)
	}
	// Without heartbeats the answer must come within ConnectTimeout. With them, the gateway is
	// working on it as long as they come (it retries its message bus through a leader election),
	// and has failed when they stop.
	silence := time.Duration(0)
	if offer.HeartbeatMillis > 0 && c.cfg.HeartbeatSilence >= 0 {
		silence = c.cfg.HeartbeatSilence
		if silence == 0 {
			silence = 2 * time.Duration(offer.HeartbeatMillis) * time.Millisecond
		}
	}
	readBy := func() time.Time {
		if silence > 0 {
			return time.Now().Add(silence)
		}
		return time.Now().Add(c.cfg.ConnectTimeout)
	}
	_ = ws.SetReadDeadline(readBy())
	typ, answer, err := ws.ReadMessage()
	for err == nil && typ == websocket.BinaryMessage && isHeartbeat(answer) {
		_ = ws.SetReadDeadline(readBy())
		typ, answer, err = ws.ReadMessage()
	}
	_ = ws.SetReadDeadline(time.Time{})
	if err != nil {
		ws.Close()
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code == CloseNotResumable {
			if strings.HasSuffix(ce.Text, "wrong token") && c.nextToken() {
				return nil, fmt.Errorf("client: resume: %s; trying the token of an earlier attempt", ce.Text)
			}
			return nil, fmt.Errorf("%w: %s", ErrNotResumable, ce.Text)
		}
		if errors.As(err, &ce) && !isResumableDrop(err) {
			return nil, fmt.Errorf("%w: gateway closed with %d %q", ErrNotResumable, ce.Code, ce.Text)
		}
		// The gateway may have taken the session over with this connection's token before the
		// answer was lost: a later attempt may need it (RESUME.md §1.6: a wrong token leaves the
		// session untouched, so trying it costs nothing).
		c.keepCandidateToken(offer.Token)
		return nil, fmt.Errorf("client: read resume answer: %w", err)
	}
	if typ != websocket.BinaryMessage {
		c.closeWith(ws, 4000, "Resume failed")
		return nil, fatal(fmt.Errorf("%w: resume answer is not binary", ErrInvalidMessage), 4000, "Resume failed")
	}
	resumed, err := protocol.DecodeResumed(answer)
	if err != nil {
		c.closeWith(ws, 4000, "Resume failed")
		return nil, fatal(fmt.Errorf("%w: %w", ErrInvalidMessage, err), 4000, "Resume failed")
	}
	lastClientSeq := resumed.LastClientSeq
	if !stop() {
		ws.Close()
		return nil, ctx.Err()
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	// The gateway answered: the session is now on this connection's token, whatever happens to
	// the connection from here on.
	c.token, c.candidates = offer.Token, nil
	if lastClientSeq > c.outSeq {
		c.closeWith(ws, 4000, "Resume failed")
		return nil, fatal(fmt.Errorf("%w: gateway claims client message %d, last sent is %d", ErrInvalidMessage, lastClientSeq, c.outSeq), 4000, "Resume failed")
	}
	c.trimPendingLocked(lastClientSeq)
	for i := range c.pending {
		if err := c.writeMessageLocked(ws, &c.pending[i]); err != nil {
			ws.Close()
			return nil, fmt.Errorf("client: re-send ws_message %d: %w", c.pending[i].msg.SequenceNum, err)
		}
		c.resent.Add(1)
	}
	c.heartbeat = time.Duration(offer.HeartbeatMillis) * time.Millisecond
	c.gateway = gw
	c.ws = ws
	c.cur.Store(ws)
	if c.finished() {
		ws.Close()
		return nil, ErrClosed
	}
	c.log.Debug("resumed", "last_seq", lastSeq, "last_client_seq", lastClientSeq, "resent", len(c.pending))
	return ws, nil
}
