package edge

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/broker"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/natstest"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// failReads makes the next n reads of ICWS_OUT fail as a NATS timeout would (n < 0: all of them).
func failReads(e *runningEdge, n int64) *atomic.Int64 {
	var calls atomic.Int64
	f := func() error {
		k := calls.Add(1)
		if n < 0 || k <= n {
			return errors.New("injected: nats: timeout")
		}
		return nil
	}
	e.testReadErr.Store(&f)
	return &calls
}

// expectResumed reads the frame after the handshake and requires it to be {icws_resumed}.
func expectResumed(t *testing.T, c *client) {
	t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, fr, err := c.ws.ReadMessage()
	if err != nil {
		t.Fatalf("no {icws_resumed} after the handshake: %v", err)
	}
	if _, err := protocol.DecodeResumed(fr); err != nil {
		t.Fatalf("first frame after the handshake is not {icws_resumed}: %x", fr)
	}
}

func sendResume(t *testing.T, c *client, url string, lastSeq uint64) {
	t.Helper()
	old := c.token
	c.dial(url, true)
	if err := c.ws.WriteMessage(websocket.BinaryMessage, c.resumeFrame(c.canister, old, lastSeq)); err != nil {
		t.Fatal(err)
	}
}

// Finding 1: one transient read error during the replay must not lose the resume answer, and a
// live message arriving afterwards must come after it.
func TestResumeSurvivesTransientReadError(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openResumable(t, v, e.url, 0)
	subj := outSubjectOfClient(c)
	for s := uint64(2); s <= 3; s++ {
		p.publish(subj, s, 0)
		c.next()
	}
	dropSocket(t, v, c)
	calls := failReads(e, 1)
	sendResume(t, c, e.url, 3)
	waitFor(t, 5*time.Second, "the failed read retried", func() bool { return calls.Load() >= 2 })
	p.publish(subj, 4, 0)
	expectResumed(t, c)
	if s, _ := c.next(); s != 4 {
		t.Fatalf("after the resume answer got seq %d, want 4", s)
	}
}

// Finding 1, replay with history: the read error comes first, the replay follows complete.
func TestResumeReplayAfterTransientReadErrors(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openResumable(t, v, e.url, 0)
	subj := outSubjectOfClient(c)
	dropSocket(t, v, c)
	for s := uint64(2); s <= 5; s++ {
		p.publish(subj, s, 0)
	}
	failReads(e, 3)
	sendResume(t, c, e.url, 1)
	expectResumed(t, c)
	for want := uint64(2); want <= 5; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("replay: got %d, want %d", s, want)
		}
	}
}

// Finding 1: reads failing for longer than GapTimeout and the bus outage bound (twice
// JetStreamTimeout) end the resume with 4100 (nothing else was sent), and a live session's gap
// fill with 1011.
func TestReadErrorsPastGapTimeout(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.GapTimeout = 300 * time.Millisecond
	cfg.NATSTimeout = 500 * time.Millisecond
	cfg.JetStreamTimeout = 500 * time.Millisecond
	e := v.startEdge(cfg)
	c := openResumable(t, v, e.url, 0)
	dropSocket(t, v, c)
	failReads(e, -1)
	sendResume(t, c, e.url, 1)
	code, reason := expectClose(t, c.ws)
	if code != CloseNotResumable || !strings.HasPrefix(reason, notResumablePrefix) {
		t.Fatalf("close %d %q, want 4100", code, reason)
	}

	e.testReadErr.Store(nil)
	c2 := newClient(t, v.gw, randomCanister(t))
	c2.dial(e.url, false)
	c2.open()
	if s, _ := c2.next(); s != 1 {
		t.Fatalf("seq %d", s)
	}
	failReads(e, -1)
	p.publish(outSubjectOfClient(c2), 3, 0) // 2 is missing: a gap fill starts and cannot read
	code, _ = expectClose(t, c2.ws)
	if code != websocket.CloseInternalServerErr {
		t.Fatalf("close %d, want 1011", code)
	}
}

