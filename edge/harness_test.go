package edge

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

type env struct {
	t  testing.TB
	nc *nats.Conn
	js jetstream.JetStream
	h  *bus.Handles
	gw principal.Principal
	// refuseOpens, when set, makes the stand-in submitter refuse every ws_open with this reason.
	refuseOpens atomic.Pointer[string]
	// holdOpens, when set, makes the stand-in submitter leave ws_open outcomes unrecorded.
	holdOpens atomic.Bool
}

func startNATS(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	_, nc, js := testkit.StartBroker(t, bus.DefaultTopology())
	return nc, js
}

func newEnv(t testing.TB) *env {
	nc, js := startNATS(t)
	h, err := bus.Open(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return newEnvWith(t, nc, js, h)
}

func newEnvWith(t testing.TB, nc *nats.Conn, js jetstream.JetStream, h *bus.Handles) *env {
	id := testkit.NewIdentity(t)
	v := &env{t: t, nc: nc, js: js, h: h, gw: id.Sender()}
	v.settleOpens()
	return v
}

// settleOpens stands in for the submitter's part of opening a session: it sees each ws_open as
// it is stored in ICWS_IN and records the IC's answer (confirmed, or refused when refuseOpens is
// set) in the session record, then tells the session's edge.
func (v *env) settleOpens() {
	sessions := bus.NewSessions(v.h.Sessions, v.js)
	sub, err := v.nc.Subscribe(bus.SubjectInAll, func(m *nats.Msg) {
		if m.Header.Get(bus.HeaderKind) != bus.KindOpen || v.holdOpens.Load() {
			return
		}
		_, ref, err := bus.ParseInSubject(m.Subject)
		if err != nil {
			return
		}
		key, tag := bus.SessionKey(ref.CanisterText, ref.Client), m.Header.Get(bus.HeaderSessionTag)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			reason := v.refuseOpens.Load()
			var edgeID string
			_, _, err := sessions.Modify(ctx, key, 10, func(rec *bus.SessionRecord) (bool, error) {
				if rec == nil || rec.Tag() != tag {
					return false, nil
				}
				edgeID = rec.Edge
				if reason != nil {
					return false, nil
				}
				rec.Confirmed = true
				return true, nil
			})
			if err != nil || edgeID == "" {
				return
			}
			res := nats.NewMsg(bus.OpenResultSubject(edgeID))
			res.Data = []byte(key)
			res.Header.Set(bus.HeaderSessionTag, tag)
			if reason != nil {
				if rec, rev, err := sessions.Get(ctx, key); err == nil && rec != nil {
					_ = sessions.Delete(ctx, key, rev)
				}
				res.Header.Set(bus.HeaderOpenOutcome, bus.OpenRefused)
				res.Header.Set(bus.HeaderOpenReason, *reason)
			} else {
				res.Header.Set(bus.HeaderOpenOutcome, bus.OpenConfirmed)
			}
			_ = v.nc.PublishMsg(res)
		}()
	})
	if err != nil {
		v.t.Fatal(err)
	}
	v.t.Cleanup(func() { _ = sub.Unsubscribe() })
}

type runningEdge struct {
	*Edge
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	url    string
}

func testConfig(id string) Config {
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.Listen = "127.0.0.1:0"
	cfg.OpenTimeout = 5 * time.Second
	cfg.DrainTimeout = 5 * time.Second
	cfg.SweepInterval = 50 * time.Millisecond
	cfg.LeaseTTL = 600 * time.Millisecond
	// A busy test machine can delay a NATS round trip past the default bound; only the tests of
	// losing NATS set a short one.
	cfg.NATSTimeout = 20 * time.Second
	cfg.JetStreamTimeout = 20 * time.Second
	return cfg
}

func (v *env) startEdge(cfg Config) *runningEdge {
	v.t.Helper()
	return v.startEdgeWith(cfg, nil)
}

