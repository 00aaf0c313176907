package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
)

func TestHandshakeBytes(t *testing.T) {
	v := newEnv(t)
	e := v.startEdge(testConfig("e1"))
	c := newClient(t, v.gw, randomCanister(t))
	hs := c.dial(e.url, false)
	want, _ := protocol.GatewayHandshake{GatewayPrincipal: v.gw.Raw}.Encode()
	if !bytes.Equal(hs, want) {
		t.Fatalf("handshake %x, want %x", hs, want)
	}
	c2 := newClient(t, v.gw, randomCanister(t))
	hs2 := c2.dial(e.url, true)
	h, err := protocol.DecodeHandshake(hs2)
	if err != nil || !h.Gateway().Equal(v.gw) {
		t.Fatalf("resume handshake does not decode as a standard one: %v", err)
	}
	if !bytes.HasPrefix(hs2, protocol.SelfDescribeTag) {
		t.Fatal("no self-describe tag")
	}
}

func TestOpenRelaysEnvelopeAndDelivers(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(true)
	e := v.startEdge(testConfig("e1"))
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, false)
	env := c.open()
	seq, frame := c.next()
	if seq != 1 {
		t.Fatalf("first seq %d", seq)
	}
	stored, err := v.h.Out.GetLastMsgForSubject(context.Background(), outSubjectOfClient(c))
	if err != nil || !bytes.Equal(stored.Data, frame) {
		t.Fatalf("frame not byte-identical to the stored body: %v", err)
	}
	// The pipeline answered the open from its core subscription, which JetStream may serve before
	// the stream has stored the message.
	testkit.WaitFor(t, 10*time.Second, "ws_open stored in ICWS_IN", func() bool { return len(v.inMessages(inSubjectOf(v, c))) > 0 })
	in := v.inMessages(inSubjectOf(v, c))
	if len(in) != 1 || in[0].kind != bus.KindOpen || !bytes.Equal(in[0].data, env) ||
		!strings.HasPrefix(in[0].msgID, "open."+c.canister.Encode()+"."+c.key().Token()+".") {
		t.Fatalf("ICWS_IN: %+v", in)
	}
	rec := v.session(c)
	if rec == nil || rec.State != bus.SessionOpen || rec.Edge != "e1" || rec.Resumable {
		t.Fatalf("session record %+v", rec)
	}
	// Echo: messages are relayed in order and answered.
	for i := 0; i < 5; i++ {
		c.send()
	}
	for want := uint64(2); want <= 6; want++ {
		if got, _ := c.next(); got != want {
			t.Fatalf("got seq %d, want %d", got, want)
		}
	}
}

func TestMessagesBeforeOpenMessageRelayedInOrder(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	p.pause()
	e := v.startEdge(testConfig("e1"))
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, false)
	c.open()
	var envs [][]byte
	for i := 0; i < 5; i++ {
		envs = append(envs, c.send())
	}
	testkit.WaitFor(t, 10*time.Second, "6 messages on ICWS_IN", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 6 })
	in := v.inMessages(inSubjectOf(v, c))
	for i, m := range in[1:] {
		if m.kind != bus.KindMessage || m.clientSeq != strconv.Itoa(i+1) || !bytes.Equal(m.data, envs[i]) ||
			!strings.HasPrefix(m.msgID, "msg."+c.canister.Encode()+"."+c.key().Token()+".") || !strings.HasSuffix(m.msgID, "."+strconv.Itoa(i+1)) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	p.resume()
	if seq, _ := c.next(); seq != 1 {
		t.Fatalf("seq %d", seq)
	}
}

func TestDeliveryOrderDedupAndGapFill(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	subj := outSubjectOfClient(c)
	// Out of order and duplicates on the live subject (core publish duplicates reach subscribers
	// even when the stream de-duplicates them).
	p.publish(subj, 3, 0)
	p.publish(subj, 2, 0)
	_ = v.nc.PublishMsg(outMsg(v.gw, subj, 2, 0))
	p.publish(subj, 3, 0)
	p.publish(subj, 4, 0)
	_ = v.nc.PublishMsg(outMsg(v.gw, subj, 1, 0))
	// A message the live path misses: it must come from the stream.
	drop := make(chan struct{}, 1)
	dropFn := func(m *nats.Msg) bool {
		if m.Header.Get(bus.HeaderSeq) == "5" {
			select {
			case drop <- struct{}{}:
			default:
			}
			return true
		}
		return false
	}
	e.testDropLive.Store(&dropFn)
	p.publish(subj, 5, 0)
	<-drop
	p.publish(subj, 6, 0)
	for want := uint64(2); want <= 6; want++ {
		if got, _ := c.next(); got != want {
			t.Fatalf("got %d, want %d", got, want)
		}
	}
	if n := counter(t, e.m.gapFills); n < 1 {
		t.Fatalf("gap fills %v", n)
	}
	// Nothing more: a following message is 7, no duplicate of anything before.
	p.publish(subj, 7, 0)
	if got, _ := c.next(); got != 7 {
		t.Fatalf("got %d, want 7", got)
	}
}

