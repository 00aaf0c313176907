package edge

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A live gap fill finds the missing message stored after later ones.
func TestGapFillOutOfOrderStream(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	subj := outSubjectOfClient(c)
	drop := func(m *nats.Msg) bool { return m.Header.Get(bus.HeaderSeq) == "2" }
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

// A gap fill reads from where the previous read stopped, not the client's whole history.
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
		drop := func(m *nats.Msg) bool { return m.Header.Get(bus.HeaderSeq) == seq }
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

// Reads failing for longer than GapTimeout and the bus outage bound (twice JetStreamTimeout) end
// a resume with 4100 (nothing else was sent), and a live session's gap fill with 1011.
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

// Messages published while the edge is disconnected from NATS reach the client after the
// reconnect, without waiting for a later message.
func TestReconnectDeliversMissedMessages(t *testing.T) {
	srv, err := natstest.NewServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	// The test's own connection publishes; the edge's connection is the one that drops.
	_, pubJS := natstest.Connect(t, srv.ClientURL())
	testkit.EnsureTopology(t, pubJS, bus.DefaultTopology())
	enc, err := nats.Connect(srv.ClientURL(), nats.ReconnectWait(300*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(enc.Close)
	ejs, err := jetstream.New(enc)
	if err != nil {
		t.Fatal(err)
	}
	h, err := bus.Open(context.Background(), ejs)
	if err != nil {
		t.Fatal(err)
	}
	v := newEnvWith(t, enc, ejs, h)
	e := v.startEdge(testConfig("e1"))
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, false)
	var opens atomic.Int32
	sub, err := enc.Subscribe(bus.SubjectInAll, func(m *nats.Msg) {
		if m.Header.Get(bus.HeaderKind) == bus.KindOpen {
			opens.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	c.open()
	testkit.WaitFor(t, 5*time.Second, "open relayed", func() bool { return opens.Load() > 0 })
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
	testkit.WaitFor(t, 5*time.Second, "edge disconnected", func() bool { return !enc.IsConnected() })
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