// startEdgeWith starts an edge like startEdge after prepare (if not nil) has set its test hooks.
func (v *env) startEdgeWith(cfg Config, prepare func(*Edge)) *runningEdge {
	t := v.t
	t.Helper()
	reg := prometheus.NewRegistry()
	e, err := New(cfg, Deps{NC: v.nc, JS: v.js, Gateway: v.gw, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	re := &runningEdge{Edge: e, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { re.done <- e.Run(ctx) }()
	testkit.WaitFor(t, 10*time.Second, "edge listening", func() bool { return e.Addr() != nil })
	re.url = "ws://" + e.Addr().String() + "/"
	t.Cleanup(func() { re.stop() })
	return re
}

func (re *runningEdge) stop() error {
	re.cancel()
	select {
	case err, ok := <-re.done:
		if ok {
			close(re.done)
		}
		return err
	case <-time.After(15 * time.Second):
		return errors.New("edge did not stop")
	}
}

// ---- client side ----

type client struct {
	t        testing.TB
	id       identity.Identity
	nonce    uint64
	canister principal.Principal
	gw       principal.Principal
	ws       *websocket.Conn
	token    []byte
	seq      uint64 // last ws_message sequence number sent
}

func newClient(t testing.TB, gw, canister principal.Principal) *client {
	id := testkit.NewIdentity(t)
	var b [8]byte
	_, _ = rand.Read(b[:])
	n := uint64(0)
	for _, x := range b {
		n = n<<8 | uint64(x)
	}
	return &client{t: t, id: id, nonce: n >> 1, canister: canister, gw: gw}
}

func (c *client) key() protocol.ClientKey {
	return protocol.ClientKey{ClientPrincipal: c.id.Sender(), ClientNonce: c.nonce}
}

// openedClient is a new client of a random canister, connected to url, whose session is open and
// whose open answer (seq 1) has been read.
func openedClient(t testing.TB, v *env, url string, resume bool) *client {
	t.Helper()
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(url, resume)
	c.open()
	if seq, _ := c.next(); seq != 1 {
		t.Fatalf("first canister message has seq %d, want 1", seq)
	}
	return c
}

func (c *client) dial(u string, resume bool) []byte {
	c.t.Helper()
	if resume {
		u += "?icws-resume=1"
	}
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		c.t.Fatalf("dial: %v", err)
	}
	c.ws = ws
	c.t.Cleanup(func() { _ = ws.Close() })
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, hs, err := ws.ReadMessage()
	if err != nil || typ != websocket.BinaryMessage {
		c.t.Fatalf("handshake: %v %d", err, typ)
	}
	if resume {
		h, err := protocol.DecodeHandshake(hs)
		if err != nil || h.Resume == nil || len(h.Resume.Token) != 32 {
			c.t.Fatalf("resume handshake: %v %+v", err, h)
		}
		c.token = h.Resume.Token
	}
	return hs
}

// signedEnvelope builds a signed call envelope {content, sender_pubkey, sender_sig}, untagged as
// agent-js puts it in a client frame.
func signedEnvelope(t testing.TB, id identity.Identity, canister principal.Principal, method string, arg []byte) []byte {
	t.Helper()
	return protocol.StripSelfDescribe(testkit.SignedCall(t, id, canister, method, arg))
}

func (c *client) openEnvelope(gw principal.Principal) []byte {
	arg, err := candid.Marshal([]any{protocol.CanisterWsOpenArguments{ClientNonce: c.nonce, GatewayPrincipal: gw}})
	if err != nil {
		c.t.Fatal(err)
	}
	return signedEnvelope(c.t, c.id, c.canister, "ws_open", arg)
}

func (c *client) messageEnvelope(seq uint64, withApp bool) []byte {
	msg := protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{
		ClientKey: c.key(), SequenceNum: seq, Timestamp: uint64(time.Now().UnixNano()), Content: []byte("hello " + strconv.FormatUint(seq, 10)),
	}}
	var arg []byte
	var err error
	if withApp {
		app := protocol.AppMessage{Text: "x", Timestamp: 1}
		arg, err = candid.Marshal([]any{msg, &app})
	} else {
		arg, err = candid.Marshal([]any{msg})
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return signedEnvelope(c.t, c.id, c.canister, "ws_message", arg)
}

func (c *client) sendEnvelope(env []byte) {
	c.t.Helper()
	f, err := protocol.EncodeClientFrame(env)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *client) open() []byte {
	env := c.openEnvelope(c.gw)
	c.sendEnvelope(env)
	return env
}

func (c *client) send() []byte {
	c.seq++
	env := c.messageEnvelope(c.seq, c.seq%2 == 0)
	c.sendEnvelope(env)
	return env
}

// next reads one canister message frame and returns its Icws-Seq (carried in the test key).
func (c *client) next() (uint64, []byte) {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, f, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if typ != websocket.BinaryMessage {
		c.t.Fatalf("frame type %d", typ)
	}
	m, err := protocol.DecodeCanisterToClientMessage(f)
	if err != nil {
		c.t.Fatalf("decode frame %x: %v", f, err)
	}
	seq, err := strconv.ParseUint(string(m.Content), 10, 64)
	if err != nil {
		c.t.Fatalf("content %q", m.Content)
	}
	return seq, f
}

// expectClose reads until the close frame and returns its code and text.
func expectClose(t testing.TB, ws *websocket.Conn) (int, string) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		t.Fatalf("expected a close frame, got %v", err)
	}
}

