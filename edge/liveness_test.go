package edge

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

func livenessConfig(id string) Config {
	cfg := testConfig(id)
	cfg.PingInterval = 150 * time.Millisecond
	cfg.PingTimeout = 300 * time.Millisecond
	cfg.HeartbeatInterval = 200 * time.Millisecond
	return cfg
}

// A client that stops answering pings (its TCP connection half-open, its process frozen) is closed
// with 4104 within about PingInterval + PingTimeout, and its resumable session is detached.
func TestUnresponsiveClientIsClosedAndDetached(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(livenessConfig("e1"))
	c := openedClient(t, v, e.url, true)
	c.ws.SetPingHandler(func(string) error { return nil }) // no pong: as if the client were gone
	code, reason := expectClose(t, c.ws)
	if code != CloseUnresponsive || reason != reasonUnresponsive {
		t.Fatalf("close %d %q, want %d %q", code, reason, CloseUnresponsive, reasonUnresponsive)
	}
	testkit.WaitFor(t, 5*time.Second, "session detached", func() bool {
		rec := v.session(c)
		return rec != nil && rec.State == bus.SessionDetached
	})
	if n := testutil.ToFloat64(e.m.unresponsive); n != 1 {
		t.Fatalf("unresponsive closes = %v, want 1", n)
	}
}

// A client whose TCP connection goes silent under it (every byte dropped, no FIN or RST) is found
// the same way: the edge's pings go unanswered.
func TestHalfOpenConnectionIsClosed(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(livenessConfig("e1"))
	px := startFreezableProxy(t, e.Addr().String())
	c := openedClient(t, v, "ws://"+px.addr()+"/", false)
	px.freeze()
	testkit.WaitFor(t, 5*time.Second, "standard session closed", func() bool { return v.session(c) == nil })
	if n := testutil.ToFloat64(e.m.unresponsive); n != 1 {
		t.Fatalf("unresponsive closes = %v, want 1", n)
	}
}

// A client that answers pings stays connected however long it sends nothing.
func TestQuietClientAnsweringPingsStaysOpen(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(livenessConfig("e1"))
	c := openedClient(t, v, e.url, true)
	// gorilla answers pings while a read is under way; the read sees no data frame.
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * e.cfg.PingInterval))
	if _, _, err := c.ws.ReadMessage(); !isTimeout(err) {
		t.Fatalf("read during silence: %v, want a timeout", err)
	}
	if n := testutil.ToFloat64(e.m.pings); n < 2 {
		t.Fatalf("pings = %v, want at least 2", n)
	}
	// A timed-out gorilla read cannot be continued: check the session instead.
	if rec := v.session(c); rec == nil || rec.State != bus.SessionOpen {
		t.Fatalf("session %+v, want open", rec)
	}
	if n := testutil.ToFloat64(e.m.unresponsive); n != 0 {
		t.Fatalf("unresponsive closes = %v, want 0", n)
	}
	_ = p
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Heartbeats go only to connections that asked for them (resume and icws-heartbeat=1), the
// handshake announces the interval, and they come while nothing else is sent.
func TestHeartbeatsOnlyForConnectionsThatAsked(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(livenessConfig("e1"))
	hbFrame, err := cbor.Marshal(protocol.Heartbeat{})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, query string
		want        bool
	}{
		{"standard", "", false},
		{"resume only", "?icws-resume=1", false},
		{"heartbeat without resume", "?icws-heartbeat=1", false},
		{"resume and heartbeat", "?icws-resume=1&icws-heartbeat=1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, _, err := websocket.DefaultDialer.Dial(e.url+tc.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			_, hs, err := ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			var h struct {
				Resume *protocol.ResumeOffer `cbor:"icws_resume"`
			}
			if err := cbor.Unmarshal(protocol.StripSelfDescribe(hs), &h); err != nil {
				t.Fatal(err)
			}
			announced := h.Resume != nil && h.Resume.HeartbeatMillis > 0
			if announced != tc.want {
				t.Fatalf("handshake offer %+v: heartbeat announced = %v, want %v", h.Resume, announced, tc.want)
			}
			if tc.want && h.Resume.HeartbeatMillis != uint64(e.cfg.HeartbeatInterval.Milliseconds()) {
				t.Fatalf("heartbeat_ms = %d, want %d", h.Resume.HeartbeatMillis, e.cfg.HeartbeatInterval.Milliseconds())
			}
			// Heartbeats flow before the first frame too: a client waiting for its resume answer
			// or OpenMessage can tell a live edge from a hung one.
			got := 0
			deadline := time.Now().Add(4 * e.cfg.HeartbeatInterval)
			for time.Now().Before(deadline) {
				_ = ws.SetReadDeadline(deadline)
				_, f, err := ws.ReadMessage()
				if err != nil {
					if !isTimeout(err) {
						t.Fatal(err)
					}
					break
				}
				if string(f) != string(hbFrame) {
					t.Fatalf("frame %x, want a heartbeat %x", f, hbFrame)
				}
				got++
			}
			if tc.want && got < 2 {
				t.Fatalf("%d heartbeats in %s", got, 4*e.cfg.HeartbeatInterval)
			}
			if !tc.want && got > 0 {
				t.Fatalf("%d heartbeats on a connection that did not ask", got)
			}
		})
	}
	_ = p
}