// Finding 2: a client's messages stored out of sequence order (2, 4, 3, 5) are a complete
// history: the resume succeeds and delivers 3, 4, 5 in order.
func TestResumeOutOfOrderStream(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openResumable(t, v, e.url, 0)
	subj := outSubjectOfClient(c)
	p.publish(subj, 2, 0)
	if s, _ := c.next(); s != 2 {
		t.Fatal(s)
	}
	dropSocket(t, v, c)
	for _, s := range []uint64{4, 3, 5} {
		p.publish(subj, s, 0)
	}
	if _, code, reason := c.resume(e.url, 2); code != 0 {
		t.Fatalf("resume refused with %d %q although 3, 4, 5 are stored", code, reason)
	}
	for want := uint64(3); want <= 5; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("got %d, want %d", s, want)
		}
	}
	p.publish(subj, 6, 0)
	if s, _ := c.next(); s != 6 {
		t.Fatalf("live: got %d, want 6", s)
	}
}

// Finding 2, live: a gap fill finds the missing message stored after later ones.
func TestGapFillOutOfOrderStream(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	subj := outSubjectOfClient(c)
	drop := func(m *nats.Msg) bool { return m.Header.Get(broker.HeaderSeq) == "2" }
	e.testDropLive.Store(&drop)
	for _, s := range []uint64{3, 4, 2, 5} {
		p.publish(subj, s, 0)
	}
	for want := uint64(2); want <= 5; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("got %d, want %d", s, want)
		}
	}
}

// Finding 3: an edge whose lease lapsed once gets its live sessions detached by another edge; it
// takes them back instead of closing them after the grace period.
func TestLeaseLapseReclaimsLiveSession(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg1 := testConfig("e1")
	cfg1.ResumeGrace = 300 * time.Millisecond
	e1 := v.startEdge(cfg1)
	cfg2 := testConfig("e2")
	cfg2.ResumeGrace = 300 * time.Millisecond
	cfg2.LeaseSkew = 0
	v.startEdge(cfg2)
	c := openResumable(t, v, e1.url, 1)

	// e1 misses its renewals for a while (as during a NATS leader election).
	stop := make(chan struct{})
	lapsed := make(chan struct{})
	go func() {
		defer close(lapsed)
		val, _ := json.Marshal(broker.LeaseRecord{Holder: "e1", ExpiresAt: time.Now().Add(-5 * time.Second)})
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = v.h.Leases.Put(context.Background(), broker.EdgeLeaseKey("e1"), val)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	waitFor(t, 5*time.Second, "detached by e2", func() bool {
		r := v.session(c)
		return r != nil && r.State == broker.SessionDetached
	})
	close(stop)
	<-lapsed
	waitFor(t, 5*time.Second, "reclaimed by e1", func() bool {
		r := v.session(c)
		return r != nil && r.State == broker.SessionOpen && r.Edge == "e1" &&
			counter(t, e1.m.sweeps.WithLabelValues("reclaimed")) > 0
	})
	// Past the grace period the session is still open and relays; no close request went out.
	deadline := time.Now().Add(3 * cfg1.ResumeGrace)
	for time.Now().Before(deadline) {
		if r := v.session(c); r == nil || r.State == broker.SessionClosed {
			t.Fatalf("session closed while its socket is live: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n := len(v.inMessages(inSubjectOf(v, c)))
	c.send()
	waitFor(t, 5*time.Second, "relayed", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == n+1 })
	for _, m := range v.inMessages(inSubjectOf(v, c)) {
		if m.kind == broker.KindClose {
			t.Fatalf("close request published for a live session: %+v", m)
		}
	}
}

// Finding 4: messages published while the edge is disconnected from NATS reach the client after
// the reconnect, without waiting for a later message.
func TestReconnectDeliversMissedMessages(t *testing.T) {
	srv, err := natstest.NewServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	// The test's own connection publishes; the edge's connection is the one that drops.
	_, pubJS := natstest.Connect(t, srv.ClientURL())
	testkit.EnsureTopology(t, pubJS, broker.DefaultTopology())
	enc, err := nats.Connect(srv.ClientURL(), nats.ReconnectWait(300*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(enc.Close)
	ejs, err := jetstream.New(enc)
	if err != nil {
		t.Fatal(err)
	}
	h, err := broker.Open(context.Background(), ejs)
	if err != nil {
		t.Fatal(err)
	}
	v := newEnvWith(t, enc, ejs, h)
	e := v.startEdge(testConfig("e1"))
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, false)
	var opens atomic.Int32
	sub, err := enc.Subscribe(broker.SubjectInAll, func(m *nats.Msg) {
		if m.Header.Get(broker.HeaderKind) == broker.KindOpen {
			opens.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	c.open()
	waitFor(t, 5*time.Second, "open relayed", func() bool { return opens.Load() > 0 })
	if _, err := pubJS.PublishMsg(context.Background(), outMsg(v.gw, outSubjectOfClient(c), 1, 0)); err != nil {
		t.Fatal(err)
	}
	if s, _ := c.next(); s != 1 {
		t.Fatal(s)
	}
	cid, err := enc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "edge disconnected", func() bool { return !enc.IsConnected() })
	subj := outSubjectOfClient(c)
	for s := uint64(2); s <= 3; s++ {
		if _, err := pubJS.PublishMsg(context.Background(), outMsg(v.gw, subj, s, 0)); err != nil {
			t.Fatalf("publish %d: %v", s, err)
		}
	}
	if enc.IsConnected() {
		t.Skip("the edge reconnected before the messages were published; nothing to prove")
	}
	for want := uint64(2); want <= 3; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("got %d, want %d", s, want)
		}
	}
}

// Finding 7: a gap fill reads from where the previous read stopped, not the client's whole history.
func TestGapFillStartsAfterLastRead(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	subj := outSubjectOfClient(c)
	for s := uint64(2); s <= 50; s++ {
		p.publish(subj, s, 0)
		c.next()
	}
	gap := func(seq string) {
		drop := func(m *nats.Msg) bool { return m.Header.Get(broker.HeaderSeq) == seq }
		e.testDropLive.Store(&drop)
	}
	gap("51")
	p.publish(subj, 51, 0)
	p.publish(subj, 52, 0)
	for want := uint64(51); want <= 52; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("got %d, want %d", s, want)
		}
	}
	before := counter(t, e.m.replayed)
	gap("53")
	p.publish(subj, 53, 0)
	p.publish(subj, 54, 0)
	for want := uint64(53); want <= 54; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("got %d, want %d", s, want)
		}
	}
	if read := counter(t, e.m.replayed) - before; read > 4 {
		t.Fatalf("second gap fill read %v stored messages, want at most 4 (not the whole history)", read)
	}
}

