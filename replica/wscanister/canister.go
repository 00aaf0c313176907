// Package wscanister is the ic-websocket demo canister that runs inside the replica simulator. It
// re-states ic-websocket-cdk 0.4.1 in Go (client and gateway registration, per-gateway queues and
// nonces, sequence numbers, certification of every message, ack and keep-alive timers, expiry of
// old messages and idle gateways) and puts a small demo app on top: every app message is echoed
// back to its sender, and "burst:N" makes the canister send N messages instead.
//
// Its Candid interface (demo.did, served as metadata "candid:service") is the CDK's
// service.example.did with AppMessage = record { text : text; timestamp : nat64 }.
//
// Test hooks (Send, Broadcast, CloseClient, Upgrade, Received, Clients) drive and observe the
// canister from Go; ControlHandler exposes the same hooks over HTTP for multi-process tests.
package wscanister

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
)

// CandidService is the canister's Candid interface, served as metadata "candid:service".
//
//go:embed demo.did
var CandidService string

// ErrNotConnected is returned by the test hooks for a client key that has no open connection.
var ErrNotConnected = errors.New("client not connected")

// ClientLog is what the canister received from one client key, kept after the client leaves.
type ClientLog struct {
	// Texts are the texts of the app messages received, oldest first (at most MaxLoggedTexts,
	// the newest ones win).
	Texts []string `json:"texts"`
	// Received counts every app message, including those dropped from Texts.
	Received       int `json:"received"`
	SequenceErrors int `json:"sequence_errors"`
	// Closes are the reasons the client left: "ws_close", "replaced" (same principal opened a new
	// key), "upgrade", or a CloseMessage reason (WrongSequenceNumber, KeepAliveTimeout,
	// ClosedByApplication).
	Closes          []string `json:"closes"`
	KeepAlives      int      `json:"keep_alives"`
	LastIncomingSeq uint64   `json:"last_incoming_seq"`
	Open            bool     `json:"open"`
}

// Canister is the demo canister. It implements replica.Canister, replica.Runner,
// replica.MetadataProvider and replica.ControlProvider.
type Canister struct {
	cfg  Config
	host replica.Host
	log  *slog.Logger

	// mu guards everything below. Updates, timers and test hooks take it for writing; queries
	// for reading, and they ask the host for the data certificate while holding it so that the
	// certificate covers exactly the tree they witness.
	mu   sync.RWMutex
	st   *wsState
	logs map[clientID]*ClientLog
	// certified is the certified data last handed to the host.
	certified [32]byte

	// resetTimers restarts the timer phase after Upgrade, as the CDK's init does.
	resetTimers chan struct{}
}

var (
	_ replica.Canister         = (*Canister)(nil)
	_ replica.Runner           = (*Canister)(nil)
	_ replica.MetadataProvider = (*Canister)(nil)
	_ replica.ControlProvider  = (*Canister)(nil)
)