func (c *client) resumeFrame(canister principal.Principal, token []byte, lastSeq uint64) []byte {
	b, err := protocol.ResumeRequest{
		Token: token, CanisterID: canister.Raw,
		ClientKey: protocol.ResumeClientKey{ClientPrincipal: c.id.Sender().Raw, ClientNonce: c.nonce}, LastSeq: lastSeq,
	}.Encode()
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// resume dials with opt-in, sends the resume frame and returns the answer or the close.
func (c *client) resume(u string, lastSeq uint64) (lastClient uint64, code int, reason string) {
	c.t.Helper()
	old := c.token
	c.dial(u, true)
	if err := c.ws.WriteMessage(websocket.BinaryMessage, c.resumeFrame(c.canister, old, lastSeq)); err != nil {
		c.t.Fatal(err)
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, f, err := c.ws.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return 0, ce.Code, ce.Text
		}
		c.t.Fatalf("resume answer: %v", err)
	}
	r, err := protocol.DecodeResumed(f)
	if err != nil {
		c.t.Fatalf("resume answer %x: %v", f, err)
	}
	return r.LastClientSeq, 0, ""
}

// ---- fake pipeline (stands in for submitter and poller) ----

type pipeline struct {
	t      testing.TB
	js     jetstream.JetStream
	gw     principal.Principal
	mu     sync.Mutex
	seq    map[string]uint64 // OUT subject → last seq published in the current session
	opens  map[string]int    // OUT subject → sessions opened (a new session restarts at seq 1)
	paused bool
	held   []*nats.Msg
	sub    *nats.Subscription
	echo   bool
}

func (v *env) startPipeline(echo bool) *pipeline {
	p := &pipeline{t: v.t, js: v.js, gw: v.gw, seq: map[string]uint64{}, opens: map[string]int{}, echo: echo}
	sub, err := v.nc.Subscribe(bus.SubjectInAll, p.onIn)
	if err != nil {
		v.t.Fatal(err)
	}
	p.sub = sub
	v.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return p
}

func outSubjectOf(inSubject string) string {
	// icws.in.<p>.<canister>.<client> → icws.out.<canister>.<client>
	var parts [5]string
	n := 0
	start := 0
	for i := 0; i < len(inSubject) && n < 4; i++ {
		if inSubject[i] == '.' {
			parts[n] = inSubject[start:i]
			n++
			start = i + 1
		}
	}
	parts[4] = inSubject[start:]
	return bus.OutSubject(parts[3], parts[4])
}

func (p *pipeline) onIn(m *nats.Msg) {
	p.mu.Lock()
	if p.paused {
		p.held = append(p.held, m)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	switch m.Header.Get(bus.HeaderKind) {
	case bus.KindOpen:
		// Like the CDK, a new session of a client key starts its sequence numbers again.
		subj := outSubjectOf(m.Subject)
		p.mu.Lock()
		p.seq[subj] = 0
		p.opens[subj]++
		p.mu.Unlock()
		p.publishNext(subj)
	case bus.KindMessage:
		if p.echo {
			p.publishNext(outSubjectOf(m.Subject))
		}
	}
}

func (p *pipeline) pause() { p.mu.Lock(); p.paused = true; p.mu.Unlock() }
func (p *pipeline) resume() {
	p.mu.Lock()
	p.paused = false
	held := p.held
	p.held = nil
	p.mu.Unlock()
	for _, m := range held {
		p.onIn(m)
	}
}

// outMsg builds the ICWS_OUT message for seq; the content carries the seq as text, so tests can
// read it back from the frame.
func outMsg(gw principal.Principal, subject string, seq uint64, pad int) *nats.Msg {
	content := []byte(strconv.FormatUint(seq, 10))
	key := protocol.MessageKey(gw, seq)
	f, _ := protocol.CanisterToClientMessage{Key: key, Content: content, Cert: make([]byte, pad+1), Tree: []byte{0x83}}.Encode()
	m := nats.NewMsg(subject)
	m.Data = f
	m.Header.Set(bus.HeaderSeq, strconv.FormatUint(seq, 10))
	m.Header.Set(bus.HeaderNonce, strconv.FormatUint(seq, 10))
	sum := sha256.Sum256(content)
	m.Header.Set(bus.HeaderMsgID, subject+"."+key+"."+hex.EncodeToString(sum[:16]))
	return m
}

func (p *pipeline) publishNext(subject string) uint64 {
	p.mu.Lock()
	p.seq[subject]++
	s := p.seq[subject]
	p.mu.Unlock()
	p.publish(subject, s, 0)
	return s
}

func (p *pipeline) publish(subject string, seq uint64, pad int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := outMsg(p.gw, subject, seq, pad)
	p.mu.Lock()
	// The canister's queue nonce differs between sessions; here the seq stands in for it, so the
	// session count keeps the Msg-Ids of a reused client key apart.
	m.Header.Set(bus.HeaderMsgID, m.Header.Get(bus.HeaderMsgID)+"."+strconv.Itoa(p.opens[subject]))
	p.mu.Unlock()
	if _, err := p.js.PublishMsg(ctx, m); err != nil {
		p.t.Errorf("publish out: %v", err)
	}
}

// expectSeqs reads the canister messages first through last from c, in order.
func expectSeqs(t *testing.T, c *client, first, last uint64) {
	t.Helper()
	for want := first; want <= last; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("got %d, want %d", s, want)
		}
	}
}