// Finding 10: with nothing stored for the client, a claimed last_seq above 0 is not resumable.
func TestResumeNothingStoredRejectsLastSeq(t *testing.T) {
	v := newEnv(t)
	e := v.startEdge(testConfig("e1"))
	// No pipeline: not even the OpenMessage is stored.
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, true)
	c.open()
	waitFor(t, 5*time.Second, "session open", func() bool { r := v.session(c); return r != nil && r.State == broker.SessionOpen })
	dropSocket(t, v, c)
	_, code, reason := c.resume(e.url, 7)
	if code != CloseNotResumable || !strings.Contains(reason, "above the highest stored sequence number 0") {
		t.Fatalf("close %d %q, want 4100 (last_seq above what was stored)", code, reason)
	}
}

// Finding 11: a new session reusing a client key within the duplicate window is not
// de-duplicated against the previous one: its open, messages and close all reach ICWS_IN.
func TestReusedClientKeyIsNotDeduplicated(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	c.send()
	waitFor(t, 5*time.Second, "open+message", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 2 })
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	waitFor(t, 5*time.Second, "first session gone", func() bool { return v.session(c) == nil })
	waitFor(t, 5*time.Second, "first close", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 3 })

	c.seq = 0
	c.dial(e.url, false)
	c.open()
	c.next()
	c.send()
	waitFor(t, 5*time.Second, "second open+message", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 5 })
	var kinds []string
	for _, m := range v.inMessages(inSubjectOf(v, c)) {
		kinds = append(kinds, m.kind+m.clientSeq)
	}
	if got := strings.Join(kinds, ","); got != "open,message1,close,open,message1" {
		t.Fatalf("ICWS_IN: %s", got)
	}
}