// New validates cfg (as the CDK's init does) and returns a canister with empty state.
func New(cfg Config, host replica.Host) (*Canister, error) {
	if host == nil {
		return nil, errors.New("wscanister: nil host")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Canister{
		cfg:         cfg,
		host:        host,
		log:         cfg.Logger.With("canister", host.CanisterID().Encode()),
		logs:        make(map[clientID]*ClientLog),
		resetTimers: make(chan struct{}, 1),
	}
	c.st = c.newState()
	if err := c.flushCertifiedData(true); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Canister) newState() *wsState {
	return newWSState(uint64(c.cfg.AckInterval), c.cfg.DeleteBatch)
}

// Metadata serves "candid:service".
func (c *Canister) Metadata(name string) ([]byte, bool) {
	if name == "candid:service" {
		return []byte(CandidService), true
	}
	return nil, false
}

func nanos(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func (c *Canister) callTime(call replica.Call) uint64 {
	if call.Time.IsZero() {
		return nanos(c.cfg.Now())
	}
	return nanos(call.Time)
}

func (c *Canister) trap(msg string) error {
	return replica.CanisterTrapped(c.host.CanisterID(), msg)
}

// decodeFailed is the trap of a method whose Candid argument does not decode, as the CDK's
// argument decoding panics.
func (c *Canister) decodeFailed(method string, err error) error {
	return c.trap(fmt.Sprintf("%s: failed to decode the Candid argument: %v", method, err))
}

// Update executes ws_open, ws_message and ws_close, and ws_get_messages as a replicated query.
func (c *Canister) Update(ctx context.Context, call replica.Call) ([]byte, error) {
	switch call.Method {
	case "ws_open":
		args, err := protocol.DecodeWsOpenArgs(call.Arg)
		if err != nil {
			return nil, c.decodeFailed(call.Method, err)
		}
		return c.runUpdate(call, func(now uint64) error { return c.st.wsOpen(call.Caller, args, now, c) })
	case "ws_message":
		msg, err := protocol.DecodeWsMessageArgs(call.Arg)
		if err != nil {
			return nil, c.decodeFailed(call.Method, err)
		}
		return c.runUpdate(call, func(now uint64) error { return c.st.wsMessage(call.Caller, msg, now, c) })
	case "ws_close":
		args, err := protocol.DecodeWsCloseArgs(call.Arg)
		if err != nil {
			return nil, c.decodeFailed(call.Method, err)
		}
		return c.runUpdate(call, func(now uint64) error { return c.st.wsClose(call.Caller, args, now, c) })
	case "ws_get_messages":
		// A query method called as an update runs replicated, where data_certificate() is
		// None: the CDK's unwrap traps whenever there is something to certify.
		call.DataCertificate = nil
		return c.getMessages(call)
	}
	return nil, replica.MethodNotFound(c.host.CanisterID(), call.Method, false)
}

// runUpdate runs fn under the write lock, maps its outcome to a reply or a trap, and publishes
// the new certified data.
func (c *Canister) runUpdate(call replica.Call, fn func(now uint64) error) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := fn(c.callTime(call))
	if ferr := c.flushCertifiedData(false); ferr != nil {
		return nil, c.trap(ferr.Error())
	}
	var trap *trapError
	if errors.As(err, &trap) {
		return nil, c.trap(trap.msg)
	}
	res := protocol.ResultOk()
	if err != nil {
		var ws errWs
		if !errors.As(err, &ws) {
			return nil, c.trap(err.Error())
		}
		res = protocol.ResultErr(err.Error())
		c.log.Debug("call returned Err", "method", call.Method, "caller", call.Caller.Encode(), "err", err)
	}
	b, merr := protocol.EncodeWsResult(res)
	if merr != nil {
		return nil, c.trap(fmt.Sprintf("encode reply: %v", merr))
	}
	return b, nil
}

// flushCertifiedData hands the tree's certified data to the host when it changed. The CDK calls
// set_certified_data after every change within a call; only the last value is observable.
func (c *Canister) flushCertifiedData(force bool) error {
	d := c.st.tree.certifiedData()
	if !force && d == c.certified {
		return nil
	}
	if err := c.host.SetCertifiedData(d[:]); err != nil {
		return fmt.Errorf("set certified data: %w", err)
	}
	c.certified = d
	return nil
}

// Query executes ws_get_messages.
func (c *Canister) Query(ctx context.Context, call replica.Call) ([]byte, error) {
	if call.Method == "ws_get_messages" {
		return c.getMessages(call)
	}
	return nil, replica.MethodNotFound(c.host.CanisterID(), call.Method, true)
}

func (c *Canister) getMessages(call replica.Call) ([]byte, error) {
	args, err := protocol.DecodeWsGetMessagesArgs(call.Arg)
	if err != nil {
		return nil, c.decodeFailed(call.Method, err)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := protocol.CanisterOutputCertifiedMessages{
		Messages:     []protocol.CanisterOutputMessage{},
		Cert:         []byte{},
		Tree:         []byte{},
		IsEndOfQueue: true,
	}
	if g, ok := c.st.gateways[string(call.Caller.Raw)]; ok {
		batch, end := g.messagesFrom(args.Nonce, c.cfg.MaxReturnedMessages)
		if len(batch) > 0 {
			if call.DataCertificate == nil {
				return nil, c.trap("called `Option::unwrap()` on a `None` value (data_certificate is only available in queries)")
			}
			cert, err := call.DataCertificate()
			if err != nil {
				return nil, c.trap(fmt.Sprintf("data certificate: %v", err))
			}
			witness := c.st.tree.valueRange(batch[0].out.Key, batch[len(batch)-1].out.Key)
			tree, err := hashtree.Serialize(hashtree.Labeled{Label: hashtree.Label(labelWebsocket), Tree: witness})
			if err != nil {
				return nil, c.trap(fmt.Sprintf("serialize witness: %v", err))
			}
			out.Messages = make([]protocol.CanisterOutputMessage, len(batch))
			for i, m := range batch {
				out.Messages[i] = m.out
			}
			out.Cert = cert
			out.Tree = append(append([]byte{}, protocol.SelfDescribeTag...), tree...)
			out.IsEndOfQueue = end
		}
	}
	b, err := protocol.EncodeGetMessagesResult(protocol.CanisterWsGetMessagesResult{Ok: &out})
	if err != nil {
		return nil, c.trap(fmt.Sprintf("encode reply: %v", err))
	}
	return b, nil
}

// Run drives the CDK timers until ctx ends: every AckInterval an ack round, and KeepAliveTimeout
// after each ack round a keep-alive check. Upgrade restarts the phase, as init does.
func (c *Canister) Run(ctx context.Context) error {
	ack := time.NewTicker(c.cfg.AckInterval)
	defer ack.Stop()
	check := time.NewTimer(time.Hour)
	check.Stop()
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.resetTimers:
			ack.Reset(c.cfg.AckInterval)
			check.Stop()
		case <-ack.C:
			c.AckRound()
			check.Reset(c.cfg.KeepAliveTimeout)
		case <-check.C:
			c.KeepAliveCheck()
		}
	}
}

