package edge

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
)

func TestSocketLimit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxConns  int
		fileLimit uint64
		want      int
		lowered   bool
	}{
		{"file limit unknown", 100000, 0, 100000, false},
		{"room under the file limit", 1000, 20000, 1000, false},
		{"file limit less the reserve", 100000, 20000, 20000 - 1024, true},
		{"a small file limit keeps half", 100000, 1024, 512, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, lowered := socketLimit(tc.maxConns, 1024, tc.fileLimit)
			if got != tc.want || lowered != tc.lowered {
				t.Fatalf("socketLimit(%d, %d) = %d, %v; want %d, %v", tc.maxConns, tc.fileLimit, got, lowered, tc.want, tc.lowered)
			}
		})
	}
}

// Sockets that never upgrade hold file descriptors as WebSockets do: beyond the limit a new
// socket is closed at once, whatever it would have sent, and one that goes makes room again.
func TestSocketsBeyondTheLimitAreClosed(t *testing.T) {
	v := newEnv(t)
	cfg := testConfig("e1")
	cfg.MaxConnections = 3
	e := v.startEdge(cfg)
	limit := cfg.MaxConnections + answerHeadroom
	var held []net.Conn
	for range limit {
		c := rawDial(t, e.Addr())
		t.Cleanup(func() { _ = c.Close() })
		held = append(held, c)
	}
	testkit.WaitFor(t, 5*time.Second, "the sockets counted", func() bool { return e.sockets.Load() == int64(limit) })

	extra := rawDial(t, e.Addr())
	t.Cleanup(func() { _ = extra.Close() })
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := extra.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a socket beyond the limit was kept: read %d, %v", n, err)
	}
	if n := testkit.MetricValue(t, e.m.refused.WithLabelValues("max_sockets")); n != 1 {
		t.Fatalf("refused for max_sockets: %v, want 1", n)
	}

	_ = held[0].Close()
	testkit.WaitFor(t, 5*time.Second, "the closed socket uncounted", func() bool { return e.sockets.Load() == int64(limit-1) })
	c := rawDial(t, e.Addr())
	t.Cleanup(func() { _ = c.Close() })
	if status := plainGet(t, c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); status != http.StatusUpgradeRequired {
		t.Fatalf("status %d after room was made, want 426", status)
	}
}

// plainGet writes a raw request on c and returns the answer's status; the edge must close the
// connection after it.
func plainGet(t *testing.T, c net.Conn, req string) int {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if !resp.Close {
		t.Errorf("answer %d keeps the connection", resp.StatusCode)
	}
	return resp.StatusCode
}

// What the WebSocket port answers that is not a WebSocket upgrade: every such answer closes the
// connection.
func TestNonUpgradeRequests(t *testing.T) {
	v := newEnv(t)
	cfg := testConfig("e1")
	cfg.AllowedOrigins = []string{"https://good.example"}
	cfg.HTTPMaxHeaderBytes = 8192
	e := v.startEdge(cfg)
	upgrade := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusUpgradeRequired},
		{"an upgrade from a disallowed origin", upgrade + "Origin: https://evil.example\r\n\r\n", http.StatusForbidden},
		{"an upgrade with a bad version", strings.Replace(upgrade, "Version: 13", "Version: 8", 1) + "\r\n", http.StatusBadRequest},
		{"headers beyond ICWS_HTTP_MAX_HEADER_BYTES", "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 8300) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawDial(t, e.Addr())
			t.Cleanup(func() { _ = c.Close() })
			if got := plainGet(t, c, tc.req); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}

	// Only browsers send Origin, and any other client could send an allowed one: its absence is
	// no reason to refuse.
	ws, _, err := websocket.DefaultDialer.Dial(e.url, nil)
	if err != nil {
		t.Fatalf("upgrade without Origin: %v", err)
	}
	_ = ws.Close()
}

func TestIPv6ClientsAreCountedByPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix int
		addr   string
		want   string
	}{
		{64, "127.0.0.7", "127.0.0.7"},
		{64, "::ffff:10.1.2.3", "10.1.2.3"},
		{64, "2001:db8::1", "2001:db8::/64"},
		{64, "2001:db8::1:0:0:1", "2001:db8::/64"},
		{64, "2001:db8:0:1::1", "2001:db8:0:1::/64"},
		{48, "2001:db8:0:1::1", "2001:db8::/48"},
		{128, "2001:db8::1", "2001:db8::1"},
	} {
		e := &Edge{cfg: Config{ConnectionsIPv6Prefix: tc.prefix}}
		r := &http.Request{RemoteAddr: netip.AddrPortFrom(netip.MustParseAddr(tc.addr), 4444).String()}
		if got := e.clientAddr(r); got != tc.want {
			t.Errorf("/%d: %s counted as %s, want %s", tc.prefix, tc.addr, got, tc.want)
		}
	}
}

// Sessions cost a record, an update call and a replay window, and keys are free: one address may
// open ICWS_MAX_OPENS_PER_IP_BURST at once, then ICWS_MAX_OPENS_PER_IP_RATE a second; resuming
// does not count.
func TestOpensPerAddressAreLimited(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.MaxOpensPerIPBurst = 2
	cfg.MaxOpensPerIPRate = 0.001
	e := v.startEdge(cfg)
	first := openedClient(t, v, e.url, true)
	openedClient(t, v, e.url, false)

	third := newClient(t, v.gw, randomCanister(t))
	third.dial(e.url, false)
	third.open()
	if code, reason := expectClose(t, third.ws); code != websocket.CloseTryAgainLater || !strings.Contains(reason, "too many new sessions") {
		t.Fatalf("third open closed %d %q, want 1013", code, reason)
	}
	if n := testkit.MetricValue(t, e.m.refused.WithLabelValues("open_rate")); n != 1 {
		t.Fatalf("refused for the open rate: %v, want 1", n)
	}

	_ = first.ws.Close()
	testkit.WaitFor(t, 5*time.Second, "first detached", func() bool {
		r := v.session(first)
		return r != nil && r.State == bus.SessionDetached
	})
	if _, code, reason := first.resume(e.url, 1); code != 0 {
		t.Fatalf("resume refused: %d %q", code, reason)
	}
}

func TestOpenLimiterForgetsRefilledAddresses(t *testing.T) {
	var l openLimiter
	now := time.Unix(1000, 0)
	for i := range 3000 {
		if !l.take(fmt.Sprintf("10.0.%d.%d", i/256, i%256), now.Add(time.Duration(i)*time.Millisecond), 100, 10) {
			t.Fatalf("address %d refused its first open", i)
		}
	}
	// Addresses whose bucket refilled (10 opens at 100/s: 100 ms) are forgotten as new ones come.
	if n := len(l.addrs); n >= 2048 {
		t.Fatalf("%d addresses remembered, want the refilled ones pruned", n)
	}
	if !l.take("10.9.9.9", now, 100, 1) || l.take("10.9.9.9", now, 100, 1) {
		t.Fatal("a burst of 1 must allow one open and refuse the next at once")
	}
}

// A refused upgrade does not keep its socket for another try: an address over its limit could
// otherwise hold sockets the limit does not count.
func TestRefusedUpgradesCloseTheirSocket(t *testing.T) {
	v := newEnv(t)
	cfg := testConfig("e1")
	cfg.MaxConnectionsPerIP = 1
	e := v.startEdge(cfg)
	ws, _, err := websocket.DefaultDialer.Dial(e.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	c := rawDial(t, e.Addr())
	t.Cleanup(func() { _ = c.Close() })
	upgrade := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if got := plainGet(t, c, upgrade); got != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", got)
	}
}