// Finding 11: reopening a key whose record is closed (close request not yet published) publishes
// that close before the new open.
func TestReopenClosedRecordPublishesCloseFirst(t *testing.T) {
	v := newEnv(t)
	e := v.startEdge(testConfig("e1"))
	c := newClient(t, v.gw, randomCanister(t))
	key := broker.SessionKey(c.canister.Encode(), c.key().Token())
	rec := broker.SessionRecord{State: broker.SessionClosed, Canister: c.canister.Encode(), Client: c.key().Token(),
		Edge: "gone", OpenedAt: time.Now().Add(-time.Minute).UTC(),
		Partition: broker.Partition(c.canister.Encode(), c.key().Token(), v.h.Partitions)}
	val, _ := json.Marshal(rec)
	if _, err := v.h.Sessions.Create(context.Background(), key, val); err != nil {
		t.Fatal(err)
	}
	c.dial(e.url, false)
	c.open()
	waitFor(t, 5*time.Second, "close and open relayed", func() bool { return len(v.inMessages(inSubjectOf(v, c))) >= 2 })
	in := v.inMessages(inSubjectOf(v, c))
	if len(in) < 2 || in[0].kind != broker.KindClose || in[1].kind != broker.KindOpen {
		t.Fatalf("ICWS_IN: %+v", in)
	}
}

// Finding 12 is exercised through sweep's watch restart; its index reset is covered by code review.

// Finding 9: the send queue is also bounded in bytes: 400 frames would never reach the frame
// limit (1024), but 1 MiB of queued 256 KiB frames overflows.
func TestSendQueueByteLimit(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.SendQueueBytes = 1 << 20
	cfg.WriteTimeout = 3 * time.Second
	e := v.startEdge(cfg)
	c := openedClient(t, v, e.url, false)
	subj := outSubjectOfClient(c)
	// The client stops reading; large frames fill the socket buffers, then the queue.
	go func() {
		for s := uint64(2); s < 400 && counter(t, e.m.overflows) == 0; s++ {
			p.publish(subj, s, 256<<10)
		}
	}()
	waitFor(t, 20*time.Second, "overflow", func() bool { return counter(t, e.m.overflows) >= 1 })
	code, _ := expectClose(t, c.ws)
	if code != CloseSlowClient {
		t.Fatalf("close %d, want 4101", code)
	}
}

// Finding 9: held out-of-order frames are bounded in bytes; beyond it they are re-read.
func TestPendingByteLimit(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.PendingBytes = 1
	e := v.startEdge(cfg)
	c := openedClient(t, v, e.url, false)
	subj := outSubjectOfClient(c)
	drop := func(m *nats.Msg) bool { return m.Header.Get(broker.HeaderSeq) == "2" }
	e.testDropLive.Store(&drop)
	for s := uint64(2); s <= 6; s++ {
		p.publish(subj, s, 100)
	}
	for want := uint64(2); want <= 6; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("got %d, want %d", s, want)
		}
	}
}

// Finding 6: a client sending faster than its rate limit is closed with 1008.
func TestClientRateLimit(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.MaxClientRate = 1
	cfg.MaxClientBurst = 3
	e := v.startEdge(cfg)
	c := openedClient(t, v, e.url, false)
	for i := 0; i < 5; i++ {
		c.seq++
		f, err := protocol.EncodeClientFrame(c.messageEnvelope(c.seq, false))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
			break
		}
	}
	code, reason := expectClose(t, c.ws)
	if code != websocket.ClosePolicyViolation || reason != reasonRateExceeded {
		t.Fatalf("close %d %q, want 1008 %q", code, reason, reasonRateExceeded)
	}
	relayed := 0
	for _, m := range v.inMessages(inSubjectOf(v, c)) {
		if m.kind == broker.KindMessage {
			relayed++
		}
	}
	if relayed != 3 {
		t.Fatalf("%d client messages relayed, want the burst of 3", relayed)
	}
}

func TestTokenBucket(t *testing.T) {
	var b tokenBucket
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if !b.allow(now, 2, 3) {
			t.Fatalf("burst %d refused", i)
		}
	}
	if b.allow(now, 2, 3) {
		t.Fatal("over the burst allowed")
	}
	if !b.allow(now.Add(500*time.Millisecond), 2, 3) {
		t.Fatal("refilled token refused")
	}
	if b.allow(now.Add(500*time.Millisecond), 2, 3) {
		t.Fatal("second token after 0.5s at 2/s allowed")
	}
}