// AckRound runs the ack timer callback now. Run calls it; tests may call it to drive time.
func (c *Canister) AckRound() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.sendAcks(nanos(c.cfg.Now()))
	c.flushOrLog()
}

// KeepAliveCheck runs the keep-alive timer callback now. Run calls it; tests may call it.
func (c *Canister) KeepAliveCheck() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.checkKeepAlive(nanos(c.cfg.Now()), uint64(c.cfg.KeepAliveTimeout), c)
	c.flushOrLog()
}

func (c *Canister) flushOrLog() {
	if err := c.flushCertifiedData(false); err != nil {
		c.log.Error("certified data", "err", err)
	}
}

// Send sends an app message with text to one client (the CDK's send).
func (c *Canister) Send(client protocol.ClientKey, text string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := nanos(c.cfg.Now())
	err := c.st.sendApp(client, protocol.AppMessage{Text: text, Timestamp: now}, now)
	c.flushOrLog()
	return c.hookErr(client, err)
}

// Broadcast sends an app message with text to every connected client and returns how many.
func (c *Canister) Broadcast(text string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := nanos(c.cfg.Now())
	n := 0
	for _, cl := range c.st.sortedClients() {
		if c.st.sendApp(cl.key, protocol.AppMessage{Text: text, Timestamp: now}, now) == nil {
			n++
		}
	}
	c.flushOrLog()
	return n
}

// CloseClient closes a client with CloseMessage ClosedByApplication (the CDK's close).
func (c *Canister) CloseClient(client protocol.ClientKey) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.st.closeClient(client, nanos(c.cfg.Now()), c)
	c.flushOrLog()
	return c.hookErr(client, err)
}

func (c *Canister) hookErr(client protocol.ClientKey, err error) error {
	var ws errWs
	if errors.As(err, &ws) {
		return fmt.Errorf("%w: %s (%s)", ErrNotConnected, client, ws)
	}
	return err
}

