package edge

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
)

// rawGet sends one plain HTTP request on a fresh TCP connection and returns the status line and
// whether the server then closed the connection.
func rawGet(t *testing.T, addr string) (string, bool) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	_, err = br.ReadByte()
	return resp.Status, err == io.EOF
}

func TestPlainHTTPRequestIsAnsweredAndClosed(t *testing.T) {
	v := newEnv(t)
	e := v.startEdge(testConfig("e1"))
	status, closed := rawGet(t, e.Addr().String())
	if !strings.HasPrefix(status, "426") || !closed {
		t.Fatalf("plain GET: status %q, connection closed %v; want 426 and closed", status, closed)
	}
	if got := testkit.MetricValue(t, e.m.refused.WithLabelValues("not_upgrade")); got != 1 {
		t.Fatalf("refused{not_upgrade} = %v", got)
	}
}

func TestSilentTCPConnectionIsClosed(t *testing.T) {
	v := newEnv(t)
	cfg := testConfig("e1")
	cfg.HandshakeTimeout = 300 * time.Millisecond
	e := v.startEdge(cfg)
	nc, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("the edge answered a connection that sent nothing")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the edge kept a silent connection open")
	}
}

// dialStatus tries a WebSocket upgrade and returns the HTTP status (101 on success).
func dialStatus(t *testing.T, url string, hdr http.Header) (*websocket.Conn, int) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		return nil, resp.StatusCode
	}
	t.Cleanup(func() { _ = ws.Close() })
	return ws, http.StatusSwitchingProtocols
}

func TestConnectionLimits(t *testing.T) {
	v := newEnv(t)
	cases := []struct {
		name    string
		cfg     func(*Config)
		headers []http.Header // one upgrade per entry, in order
		want    []int
		reason  string
	}{
		{
			name: "edge total", cfg: func(c *Config) { c.MaxConnections = 2 },
			headers: []http.Header{nil, nil, nil}, want: []int{101, 101, 503}, reason: "max_connections",
		},
		{
			name: "per address", cfg: func(c *Config) { c.MaxConnectionsPerIP = 1 },
			headers: []http.Header{nil, nil}, want: []int{101, 429}, reason: "max_connections_per_ip",
		},
		{
			name: "forwarded addresses ignored from an untrusted peer", cfg: func(c *Config) { c.MaxConnectionsPerIP = 1 },
			headers: []http.Header{{"X-Forwarded-For": {"192.0.2.1"}}, {"X-Forwarded-For": {"192.0.2.2"}}},
			want:    []int{101, 429}, reason: "max_connections_per_ip",
		},
		{
			name: "forwarded addresses from a trusted proxy", cfg: func(c *Config) { c.MaxConnectionsPerIP = 1; c.TrustedProxies = []string{"127.0.0.0/8"} },
			headers: []http.Header{
				{"X-Forwarded-For": {"192.0.2.1"}},
				{"X-Forwarded-For": {"192.0.2.2"}},
				// The client wrote the left part itself; the proxy appended the real address.
				{"X-Forwarded-For": {"198.51.100.7, 192.0.2.1"}},
			},
			want: []int{101, 101, 429}, reason: "max_connections_per_ip",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("limits" + string(rune('a'+i)))
			tc.cfg(&cfg)
			e := v.startEdge(cfg)
			for j, h := range tc.headers {
				if _, got := dialStatus(t, e.url, h); got != tc.want[j] {
					t.Fatalf("upgrade %d: status %d, want %d", j+1, got, tc.want[j])
				}
			}
			if got := testkit.MetricValue(t, e.m.refused.WithLabelValues(tc.reason)); got != 1 {
				t.Fatalf("refused{%s} = %v, want 1", tc.reason, got)
			}
		})
	}
}

func TestConnectionSlotsAreReturned(t *testing.T) {
	v := newEnv(t)
	cfg := testConfig("e1")
	cfg.MaxConnectionsPerIP = 1
	e := v.startEdge(cfg)
	for i := 0; i < 3; i++ {
		ws, code := dialStatus(t, e.url, nil)
		if code != 101 {
			t.Fatalf("connection %d refused (%d): a closed connection kept its slot", i+1, code)
		}
		if _, _, err := ws.ReadMessage(); err != nil { // the handshake: the edge holds the connection
			t.Fatal(err)
		}
		_ = ws.Close()
		testkit.WaitFor(t, 5*time.Second, "connection gone", func() bool { return e.connCount() == 0 })
	}
}