// publishTogether stores seqs, in order, as one ICWS_OUT message of several frames (as a poller
// stores a client's frames of one answer).
func (p *pipeline) publishTogether(subject string, seqs ...uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := nats.NewMsg(subject)
	for _, s := range seqs {
		m.Data = bus.AppendOutFrame(m.Data, s, outMsg(p.gw, subject, s, 0).Data)
	}
	m.Header.Set(bus.HeaderSeq, strconv.FormatUint(seqs[0], 10))
	m.Header.Set(bus.HeaderFrames, strconv.Itoa(len(seqs)))
	m.Header.Set(bus.HeaderMsgID, subject+".together."+strconv.FormatUint(seqs[0], 10)+"-"+strconv.FormatUint(seqs[len(seqs)-1], 10))
	if _, err := p.js.PublishMsg(ctx, m); err != nil {
		p.t.Errorf("publish out: %v", err)
	}
}

// ---- stream and KV inspection ----

type inMsg struct {
	kind, clientSeq, msgID, reason string
	data                           []byte
}

func (v *env) inMessages(subject string) []inMsg {
	v.t.Helper()
	var out []inMsg
	var from uint64 = 1
	for {
		m, err := v.h.In.GetMsg(context.Background(), from, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			v.t.Fatalf("get in: %v", err)
		}
		from = m.Sequence + 1
		out = append(out, inMsg{kind: m.Header.Get(bus.HeaderKind), clientSeq: m.Header.Get(bus.HeaderClientSeq),
			msgID: m.Header.Get(bus.HeaderMsgID), reason: m.Header.Get(bus.HeaderCloseReason), data: m.Data})
	}
}

func (v *env) session(c *client) *bus.SessionRecord {
	v.t.Helper()
	ent, err := v.h.Sessions.Get(context.Background(), bus.SessionKey(c.canister.Encode(), c.key().Token()))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		v.t.Fatal(err)
	}
	var rec bus.SessionRecord
	if err := json.Unmarshal(ent.Value(), &rec); err != nil {
		v.t.Fatal(err)
	}
	return &rec
}

func (v *env) sessionCount() int {
	keys, err := v.h.Sessions.ListKeys(context.Background())
	if err != nil {
		v.t.Fatal(err)
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	return n
}

func inSubjectOf(v *env, c *client) string {
	ct, cl := c.canister.Encode(), c.key().Token()
	return bus.InSubject(bus.Partition(ct, cl, v.h.Partitions), ct, cl)
}

func outSubjectOfClient(c *client) string {
	return bus.OutSubject(c.canister.Encode(), c.key().Token())
}

// counter is the value of a counter or gauge.
func counter(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	return testkit.MetricValue(t, c)
}

func randomCanister(t testing.TB) principal.Principal {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	b[9] = 1
	return principal.Principal{Raw: b}
}

func goroutinesSettle(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d, baseline %d\n%s", n, base, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func rawDial(t testing.TB, addr net.Addr) net.Conn {
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