func TestFirstFrameRejections(t *testing.T) {
	v := newEnv(t)
	allowed := randomCanister(t)
	cfg := testConfig("e1")
	cfg.Canisters = []string{allowed.Encode()}
	cfg.MaxMessageBytes = 4096
	e := v.startEdge(cfg)
	other := newClient(t, v.gw, allowed).id.Sender()

	dup := newClient(t, v.gw, allowed)
	dup.dial(e.url, false)
	dup.open()
	testkit.WaitFor(t, 5*time.Second, "dup session", func() bool { return v.session(dup) != nil })
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()

	cases := []struct {
		name   string
		frame  func(c *client) (int, []byte)
		code   int
		reason string
	}{
		{"wrong gateway", func(c *client) (int, []byte) {
			f, _ := protocol.EncodeClientFrame(c.openEnvelope(other))
			return websocket.BinaryMessage, f
		}, websocket.ClosePolicyViolation, "names another gateway"},
		{"not ws_open", func(c *client) (int, []byte) {
			f, _ := protocol.EncodeClientFrame(c.messageEnvelope(1, false))
			return websocket.BinaryMessage, f
		}, websocket.ClosePolicyViolation, "must be a ws_open call"},
		{"query envelope", func(c *client) (int, []byte) {
			env, _ := cbor.Marshal(map[string]any{"content": map[string]any{"request_type": "query", "method_name": "ws_open"}})
			f, _ := protocol.EncodeClientFrame(env)
			return websocket.BinaryMessage, f
		}, websocket.ClosePolicyViolation, "must be a ws_open call"},
		{"disallowed canister", func(c *client) (int, []byte) {
			c.canister = randomCanister(t)
			f, _ := protocol.EncodeClientFrame(c.openEnvelope(v.gw))
			return websocket.BinaryMessage, f
		}, websocket.ClosePolicyViolation, "canister not allowed"},
		{"duplicate client key", func(c *client) (int, []byte) {
			c.id, c.nonce = dup.id, dup.nonce
			f, _ := protocol.EncodeClientFrame(c.openEnvelope(v.gw))
			return websocket.BinaryMessage, f
		}, websocket.ClosePolicyViolation, "duplicate client key"},
		{"bad candid", func(c *client) (int, []byte) {
			f, _ := protocol.EncodeClientFrame(signedEnvelope(t, c.id, c.canister, "ws_open", []byte("DIDL\x00\x00")))
			return websocket.BinaryMessage, f
		}, websocket.CloseProtocolError, "ws_open argument"},
		{"garbage", func(c *client) (int, []byte) { return websocket.BinaryMessage, []byte{0xff, 0x00, 0x13} }, websocket.CloseProtocolError, "undecodable"},
		{"cbor without envelope", func(c *client) (int, []byte) {
			b, _ := cbor.Marshal(map[string]int{"x": 1})
			return websocket.BinaryMessage, b
		}, websocket.CloseProtocolError, "undecodable"},
		{"text frame", func(c *client) (int, []byte) { return websocket.TextMessage, []byte("hi") }, websocket.CloseUnsupportedData, "text"},
		{"oversize", func(c *client) (int, []byte) { return websocket.BinaryMessage, make([]byte, 5000) }, websocket.CloseMessageTooBig, ""},
		{"resume without opt-in", func(c *client) (int, []byte) {
			return websocket.BinaryMessage, c.resumeFrame(allowed, make([]byte, 32), 0)
		}, CloseNotResumable, "opt in"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, v.gw, allowed)
			c.dial(e.url, false)
			typ, f := tc.frame(c)
			if err := c.ws.WriteMessage(typ, f); err != nil {
				t.Fatal(err)
			}
			code, text := expectClose(t, c.ws)
			if code != tc.code || !strings.Contains(text, tc.reason) {
				t.Fatalf("close %d %q, want %d containing %q", code, text, tc.code, tc.reason)
			}
			_ = c.ws.Close()
		})
	}
	if n := v.sessionCount(); n != 1 {
		t.Fatalf("sessions left: %d, want only the duplicate's", n)
	}
	_ = dup.ws.Close()
	testkit.WaitFor(t, 5*time.Second, "dup session closed", func() bool { return v.sessionCount() == 0 })
	goroutinesSettle(t, base)
}