// While canister messages flow faster than the interval, no heartbeat is sent.
func TestNoHeartbeatWhileTrafficFlows(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := livenessConfig("e1")
	cfg.HeartbeatInterval = time.Second
	e := v.startEdge(cfg)
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url+"?icws-resume=1&icws-heartbeat=1", false)
	c.open()
	if seq, _ := c.next(); seq != 1 {
		t.Fatalf("first seq %d", seq)
	}
	subj := outSubjectOfClient(c)
	before := testutil.ToFloat64(e.m.heartbeats)
	for s := uint64(2); s <= 12; s++ {
		p.publish(subj, s, 0)
		if got, _ := c.next(); got != s {
			t.Fatalf("got %d, want %d", got, s)
		}
		time.Sleep(cfg.HeartbeatInterval / 10) // pacing traffic, not synchronisation
	}
	if n := testutil.ToFloat64(e.m.heartbeats) - before; n != 0 {
		t.Fatalf("%v heartbeats while a message left every %s", n, cfg.HeartbeatInterval/4)
	}
}

// Once traffic stops, heartbeats start: an idle bound session gets one per interval.
func TestHeartbeatsResumeWhenTrafficStops(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := livenessConfig("e1")
	e := v.startEdge(cfg)
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url+"?icws-resume=1&icws-heartbeat=1", false)
	c.open()
	hb, _ := cbor.Marshal(protocol.Heartbeat{})
	readCanister := func() uint64 {
		for {
			_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, f, err := c.ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if string(f) == string(hb) {
				continue
			}
			m, err := protocol.DecodeCanisterToClientMessage(f)
			if err != nil {
				t.Fatal(err)
			}
			s, _ := strconv.ParseUint(string(m.Content), 10, 64)
			return s
		}
	}
	if s := readCanister(); s != 1 {
		t.Fatalf("seq %d", s)
	}
	subj := outSubjectOfClient(c)
	for s := uint64(2); s <= 5; s++ {
		p.publish(subj, s, 0)
		if got := readCanister(); got != s {
			t.Fatalf("got %d want %d", got, s)
		}
	}
	got := 0
	deadline := time.Now().Add(6 * cfg.HeartbeatInterval)
	for time.Now().Before(deadline) {
		_ = c.ws.SetReadDeadline(time.Now().Add(3 * cfg.HeartbeatInterval))
		_, f, err := c.ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d heartbeats: %v", got, err)
		}
		if string(f) != string(hb) {
			t.Fatalf("frame %x", f)
		}
		got++
	}
	if got < 3 {
		t.Fatalf("%d heartbeats in %s", got, 6*cfg.HeartbeatInterval)
	}
}

// Only connections that asked for heartbeats are visited at the heartbeat's pace; the others, which
// only need pings, sit on a wheel that turns with the ping periods, so an edge of idle connections
// does not look at each of them four times a second.
func TestConnectionsAreVisitedAtThePaceTheyNeed(t *testing.T) {
	e := &Edge{cfg: Config{PingInterval: 10 * time.Second, PingTimeout: 8 * time.Second, HeartbeatInterval: time.Second}}
	if got, want := e.livenessRevolution(true), 250*time.Millisecond; got != want {
		t.Errorf("heartbeat wheel turns in %s, want %s", got, want)
	}
	if got, want := e.livenessRevolution(false), 2*time.Second; got != want {
		t.Errorf("ping wheel turns in %s, want %s", got, want)
	}
	l, err := newLiveness()
	if err != nil {
		t.Fatal(err)
	}
	plain, beating := &conn{}, &conn{heartbeat: true}
	l.add(plain)
	l.add(beating)
	in := func(w int, c *conn) bool {
		_, ok := l.wheels[w].slots[c.slot].conns[c]
		return ok
	}
	if !in(0, plain) || in(1, plain) || !in(1, beating) || in(0, beating) {
		t.Fatal("connections on the wrong wheel")
	}
	l.remove(plain)
	l.remove(beating)
	if in(0, plain) || in(1, beating) {
		t.Fatal("removed connections still visited")
	}
}