// Upgrade wipes the CDK state, as upgrading a CDK canister does (its state is not stable):
// every client and gateway is forgotten, new gateways start again at nonce 0, and the timers
// restart. The test log survives, with a close "upgrade" for each client that was open.
func (c *Canister) Upgrade() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.st.sortedClients() {
		c.onClose(cl.key, "upgrade")
	}
	c.st = c.newState()
	c.flushOrLog()
	select {
	case c.resetTimers <- struct{}{}:
	default:
	}
	c.log.Info("canister upgraded: state wiped")
}

// Received returns a copy of what the canister received from a client key.
func (c *Canister) Received(client protocol.ClientKey) ClientLog {
	c.mu.RLock()
	defer c.mu.RUnlock()
	l, ok := c.logs[idOf(client)]
	if !ok {
		return ClientLog{}
	}
	cp := *l
	texts := l.Texts
	if max := c.cfg.MaxLoggedTexts; len(texts) > max {
		texts = texts[len(texts)-max:]
	}
	cp.Texts = append([]string(nil), texts...)
	cp.Closes = append([]string(nil), l.Closes...)
	return cp
}

// Clients lists the connected client keys in registration order.
func (c *Canister) Clients() []protocol.ClientKey {
	c.mu.RLock()
	defer c.mu.RUnlock()
	cls := c.st.sortedClients()
	out := make([]protocol.ClientKey, len(cls))
	for i, cl := range cls {
		out[i] = cl.key
	}
	return out
}

// Gateways lists the registered gateways and their next queue nonce, sorted by principal text.
func (c *Canister) Gateways() map[string]uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]uint64, len(c.st.gateways))
	for _, g := range c.st.gateways {
		out[g.principal.Encode()] = g.nonce
	}
	return out
}

// CertifiedData returns the certified data the canister last set.
func (c *Canister) CertifiedData() []byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]byte(nil), c.certified[:]...)
}

// --- demo app and test log (hooks; called with mu held for writing) ---

func (c *Canister) logFor(k protocol.ClientKey) *ClientLog {
	id := idOf(k)
	l, ok := c.logs[id]
	if !ok {
		l = &ClientLog{}
		c.logs[id] = l
	}
	return l
}

func (c *Canister) onOpen(k protocol.ClientKey) {
	c.logFor(k).Open = true
}

func (c *Canister) onClose(k protocol.ClientKey, reason string) {
	l := c.logFor(k)
	l.Open = false
	l.Closes = append(l.Closes, reason)
}

func (c *Canister) onKeepAlive(k protocol.ClientKey) { c.logFor(k).KeepAlives++ }

func (c *Canister) onSequenceError(k protocol.ClientKey) { c.logFor(k).SequenceErrors++ }

func (c *Canister) onIncoming(k protocol.ClientKey, seq uint64) { c.logFor(k).LastIncomingSeq = seq }

// onMessage is the demo app: echo, or burst:N.
func (c *Canister) onMessage(k protocol.ClientKey, m protocol.AppMessage, now uint64) {
	l := c.logFor(k)
	l.Received++
	if max := c.cfg.MaxLoggedTexts; max > 0 {
		l.Texts = append(l.Texts, m.Text)
		// Trim in halves so that logging stays O(1) amortised per message.
		if len(l.Texts) >= 2*max {
			l.Texts = append([]string(nil), l.Texts[len(l.Texts)-max:]...)
		}
	}
	if n, ok := parseBurst(m.Text); ok {
		if n > c.cfg.MaxBurst {
			c.log.Warn("burst capped", "client", k.String(), "requested", n, "max", c.cfg.MaxBurst)
			n = c.cfg.MaxBurst
		}
		for i := 1; i <= n; i++ {
			if err := c.st.sendApp(k, protocol.AppMessage{Text: "burst:" + strconv.Itoa(i), Timestamp: now}, now); err != nil {
				c.log.Error("burst send", "client", k.String(), "err", err)
				return
			}
		}
		return
	}
	if err := c.st.sendApp(k, protocol.AppMessage{Text: m.Text, Timestamp: now}, now); err != nil {
		c.log.Error("echo send", "client", k.String(), "err", err)
	}
}

// parseBurst recognises "burst:N" with N a positive decimal integer.
func parseBurst(text string) (int, bool) {
	rest, ok := strings.CutPrefix(text, "burst:")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