func TestEarlyDisconnectsLeaveNothing(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(true)
	e := v.startEdge(testConfig("e1"))
	// Warm up one full session so lazily started goroutines (nats, http) are in the baseline.
	w := openedClient(t, v, e.url, false)
	_ = w.ws.Close()
	testkit.WaitFor(t, 5*time.Second, "warm-up session gone", func() bool { return v.sessionCount() == 0 })
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()

	// TCP connect and reset, nothing sent.
	rc := rawDial(t, e.Addr())
	_ = rc.(*net.TCPConn).SetLinger(0)
	_ = rc.Close()
	// Half an HTTP request, then reset.
	rc = rawDial(t, e.Addr())
	_, _ = rc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"))
	_ = rc.(*net.TCPConn).SetLinger(0)
	_ = rc.Close()
	// Upgraded, handshake received, reset before the first frame.
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, false)
	_ = c.ws.UnderlyingConn().(*net.TCPConn).SetLinger(0)
	_ = c.ws.UnderlyingConn().Close()
	// Half a first frame, then reset.
	c = newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, false)
	_, _ = c.ws.UnderlyingConn().Write([]byte{0x82, 0x7e, 0x01})
	_ = c.ws.UnderlyingConn().(*net.TCPConn).SetLinger(0)
	_ = c.ws.UnderlyingConn().Close()
	// After the first frame: the standard session is closed (close request published).
	c = openedClient(t, v, e.url, false)
	_ = c.ws.UnderlyingConn().(*net.TCPConn).SetLinger(0)
	_ = c.ws.UnderlyingConn().Close()
	testkit.WaitFor(t, 5*time.Second, "close request", func() bool {
		in := v.inMessages(inSubjectOf(v, c))
		return len(in) == 2 && in[1].kind == bus.KindClose
	})
	// A resumable session after the first frame: detached, kept.
	r := openedClient(t, v, e.url, true)
	_ = r.ws.UnderlyingConn().(*net.TCPConn).SetLinger(0)
	_ = r.ws.UnderlyingConn().Close()
	testkit.WaitFor(t, 5*time.Second, "detached", func() bool {
		rec := v.session(r)
		return rec != nil && rec.State == bus.SessionDetached
	})
	testkit.WaitFor(t, 5*time.Second, "only the detached session left", func() bool { return v.sessionCount() == 1 })
	goroutinesSettle(t, base)
	if n := counter(t, e.m.connections); n != 0 {
		t.Fatalf("connections gauge %v", n)
	}
}

func TestClientCloseAfterMessages(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	for i := 0; i < 3; i++ {
		c.send()
	}
	_ = c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	testkit.WaitFor(t, 5*time.Second, "close request", func() bool {
		in := v.inMessages(inSubjectOf(v, c))
		return len(in) > 0 && in[len(in)-1].kind == bus.KindClose
	})
	in := v.inMessages(inSubjectOf(v, c))
	kinds := []string{}
	for _, m := range in {
		kinds = append(kinds, m.kind+m.clientSeq)
	}
	if strings.Join(kinds, ",") != "open,message1,message2,message3,close" {
		t.Fatalf("ICWS_IN order: %v", kinds)
	}
	if !strings.HasPrefix(in[4].msgID, "close."+c.canister.Encode()+"."+c.key().Token()+".") || in[4].reason == "" {
		t.Fatalf("close request %+v", in[4])
	}
	testkit.WaitFor(t, 5*time.Second, "session deleted", func() bool { return v.session(c) == nil })
}

func TestRelayPolicy(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	// A ws_message signed by someone else.
	other := newClient(t, v.gw, c.canister)
	c.sendEnvelope(other.messageEnvelope(1, false))
	code, text := expectClose(t, c.ws)
	if code != websocket.ClosePolicyViolation || !strings.Contains(text, "sender") {
		t.Fatalf("close %d %q", code, text)
	}
}

func TestSlowClient(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.SendQueue = 4
	cfg.WriteTimeout = 3 * time.Second
	e := v.startEdge(cfg)
	c := openedClient(t, v, e.url, true)
	overflow(t, p, e, c)
	code, text := expectClose(t, c.ws)
	if code != CloseSlowClient || text != reasonSlowClient {
		t.Fatalf("close %d %q", code, text)
	}
	testkit.WaitFor(t, 5*time.Second, "detached", func() bool {
		rec := v.session(c)
		return rec != nil && rec.State == bus.SessionDetached
	})
}