func TestSessionsPerPrincipalLimit(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.MaxSessionsPerPrincipal = 2
	e := v.startEdge(cfg)
	first := openedClient(t, v, e.url, false)
	second := newClient(t, v.gw, first.canister)
	second.id, second.nonce = first.id, first.nonce+1
	second.dial(e.url, false)
	second.open()
	if seq, _ := second.next(); seq != 1 {
		t.Fatalf("second session: seq %d", seq)
	}
	third := newClient(t, v.gw, first.canister)
	third.id, third.nonce = first.id, first.nonce+2
	third.dial(e.url, false)
	third.open()
	if code, reason := expectClose(t, third.ws); code != websocket.ClosePolicyViolation || !strings.Contains(reason, "too many sessions") {
		t.Fatalf("third session: close %d %q, want 1008 too many sessions", code, reason)
	}
	// Another principal is not affected.
	openedClient(t, v, e.url, false)
}

func TestCanisterLimit(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.MaxCanisters = 1
	e := v.startEdge(cfg)
	first := openedClient(t, v, e.url, false)
	testkit.WaitFor(t, 5*time.Second, "session indexed", func() bool { known, _ := e.index.canisterStats(first.canister.Encode()); return known })
	// More sessions for a canister already served are fine; a new canister is not.
	more := newClient(t, v.gw, first.canister)
	more.dial(e.url, false)
	more.open()
	if seq, _ := more.next(); seq != 1 {
		t.Fatalf("second session of the same canister: seq %d", seq)
	}
	other := newClient(t, v.gw, randomCanister(t))
	other.dial(e.url, false)
	other.open()
	if code, _ := expectClose(t, other.ws); code != websocket.CloseTryAgainLater {
		t.Fatalf("session for one more canister: close %d, want 1013", code)
	}
}

func TestClientByteRateLimit(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.MaxMessageBytes = 4096
	cfg.MaxClientBytesRate = 1024
	cfg.MaxClientBytesBurst = 5120
	e := v.startEdge(cfg)
	c := openedClient(t, v, e.url, false)
	for i := 0; i < 40; i++ { // each envelope is a few hundred bytes: far above 5 KiB in all
		c.seq++
		env := c.messageEnvelope(c.seq, false)
		f, _ := protocol.EncodeClientFrame(env)
		if err := c.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
			break
		}
	}
	if code, reason := expectClose(t, c.ws); code != websocket.ClosePolicyViolation || reason != reasonByteRateExceeded {
		t.Fatalf("close %d %q, want 1008 %q", code, reason, reasonByteRateExceeded)
	}
}

func TestRefusedOpenLeavesNoTrace(t *testing.T) {
	v := newEnv(t)
	reason := "canister refused the client"
	v.refuseOpens.Store(&reason)
	e := v.startEdge(testConfig("e1"))
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, true)
	c.open()
	c.send() // waits at the edge for the confirmation that never comes
	code, text := expectClose(t, c.ws)
	if code != websocket.ClosePolicyViolation || !strings.Contains(text, reason) {
		t.Fatalf("close %d %q, want 1008 naming the canister's reason", code, text)
	}
	testkit.WaitFor(t, 5*time.Second, "socket gone", func() bool { return e.connCount() == 0 })
	if rec := v.session(c); rec != nil {
		t.Fatalf("session record left behind: %+v", rec)
	}
	kinds := []string{}
	for _, m := range v.inMessages(inSubjectOf(v, c)) {
		kinds = append(kinds, m.kind)
	}
	if strings.Join(kinds, ",") != "open" {
		t.Fatalf("ICWS_IN holds %v, want only the open", kinds)
	}
	e.mu.RLock()
	subs, perPrincipal := len(e.liveSubs)+len(e.byKey), len(e.byPrincipal)
	e.mu.RUnlock()
	if subs != 0 || perPrincipal != 0 {
		t.Fatalf("subscriptions %d, principals counted %d: want none", subs, perPrincipal)
	}
}

func TestUnconfirmedOpenTimesOut(t *testing.T) {
	v := newEnv(t)
	v.holdOpens.Store(true)
	cfg := testConfig("e1")
	cfg.OpenConfirmTimeout = 300 * time.Millisecond
	e := v.startEdge(cfg)
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, false)
	c.open()
	c.send()
	if code, _ := expectClose(t, c.ws); code != websocket.CloseInternalServerErr {
		t.Fatalf("close %d, want 1011", code)
	}
	// The open and the close request of the session the edge ended; the message never went out.
	testkit.WaitFor(t, 5*time.Second, "close request", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 2 })
	if kinds := v.inMessages(inSubjectOf(v, c)); kinds[0].kind != bus.KindOpen || kinds[1].kind != bus.KindClose {
		t.Fatalf("ICWS_IN holds %s, %s; want open, close", kinds[0].kind, kinds[1].kind)
	}
}

