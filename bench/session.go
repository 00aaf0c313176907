package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/icws/icws/client"
	"github.com/icws/icws/protocol"
)

// dialParallel bounds the sessions being opened at once: each open is a signed update call
// through the gateway, and too many at once only queue.
const dialParallel = 64

// openTimeout bounds one session's open (handshake to verified OpenMessage).
const openTimeout = 5 * time.Minute

// loopbackSources is how many 127.0.0.x source addresses a loopback gateway is dialled from, so
// that tens of thousands of sessions do not run out of ephemeral ports (about 28k per source
// address and destination).
const loopbackSources = 16

// sessionOptions shape the client of each session.
type sessionOptions struct {
	// messageBuffer is the capacity of the client's message channel.
	messageBuffer int
	// resume opts into the icws resume extension, dialling through dialer.
	resume bool
	dialer *gatedDialer
	// small shrinks the client's socket buffers (idle sessions hold nothing).
	small bool
}

// openSessions opens n sessions in parallel and records dial → verified OpenMessage per session.
// On error the sessions opened so far are closed.
func (r *runner) openSessions(ctx context.Context, n int, o sessionOptions) ([]*client.Conn, *Latencies, error) {
	conns := make([]*client.Conn, n)
	open := NewLatencies()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(dialParallel)
	for i := range conns {
		g.Go(func() error {
			id, err := identity.NewRandomEd25519Identity()
			if err != nil {
				return fmt.Errorf("session %d: identity: %w", i, err)
			}
			dialer := r.wsDialer(i, o)
			start := time.Now()
			conn, err := client.Dial(gctx, client.Config{
				GatewayURL: r.cfg.GatewayURL, RootKey: r.rootKey, Canister: r.cfg.Canister, Identity: id,
				AckInterval: r.cfg.AckInterval, MessageBuffer: max(o.messageBuffer, 16),
				Resume: o.resume, Dialer: dialer, Logger: r.logger.With("session", i),
				// Opens queue behind each other in the gateway's submitters; thousands at once take
				// longer than the SDK's 60 s on a busy machine.
				OpenTimeout: openTimeout,
			})
			if err != nil {
				return fmt.Errorf("session %d: dial: %w", i, err)
			}
			open.Record(time.Since(start))
			conns[i] = conn
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		closeAll(conns)
		return nil, nil, err
	}
	return conns, open, nil
}

func closeAll(conns []*client.Conn) {
	var wg sync.WaitGroup
	for _, c := range conns {
		if c != nil {
			wg.Go(func() { _ = c.Close() })
		}
	}
	wg.Wait()
}

// wsDialer returns the WebSocket dialer of session i: through o.dialer when set, else from one of
// the loopback source addresses when the gateway is on loopback.
func (r *runner) wsDialer(i int, o sessionOptions) *websocket.Dialer {
	d := &websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	if o.small {
		d.ReadBufferSize, d.WriteBufferSize = 1024, 1024
	}
	if o.dialer != nil {
		d.NetDialContext = o.dialer.dial
		return d
	}
	if src := loopbackSource(r.cfg.GatewayURL, i); src != nil {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
		d.NetDialContext = nd.DialContext
	}
	return d
}

// loopbackSource is 127.0.0.(1 + i mod loopbackSources) when the gateway URL names an IPv4
// loopback address, else nil (the system picks the source).
func loopbackSource(gatewayURL string, i int) net.IP {
	u, err := url.Parse(gatewayURL)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(u.Hostname())
	if u.Hostname() == "localhost" {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
		return nil
	}
	return net.IPv4(127, 0, 0, byte(1+i%loopbackSources))
}

// received is one verified application message and when the client had it.
type received struct {
	text      string
	canisterT time.Time // the canister's send time (AppMessage timestamp of the frame)
	at        time.Time
}

// receive returns the next application message of conn.
func receive(ctx context.Context, conn *client.Conn) (received, error) {
	select {
	case <-ctx.Done():
		return received{}, ctx.Err()
	case m, ok := <-conn.Messages():
		at := time.Now()
		if !ok {
			return received{}, fmt.Errorf("connection ended: %w", conn.Err())
		}
		app, err := client.DecodeAppMessage(m.Content)
		if err != nil {
			return received{}, fmt.Errorf("decode app message %d: %w", m.Seq, err)
		}
		return received{text: app.Text, canisterT: time.Unix(0, int64(m.Timestamp)), at: at}, nil
	}
}

// sendText sends an application message from the client.
func sendText(ctx context.Context, conn *client.Conn, text string) error {
	b, err := client.EncodeAppMessage(protocol.AppMessage{Text: text, Timestamp: uint64(time.Now().UnixNano())})
	if err != nil {
		return fmt.Errorf("encode app message: %w", err)
	}
	if err := conn.Send(ctx, b); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// Texts the bench sends carry a tag and an index: "<tag><index>" or "<tag><index> <padding>".
// The demo canister's burst:N messages are "burst:<1..N>".

// numbered builds a text of tag and index padded with 'x' to payload bytes (never shorter than
// the tag and index).
func numbered(tag byte, index, payload int) string {
	var b strings.Builder
	b.Grow(max(payload, 12))
	b.WriteByte(tag)
	b.WriteString(strconv.Itoa(index))
	if pad := payload - b.Len() - 1; pad > 0 {
		b.WriteByte(' ')
		b.WriteString(strings.Repeat("x", pad))
	}
	return b.String()
}

var errNotNumbered = errors.New("not a numbered bench text")

// parseNumbered reads the index of a text built by numbered with tag.
func parseNumbered(tag byte, text string) (int, error) {
	if len(text) < 2 || text[0] != tag {
		return 0, errNotNumbered
	}
	digits, _, _ := strings.Cut(text[1:], " ")
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 {
		return 0, errNotNumbered
	}
	return n, nil
}

// gatedDialer dials TCP for one resuming session; drop cuts its current connection and holds
// further dials until release, and each connection records when it wrote (the second write on a
// WebSocket client connection is its first frame, after the HTTP upgrade request).
type gatedDialer struct {
	base net.Dialer

	mu    sync.Mutex
	gate  chan struct{} // closed or nil: dials go through
	last  *recordingConn
	dials int
}

func (d *gatedDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	gate := d.gate
	d.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	dialed := time.Now()
	c, err := d.base.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{Conn: c, dialed: dialed}
	d.mu.Lock()
	d.last = rc
	d.dials++
	d.mu.Unlock()
	return rc, nil
}

// drop closes the current connection (an abrupt loss, as when a network fails) and holds
// reconnects until release.
func (d *gatedDialer) drop() error {
	d.mu.Lock()
	d.gate = make(chan struct{})
	last := d.last
	d.mu.Unlock()
	if last == nil {
		return errors.New("no connection to drop")
	}
	return last.Conn.Close()
}

// release lets reconnects through.
func (d *gatedDialer) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gate != nil {
		close(d.gate)
		d.gate = nil
	}
}

// current is the last connection dialled and how many dials there were.
func (d *gatedDialer) current() (*recordingConn, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last, d.dials
}

// recordingConn remembers when it was dialled and when it wrote for the second time.
type recordingConn struct {
	net.Conn
	dialed time.Time
	writes atomic.Int64
	second atomic.Int64 // unix ns of the second write
}

func (c *recordingConn) Write(p []byte) (int, error) {
	if c.writes.Add(1) == 2 {
		c.second.Store(time.Now().UnixNano())
	}
	return c.Conn.Write(p)
}

// firstFrameAt is when the first WebSocket frame went out (the dial time if it did not yet).
func (c *recordingConn) firstFrameAt() time.Time {
	if ns := c.second.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return c.dialed
}