func TestDrainClosesWith1001(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	r := openedClient(t, v, e.url, true)
	s := openedClient(t, v, e.url, false)
	done := make(chan error, 1)
	go func() { done <- e.stop() }()
	for _, c := range []*client{r, s} {
		if code, _ := expectClose(t, c.ws); code != websocket.CloseGoingAway {
			t.Fatalf("close code %d", code)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rec := v.session(r); rec == nil || rec.State != bus.SessionDetached {
		t.Fatalf("resumable session after drain: %+v", rec)
	}
	if rec := v.session(s); rec != nil {
		t.Fatalf("standard session after drain: %+v", rec)
	}
}

// A new session reusing a client key within the duplicate window is not de-duplicated against the
// previous one: its open, messages and close all reach ICWS_IN.
func TestReusedClientKeyIsNotDeduplicated(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	c.send()
	testkit.WaitFor(t, 5*time.Second, "open+message", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 2 })
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	testkit.WaitFor(t, 5*time.Second, "first session gone", func() bool { return v.session(c) == nil })
	testkit.WaitFor(t, 5*time.Second, "first close", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 3 })

	c.seq = 0
	c.dial(e.url, false)
	c.open()
	c.next()
	c.send()
	testkit.WaitFor(t, 5*time.Second, "second open+message", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 5 })
	var kinds []string
	for _, m := range v.inMessages(inSubjectOf(v, c)) {
		kinds = append(kinds, m.kind+m.clientSeq)
	}
	if got := strings.Join(kinds, ","); got != "open,message1,close,open,message1" {
		t.Fatalf("ICWS_IN: %s", got)
	}
}

// Reopening a key whose record is closed (close request not yet published) publishes that close
// before the new open.
func TestReopenClosedRecordPublishesCloseFirst(t *testing.T) {
	v := newEnv(t)
	e := v.startEdge(testConfig("e1"))
	c := newClient(t, v.gw, randomCanister(t))
	key := bus.SessionKey(c.canister.Encode(), c.key().Token())
	rec := bus.SessionRecord{State: bus.SessionClosed, Canister: c.canister.Encode(), Client: c.key().Token(),
		Edge: "gone", OpenedAt: time.Now().Add(-time.Minute).UTC(),
		Partition: bus.Partition(c.canister.Encode(), c.key().Token(), v.h.Partitions)}
	val, _ := json.Marshal(rec)
	if _, err := v.h.Sessions.Create(context.Background(), key, val); err != nil {
		t.Fatal(err)
	}
	c.dial(e.url, false)
	c.open()
	testkit.WaitFor(t, 5*time.Second, "close and open relayed", func() bool { return len(v.inMessages(inSubjectOf(v, c))) >= 2 })
	in := v.inMessages(inSubjectOf(v, c))
	if len(in) < 2 || in[0].kind != bus.KindClose || in[1].kind != bus.KindOpen {
		t.Fatalf("ICWS_IN: %+v", in)
	}
}

// A client closed as slow did not read what the edge sent: its socket is reset, not left to
// deliver megabytes of unread frames from the kernel's buffers for minutes after the edge let go.
func TestSlowClientSocketIsReset(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.SendQueue = 4
	cfg.WriteTimeout = time.Second
	e := v.startEdge(cfg)
	c := openedClient(t, v, e.url, false)
	overflow(t, p, e, c)
	testkit.WaitFor(t, 20*time.Second, "the edge let go of the socket", func() bool { return e.connCount() == 0 })
	raw := c.ws.UnderlyingConn()
	_ = raw.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 1<<20)
	var err error
	for err == nil {
		_, err = raw.Read(buf)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the socket ended with %v, want a reset", err)
	}
}

// overflow sends c, which does not read, 256 KiB frames until they fill the socket buffers and then
// its send queue.
func overflow(t *testing.T, p *pipeline, e *runningEdge, c *client) {
	t.Helper()
	subj := outSubjectOfClient(c)
	go func() {
		for s := uint64(2); s < 400 && counter(t, e.m.overflows) == 0; s++ {
			p.publish(subj, s, 256<<10)
		}
	}()
	testkit.WaitFor(t, 20*time.Second, "overflow", func() bool { return counter(t, e.m.overflows) >= 1 })
}