// A new session of a client key never sees what the stream kept for the key's earlier session,
// live or on resume.
func TestNewSessionSeesOnlyItsOwnHistory(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(true)
	e := v.startEdge(testConfig("e1"))
	first := openedClient(t, v, e.url, false)
	for i := 0; i < 3; i++ {
		first.send()
		if seq, _ := first.next(); seq != uint64(i+2) {
			t.Fatalf("first session: seq %d", seq)
		}
	}
	_ = first.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	testkit.WaitFor(t, 5*time.Second, "first session gone", func() bool { return v.session(first) == nil })

	second := newClient(t, v.gw, first.canister)
	second.id, second.nonce = first.id, first.nonce
	second.dial(e.url, true)
	second.open()
	if seq, _ := second.next(); seq != 1 {
		t.Fatalf("second session's first message has seq %d, want 1", seq)
	}
	second.send()
	if seq, _ := second.next(); seq != 2 {
		t.Fatalf("second session: seq %d", seq)
	}
	dropSocket(t, v, second)
	_, code, reason := second.resume(e.url, 0)
	if code != 0 {
		t.Fatalf("resume: close %d %q", code, reason)
	}
	for want := uint64(1); want <= 2; want++ {
		seq, f := second.next()
		m, _ := protocol.DecodeCanisterToClientMessage(f)
		if seq != want {
			t.Fatalf("replay: seq %d (%q), want %d: an earlier session's message leaked", seq, m.Content, want)
		}
	}
}

func TestStreamNearlyFullRefusesNewSessions(t *testing.T) {
	topo := bus.DefaultTopology()
	topo.InMaxBytes = 16 << 20
	_, nc, js := testkit.StartBroker(t, topo)
	h, err := bus.Open(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	v := newEnvWith(t, nc, js, h)
	v.startPipeline(false)
	cfg := testConfig("e1")
	e := v.startEdge(cfg)
	open := openedClient(t, v, e.url, false)
	// Fill ICWS_IN past the admission threshold with envelopes of a partition no one reads.
	junk := make([]byte, 256<<10)
	for i := 0; i < 60; i++ {
		if _, err := js.Publish(context.Background(), bus.InSubject(0, "filler", "filler"), junk); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "edge sees the full stream", func() bool { return e.streamsFull.Load() != nil })
	late := newClient(t, v.gw, randomCanister(t))
	late.dial(e.url, false)
	late.open()
	if code, _ := expectClose(t, late.ws); code != websocket.CloseTryAgainLater {
		t.Fatalf("new session while ICWS_IN is full: close %d, want 1013", code)
	}
	// The session already open keeps working while there is room.
	open.send()
	testkit.WaitFor(t, 5*time.Second, "message stored", func() bool { return len(v.inMessages(inSubjectOf(v, open))) == 2 })
}

func TestPanicInOneConnectionClosesOnlyIt(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	victim := openedClient(t, v, e.url, false)
	bystander := openedClient(t, v, e.url, false)
	boom := func(frame []byte) {
		if len(frame) > 0 && strings.Contains(string(frame), "ws_message") {
			panic("injected")
		}
	}
	e.testFrame.Store(&boom)
	victim.send()
	if code, _ := expectClose(t, victim.ws); code != websocket.CloseInternalServerErr {
		t.Fatalf("close %d, want 1011", code)
	}
	e.testFrame.Store(nil)
	if got := testkit.MetricValue(t, e.m.panics.WithLabelValues("read")); got != 1 {
		t.Fatalf("panics{read} = %v", got)
	}
	bystander.send()
	testkit.WaitFor(t, 5*time.Second, "bystander's message stored", func() bool { return len(v.inMessages(inSubjectOf(v, bystander))) == 2 })
	openedClient(t, v, e.url, false)
}

// The send queue is also bounded in bytes: 400 frames would never reach the frame limit (1024),
// but 1 MiB of queued 256 KiB frames overflows.
func TestSendQueueByteLimit(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.SendQueueBytes = 1 << 20
	cfg.WriteTimeout = 3 * time.Second
	e := v.startEdge(cfg)
	c := openedClient(t, v, e.url, false)
	overflow(t, p, e, c)
	code, _ := expectClose(t, c.ws)
	if code != CloseSlowClient {
		t.Fatalf("close %d, want 4101", code)
	}
}

// Held out-of-order frames are bounded in bytes; beyond the bound they are re-read.
func TestPendingByteLimit(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.PendingBytes = 1
	e := v.startEdge(cfg)
	c := openedClient(t, v, e.url, false)
	subj := outSubjectOfClient(c)
	drop := func(m *nats.Msg) bool { return m.Header.Get(bus.HeaderSeq) == "2" }
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

// rateLimitedEdge starts an edge that allows each client one message a second, in bursts of 3.
func rateLimitedEdge(t *testing.T) (*env, *runningEdge) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.MaxClientRate = 1
	cfg.MaxClientBurst = 3
	return v, v.startEdge(cfg)
}

// A client sending faster than its rate limit is closed with 1008.
func TestClientRateLimit(t *testing.T) {
	v, e := rateLimitedEdge(t)
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
		if m.kind == bus.KindMessage {
			relayed++
		}
	}
	if relayed != 3 {
		t.Fatalf("%d client messages relayed, want the burst of 3", relayed)
	}
}
