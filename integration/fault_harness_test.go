package integration

// Shared machinery of the failure-independence tests (fault_*_test.go): many resuming Go clients
// with steady traffic both ways, a kill in the middle, and exact per-client accounting afterwards.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/client"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica/wscanister"
)

// faultLeaseEnv pins the lease TTLs the figures were measured with. They are the defaults: shorter
// TTLs were tried (1.5-2 s) and on a loaded 2-core machine made healthy processes lose leases to slow
// KV round trips, which adds noise to the recovery figures without testing anything more.
func faultLeaseEnv(extra map[string]string) map[string]string {
	env := map[string]string{
		"ICWS_POLL_LEASE_TTL":   "2s",
		"ICWS_SUBMIT_LEASE_TTL": "3s",
		"ICWS_EDGE_LEASE_TTL":   "3s",
		// A client that stays silent is explained with the edges' long-blocked goroutines.
		"ICWS_ADMIN_PPROF": "true",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// faultDialer hands a client's TCP connections to one of several edges: its preferred edge first,
// the next one when that refuses. The client only knows one GatewayURL, so this is how a client
// behind a load balancer finds a surviving edge. It remembers which edge the last connection went
// to and can refuse every dial (a client that "stays away"). With a balancer it skips edges whose
// health check fails, as a load balancer does.
type faultDialer struct {
	addrs     []string // host:port of the edges
	preferred int
	balancer  *faultBalancer // nil: every edge is tried in order
	blocked   atomic.Bool
	current   atomic.Int32 // index of the edge of the last successful dial
	dials     atomic.Int32

	mu   sync.Mutex
	conn net.Conn // the last connection opened
}

// faultBalancer stands in for a load balancer's health checks: every faultHealthInterval it sends
// a plain GET to each edge's WebSocket port (each check given faultHealthTimeout) and takes an
// edge out of rotation after faultHealthFall failed checks in a row, back in at its first good
// one. A serving edge answers 426 (Upgrade Required); a hung edge does not answer; an edge that
// lost NATS answers 503. (/readyz also checks the streams with JetStream round trips, which on a
// loaded machine take longer than a balancer waits.)
type faultBalancer struct {
	healthy []atomic.Bool
}

const (
	faultHealthInterval = 250 * time.Millisecond
	faultHealthTimeout  = 500 * time.Millisecond
	faultHealthFall     = 2 // failed checks in a row that take an edge out
)

func startFaultBalancer(t *testing.T, edgeURLs []string) *faultBalancer {
	b := &faultBalancer{healthy: make([]atomic.Bool, len(edgeURLs))}
	ctx, cancel := context.WithCancel(context.Background())
	// Its own client without keep-alive: every check is a fresh connection, as an LB's is.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var wg sync.WaitGroup
	for i, u := range edgeURLs {
		b.healthy[i].Store(true)
		wg.Go(func() {
			failed := 0
			tick := time.NewTicker(faultHealthInterval)
			defer tick.Stop()
			for {
				cctx, ccancel := context.WithTimeout(ctx, faultHealthTimeout)
				ok, why := false, ""
				if req, err := http.NewRequestWithContext(cctx, http.MethodGet, u, nil); err == nil {
					if resp, err := hc.Do(req); err == nil {
						ok = resp.StatusCode == http.StatusUpgradeRequired
						body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
						resp.Body.Close()
						why = strings.TrimSpace(string(body))
					} else {
						why = err.Error()
					}
				}
				ccancel()
				if ctx.Err() != nil {
					return
				}
				if ok {
					failed = 0
				} else {
					failed++
				}
				if healthy := failed < faultHealthFall; b.healthy[i].Swap(healthy) != healthy {
					if healthy {
						t.Logf("balancer: edge %d back in rotation at %s UTC", i, time.Now().UTC().Format("15:04:05.000"))
					} else {
						t.Logf("balancer: edge %d out of rotation at %s UTC: %s", i, time.Now().UTC().Format("15:04:05.000"), why)
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return b
}

// order is the edges to try, preferred first, healthy ones before the others.
func (d *faultDialer) order() []int {
	var healthy, rest []int
	for i := range d.addrs {
		idx := (d.preferred + i) % len(d.addrs)
		if d.balancer == nil || d.balancer.healthy[idx].Load() {
			healthy = append(healthy, idx)
		} else {
			rest = append(rest, idx)
		}
	}
	return append(healthy, rest...)
}

func (d *faultDialer) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	if d.blocked.Load() {
		return nil, errors.New("test: dialing blocked")
	}
	var nd net.Dialer
	var errs []error
	for _, idx := range d.order() {
		c, err := nd.DialContext(ctx, network, d.addrs[idx])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.current.Store(int32(idx))
		d.dials.Add(1)
		d.mu.Lock()
		d.conn = c
		d.mu.Unlock()
		return c, nil
	}
	return nil, errors.Join(errs...)
}

// dropConn closes the client's current TCP connection under it (the client sees a dropped socket).
func (d *faultDialer) dropConn() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		d.conn.Close()
	}
}

func faultHostPort(t testing.TB, wsURL string) string {
	t.Helper()
	hp, ok := strings.CutPrefix(wsURL, "ws://")
	if !ok {
		t.Fatalf("edge URL %q is not ws://", wsURL)
	}
	return strings.TrimSuffix(hp, "/")
}

// faultReceived is one application message as the client got it.
type faultReceived struct {
	text string
	at   time.Time
}

// faultClient is one resuming Go client with its traffic record.
type faultClient struct {
	idx    int
	conn   *client.Conn
	key    protocol.ClientKey
	dialer *faultDialer
	logs   *syncBuffer

	mu       sync.Mutex
	sent     []string    // texts in the order Send accepted them
	sentAt   []time.Time // when each was handed to Send
	expected []string    // what the canister must send back, in order
	expSrc   []int       // for each expected text, the index in sent of the message that caused it
	got      []faultReceived
	ended    chan struct{} // closed when Messages() is closed
}

// faultExpect is what the demo canister sends back for one text.
func faultExpect(text string) []string {
	if rest, ok := strings.CutPrefix(text, "burst:"); ok {
		if n, err := strconv.Atoi(rest); err == nil && n > 0 {
			return numbered("burst:", n)
		}
	}
	return []string{text}
}

type faultClientOptions struct {
	ResumeTimeout time.Duration // 0 = 60 s
	ReconnectMax  time.Duration // 0 = 1 s: a dead edge is retried quickly
	// Balancer routes new connections only to edges whose /readyz answers (a load balancer's
	// health check); without it a hung edge still takes connections it never serves.
	Balancer bool
}

// dialFaultClient opens a resuming session through d (no t.Fatal: runs in goroutines).
func dialFaultClient(ctx context.Context, idx int, d *faultDialer, icURL, canister string, rootKey []byte, o faultClientOptions) (*faultClient, error) {
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		return nil, err
	}
	cid, err := principal.Decode(canister)
	if err != nil {
		return nil, err
	}
	if o.ResumeTimeout == 0 {
		o.ResumeTimeout = 60 * time.Second
	}
	if o.ReconnectMax == 0 {
		o.ReconnectMax = time.Second
	}
	logs := &syncBuffer{}
	conn, err := client.Dial(ctx, client.Config{
		// The host is never dialed as such: faultDialer picks the edge.
		GatewayURL:    "ws://icws-edges.test/",
		ICURL:         icURL,
		RootKey:       rootKey,
		Canister:      cid,
		Identity:      id,
		Resume:        true,
		ResumeTimeout: o.ResumeTimeout,
		ReconnectMax:  o.ReconnectMax,
		Dialer:        &websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: d.dial},
		Logger:        slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		return nil, fmt.Errorf("client %d: dial: %w\n%s", idx, err, tail(logs.Bytes(), 4<<10))
	}
	fc := &faultClient{idx: idx, conn: conn, key: conn.ClientKey(), dialer: d, logs: logs, ended: make(chan struct{})}
	go fc.receive()
	return fc, nil
}

func (c *faultClient) receive() {
	defer close(c.ended)
	for m := range c.conn.Messages() {
		text := "<undecodable: " + strconv.Itoa(int(m.Seq)) + ">"
		if am, err := client.DecodeAppMessage(m.Content); err == nil {
			text = am.Text
		}
		c.mu.Lock()
		c.got = append(c.got, faultReceived{text: text, at: time.Now()})
		c.mu.Unlock()
	}
}

func (c *faultClient) send(ctx context.Context, text string) error {
	b, err := client.EncodeAppMessage(protocol.AppMessage{Text: text, Timestamp: uint64(time.Now().UnixNano())})
	if err != nil {
		return err
	}
	// Record before Send: the echo can arrive before Send returns.
	c.mu.Lock()
	c.sent = append(c.sent, text)
	c.sentAt = append(c.sentAt, time.Now())
	for _, e := range faultExpect(text) {
		c.expected = append(c.expected, e)
		c.expSrc = append(c.expSrc, len(c.sent)-1)
	}
	c.mu.Unlock()
	if err := c.conn.Send(ctx, b); err != nil {
		return fmt.Errorf("client %d: send %q: %w", c.idx, text, err)
	}
	return nil
}

func (c *faultClient) snapshot() (sent, expected []string, got []faultReceived) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent), slices.Clone(c.expected), slices.Clone(c.got)
}

// faultTraffic is the per-client traffic of a fault test:
//  1. Before: steady messages at Pace (one of them "burst:N" for a canister → client burst);
//  2. Burst: back-to-back messages (client → canister burst), after which the client reports ready;
//     the test kills its victim once every client is ready, so the kill lands in these bursts;
//  3. After: steady messages at Pace once the kill is done (one "burst:N" again).
type faultTraffic struct {
	Before, Burst, After int
	CanisterBurst        int
	Pace                 time.Duration
	// KillAfter, when set, kills as soon as that many clients have started their burst instead of
	// once every client has sent all of it: a slow client (the race detector) may take as long to
	// send its burst as the gateway takes to relay it.
	KillAfter int
}

func (tr faultTraffic) plan(idx int) (before, burst, after []string) {
	text := func(phase string, i int) string {
		if i == 3 && tr.CanisterBurst > 0 {
			return "burst:" + strconv.Itoa(tr.CanisterBurst)
		}
		return fmt.Sprintf("c%d-%s%d", idx, phase, i)
	}
	for i := 1; i <= tr.Before; i++ {
		before = append(before, text("a", i))
	}
	for i := 1; i <= tr.Burst; i++ {
		burst = append(burst, fmt.Sprintf("c%d-b%d", idx, i))
	}
	for i := 1; i <= tr.After; i++ {
		after = append(after, text("z", i))
	}
	return before, burst, after
}

// faultRun is a fleet of clients against a deployment.
type faultRun struct {
	t       *testing.T
	d       *Deployment
	clients []*faultClient
}

// startFaultClients dials n clients, client i preferring edge i mod len(edges).
func startFaultClients(t *testing.T, d *Deployment, n int, o faultClientOptions) *faultRun {
	t.Helper()
	var addrs []string
	for _, e := range d.Edges {
		addrs = append(addrs, faultHostPort(t, e.WSURL))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rootKey, err := client.RootKey(ctx, d.Replica.URL, nil, nil)
	if err != nil {
		t.Fatalf("root key: %v", err)
	}
	var balancer *faultBalancer
	if o.Balancer {
		var urls []string
		for _, e := range d.Edges {
			urls = append(urls, "http"+strings.TrimPrefix(e.WSURL, "ws"))
		}
		balancer = startFaultBalancer(t, urls)
	}
	r := &faultRun{t: t, d: d, clients: make([]*faultClient, n)}
	start := time.Now()
	took := make([]time.Duration, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			began := time.Now()
			c, err := dialFaultClient(gctx, i, &faultDialer{addrs: addrs, preferred: i % len(addrs), balancer: balancer}, d.Replica.URL, d.Replica.CanisterID, rootKey, o)
			r.clients[i], took[i] = c, time.Since(began)
			return err
		})
	}
	err = g.Wait()
	t.Cleanup(func() {
		for _, c := range r.clients {
			if c != nil {
				c.conn.Close()
			}
		}
	})
	if err != nil {
		t.Fatalf("dial %d clients: %v", n, err)
	}
	t.Logf("%d resuming clients open over %d edge(s) in %s", n, len(addrs), time.Since(start).Round(time.Millisecond))
	// An open takes a few round trips; a slow one shows what it waited for.
	if slowest := slices.Index(took, slices.Max(took)); took[slowest] > 5*time.Second {
		t.Logf("client %d took %s to open", slowest, took[slowest].Round(time.Millisecond))
		r.explainClient(r.clients[slowest], start.Add(-time.Second), time.Now())
	}
	return r
}

// dumpClientLog shows one client's debug log when the test fails.
func (r *faultRun) dumpClientLog(c *faultClient) {
	r.t.Logf("----- client %d (%s) log (tail) -----\n%s", c.idx, c.key.Token(), tail(c.logs.Bytes(), 8<<10))
}

// runWithKill drives tr on every client, calls kill once every client has sent its burst, and
// returns the moment the kill completed (the victim is gone). It waits for the senders to finish.
func (r *faultRun) runWithKill(tr faultTraffic, kill func()) time.Time {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	need := len(r.clients)
	if tr.KillAfter > 0 && tr.KillAfter < need {
		need = tr.KillAfter
	}
	var readyN atomic.Int32
	readyCh := make(chan struct{})
	killed := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	var failed atomic.Pointer[faultClient]
	for _, c := range r.clients {
		g.Go(func() (err error) {
			defer func() {
				if err != nil && !errors.Is(err, context.Canceled) {
					failed.CompareAndSwap(nil, c)
				}
			}()
			before, burst, after := tr.plan(c.idx)
			readyOnce := sync.OnceFunc(func() {
				if int(readyN.Add(1)) == need {
					close(readyCh)
				}
			})
			defer readyOnce()
			tick := time.NewTicker(tr.Pace)
			defer tick.Stop()
			steady := func(texts []string) error {
				for _, s := range texts {
					select {
					case <-tick.C:
					case <-gctx.Done():
						return gctx.Err()
					}
					if err := c.send(gctx, s); err != nil {
						return err
					}
				}
				return nil
			}
			if err := steady(before); err != nil {
				return err
			}
			if tr.KillAfter > 0 {
				readyOnce()
			}
			for _, s := range burst {
				if err := c.send(gctx, s); err != nil {
					return err
				}
			}
			readyOnce()
			select {
			case <-killed:
			case <-gctx.Done():
				return gctx.Err()
			}
			return steady(after)
		})
	}
	select {
	case <-readyCh:
	case <-ctx.Done():
	}
	var killedAt time.Time
	if gctx.Err() == nil {
		kill()
		killedAt = time.Now()
	}
	close(killed)
	if err := g.Wait(); err != nil {
		if c := failed.Load(); c != nil {
			r.dumpClientLog(c)
		}
		t.Fatalf("traffic: %v", err)
	}
	return killedAt
}

// verify waits until every client got everything it should, then checks both directions exactly:
// the canister received each client's texts once and in order with no sequence error and no close;
// each client received the expected echoes and bursts once and in order, and is still open.
func (r *faultRun) verify(timeout time.Duration) {
	t := r.t
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for _, c := range r.clients {
		for {
			_, expected, got := c.snapshot()
			select {
			case <-c.ended:
				r.dumpClientLog(c)
				t.Fatalf("client %d: session ended after %d of %d messages: %v", c.idx, len(got), len(expected), c.conn.Err())
			default:
			}
			if len(got) >= len(expected) {
				break
			}
			if time.Now().After(deadline) {
				r.explainClient(c, start.Add(-time.Minute), time.Now())
				t.Fatalf("client %d: received %d of %d canister messages in %s (last %q)", c.idx, len(got), len(expected), timeout, faultLastReceived(got))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ctl := r.d.Replica.Control
	for _, c := range r.clients {
		sent, expected, got := c.snapshot()
		texts := make([]string, len(got))
		for i, g := range got {
			texts[i] = g.text
		}
		if !slices.Equal(texts, expected) {
			r.dumpClientLog(c)
		}
		assertSameTexts(t, fmt.Sprintf("client %d: canister → client", c.idx), texts, expected)
		l := waitCanisterLog(t, ctl, c.key, 10*time.Second, fmt.Sprintf("client %d: canister log", c.idx), func(l wscanister.ClientLog) error {
			if l.Received < len(sent) {
				return fmt.Errorf("canister received %d of %d", l.Received, len(sent))
			}
			return nil
		})
		if !slices.Equal(l.Texts, sent) {
			r.dumpClientLog(c)
		}
		assertSameTexts(t, fmt.Sprintf("client %d: client → canister", c.idx), l.Texts, sent)
		if l.Received != len(sent) {
			t.Fatalf("client %d: canister counted %d messages, client sent %d", c.idx, l.Received, len(sent))
		}
		if l.SequenceErrors != 0 || len(l.Closes) != 0 || !l.Open {
			r.dumpClientLog(c)
			t.Fatalf("client %d: canister saw %d sequence errors, closes %v, open=%v", c.idx, l.SequenceErrors, l.Closes, l.Open)
		}
		if err := c.conn.Err(); err != nil {
			r.dumpClientLog(c)
			t.Fatalf("client %d: session ended: %v", c.idx, err)
		}
	}
}

func faultLastReceived(got []faultReceived) string {
	if len(got) == 0 {
		return ""
	}
	return got[len(got)-1].text
}

// faultRecovery summarises what the clients saw around the kill.
type faultRecovery struct {
	firstAfter   time.Duration // kill → first delivery of an echo of a message sent after the kill (any client)
	worstFirst   time.Duration // kill → that delivery, for the slowest client
	longestGap   time.Duration // longest silence between two deliveries, for any client, around the kill
	allDone      time.Duration // kill → last delivery of all
	resumes      int           // client resumes in total
	resent       int           // ws_messages re-sent after resumes
	clientsMoved int           // clients whose connection ended up on another edge than preferred
	silentClient *faultClient  // the client that saw longestGap
	silentFrom   time.Time     // when its longest silence began
}

func (r *faultRun) recovery(killedAt time.Time) faultRecovery {
	var rc faultRecovery
	rc.firstAfter = -1
	for _, c := range r.clients {
		c.mu.Lock()
		first := time.Duration(-1)
		prev := time.Time{}
		// verify has checked that got[i] is expected[i], so expSrc[i] says what caused it.
		for i, g := range c.got {
			if first < 0 && i < len(c.expSrc) && !c.sentAt[c.expSrc[i]].Before(killedAt) {
				first = g.at.Sub(killedAt)
			}
			if !prev.IsZero() && g.at.After(killedAt) {
				// The gap that spans the kill counts from the kill, not from the last message before it.
				from := prev
				if from.Before(killedAt) {
					from = killedAt
				}
				if gap := g.at.Sub(from); gap > rc.longestGap {
					rc.longestGap, rc.silentClient, rc.silentFrom = gap, c, from
				}
			}
			prev = g.at
		}
		if len(c.got) > 0 {
			rc.allDone = max(rc.allDone, c.got[len(c.got)-1].at.Sub(killedAt))
		}
		c.mu.Unlock()
		if first >= 0 && (rc.firstAfter < 0 || first < rc.firstAfter) {
			rc.firstAfter = first
		}
		rc.worstFirst = max(rc.worstFirst, first)
		rc.resumes += c.conn.Resumes()
		rc.resent += c.conn.Resent()
		if int(c.dialer.current.Load()) != c.dialer.preferred {
			rc.clientsMoved++
		}
	}
	return rc
}

func (r *faultRun) logRecovery(what string, killedAt time.Time) faultRecovery {
	rc := r.recovery(killedAt)
	r.t.Logf("RECOVERY %s: %s (first delivery after the kill of a message sent after it; slowest client %s; longest silence any client saw %s; all %d clients complete %s after the kill; %d resumes, %d messages re-sent, %d clients moved edge)",
		what, rc.firstAfter.Round(time.Millisecond), rc.worstFirst.Round(time.Millisecond), rc.longestGap.Round(time.Millisecond),
		len(r.clients), rc.allDone.Round(time.Millisecond), rc.resumes, rc.resent, rc.clientsMoved)
	r.t.Logf("deliveries per second around the kill (at %s UTC): %s", killedAt.UTC().Format("15:04:05.000"), r.timeline(killedAt))
	if reasons := r.dropReasons(); reasons != "" {
		r.t.Logf("why clients resumed: %s", reasons)
	}
	return rc
}

// dropReasons counts the reasons of the clients' dropped connections (from their logs), with
// client-specific details (addresses, durations) left out.
func (r *faultRun) dropReasons() string {
	counts := map[string]int{}
	for _, c := range r.clients {
		for _, line := range strings.Split(string(c.logs.Bytes()), "\n") {
			if !strings.Contains(line, `msg="connection dropped; resuming"`) {
				continue
			}
			_, reason, _ := strings.Cut(line, ` err="`)
			reason, _, _ = strings.Cut(reason, `"`)
			if i := strings.Index(reason, ": read tcp"); i >= 0 {
				reason = reason[:i]
			}
			if strings.HasPrefix(reason, "read tcp") {
				_, rest, _ := strings.Cut(reason, "->")
				_, reason, _ = strings.Cut(rest, ": ")
			}
			counts[reason]++
		}
	}
	var parts []string
	for reason, n := range counts {
		parts = append(parts, fmt.Sprintf("%d × %s", n, reason))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// timeline counts deliveries (all clients) per second from one second before the kill.
func (r *faultRun) timeline(killedAt time.Time) string {
	var counts []int
	for _, c := range r.clients {
		c.mu.Lock()
		for _, g := range c.got {
			s := int(g.at.Sub(killedAt)/time.Second) + 1
			if g.at.Before(killedAt) {
				s = 0
				if killedAt.Sub(g.at) > time.Second {
					continue
				}
			}
			for len(counts) <= s {
				counts = append(counts, 0)
			}
			counts[s]++
		}
		c.mu.Unlock()
	}
	var b strings.Builder
	for i, n := range counts {
		fmt.Fprintf(&b, " %+ds:%d", i-1, n)
	}
	return strings.TrimSpace(b.String())
}

// faultLogLines returns the lines of a process's logs that contain any of the substrings (at most
// limit of them), to show in the test log what a role did around a kill.
func faultLogLines(p *Process, limit int, substrings ...string) []string {
	stdout, stderr := p.Logs()
	var out []string
	for _, line := range strings.Split(stdout+"\n"+stderr, "\n") {
		for _, s := range substrings {
			if strings.Contains(line, s) {
				out = append(out, line)
				break
			}
		}
	}
	if len(out) > limit {
		out = append(out[:limit], fmt.Sprintf("... %d more", len(out)-limit))
	}
	return out
}

// logRoleWarnings shows each role's warnings and errors (a few) after a kill.
func (r *faultRun) logRoleWarnings() {
	var roles []*Role
	for _, e := range r.d.Edges {
		roles = append(roles, &e.Role)
	}
	roles = append(roles, r.d.Submitters...)
	roles = append(roles, r.d.Pollers...)
	for _, role := range roles {
		if lines := faultLogLines(role.Proc, 8, "level=WARN", "level=ERROR"); len(lines) > 0 {
			r.t.Logf("%s warnings/errors:\n  %s", role.Name, strings.Join(lines, "\n  "))
		}
	}
}

// faultKeepLogs copies every process log of d to $ICWS_FAULT_LOGDIR/<test>/ at the end of the
// test (before the processes are stopped), when that variable is set: the logs of a passing run
// are the evidence behind its figures.
func faultKeepLogs(t *testing.T, d *Deployment) {
	dir := os.Getenv("ICWS_FAULT_LOGDIR")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	var procs []*Process
	for _, n := range d.NATS.Nodes {
		procs = append(procs, n.Proc)
	}
	procs = append(procs, d.Replica.Proc)
	for _, e := range d.Edges {
		procs = append(procs, e.Proc)
	}
	for _, r := range append(slices.Clone(d.Submitters), d.Pollers...) {
		procs = append(procs, r.Proc)
	}
	t.Cleanup(func() {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Logf("keep logs: %v", err)
			return
		}
		for _, p := range procs {
			stdout, stderr := p.Logs()
			_ = os.WriteFile(filepath.Join(dir, p.Name+".log"), []byte(stdout+stderr), 0o644)
		}
		t.Logf("process logs kept in %s", dir)
	})
}

// faultGrayEnv gates the hang and partition tests (fault_hang_test.go, fault_partition_test.go):
// they take several minutes each, so the normal test run skips them and .ci/run runs them as a
// step of their own with this variable set.
const faultGrayEnv = "ICWS_FAULT_GRAY"

func requireGrayFaults(t *testing.T) {
	t.Helper()
	if os.Getenv(faultGrayEnv) == "" {
		t.Skipf("hang and partition tests run only with %s=1 (.ci/run has a step for them)", faultGrayEnv)
	}
}

// faultHang freezes p (SIGSTOP) now and thaws it (SIGCONT) after d, or at the end of the test.
// It returns a channel closed once p is thawed.
func faultHang(t *testing.T, p *Process, d time.Duration) <-chan struct{} {
	thawed := make(chan struct{})
	thaw := sync.OnceFunc(func() { p.Continue(); close(thawed) })
	p.Pause()
	timer := time.AfterFunc(d, thaw)
	t.Cleanup(func() { timer.Stop(); thaw() })
	return thawed
}

// target logs whether the longest silence met its target and, when it did not, why: the cause
// the test knows of, and what the client that waited longest went through meanwhile.
func (r *faultRun) target(what string, rc faultRecovery, target time.Duration, why string) {
	t := r.t
	t.Helper()
	got := rc.longestGap
	if got <= target {
		t.Logf("TARGET %s: longest client silence %s, target %s: met", what, got.Round(time.Millisecond), target.Round(time.Millisecond))
		return
	}
	t.Logf("TARGET %s: longest client silence %s, target %s: MISSED: %s", what, got.Round(time.Millisecond), target.Round(time.Millisecond), why)
	if c := rc.silentClient; c != nil {
		t.Logf("client %d was silent from %s UTC for %s", c.idx, rc.silentFrom.UTC().Format("15:04:05.000"), got.Round(time.Millisecond))
		r.explainClient(c, rc.silentFrom.Add(-5*time.Second), rc.silentFrom.Add(got+5*time.Second))
	}
}

// explainClient logs what client c went through between from and to, in time order: its own log
// lines (debug lines only for failed resumes), the lines of the edges and submitters naming its
// session, the edges' own events, the submitters' events of its partition and the pollers'
// warnings.
func (r *faultRun) explainClient(c *faultClient, from, to time.Time) {
	inWindow := func(text string, keep func(string) bool) []string {
		var out []string
		for _, line := range strings.Split(text, "\n") {
			if at, ok := faultLogTime(line); ok && at.After(from) && at.Before(to) && keep(line) {
				out = append(out, strings.TrimSpace(line))
			}
		}
		return out
	}
	key := c.key.Token()
	lines := inWindow(string(c.logs.Bytes()), func(line string) bool {
		return !strings.Contains(line, "level=DEBUG") || strings.Contains(line, "resume attempt failed")
	})
	about := func(line string) bool { return strings.Contains(line, key) && !strings.Contains(line, "msg=stage") }
	// The edges' own events (their NATS connection, leases, subscriptions) beside the client's.
	edgeEvent := func(line string) bool {
		return about(line) || !strings.Contains(line, "level=DEBUG") && !strings.Contains(line, " client=") && !strings.Contains(line, " session=")
	}
	for _, e := range r.d.Edges {
		stdout, stderr := e.Proc.Logs()
		for _, line := range inWindow(stdout+stderr, edgeEvent) {
			lines = append(lines, e.Name+": "+line)
		}
	}
	// The pollers' warnings: nothing reaches any client while no poller polls.
	for _, p := range r.d.Pollers {
		stdout, stderr := p.Proc.Logs()
		for _, line := range inWindow(stdout+stderr, func(line string) bool { return !strings.Contains(line, "level=DEBUG") }) {
			lines = append(lines, p.Name+": "+line)
		}
	}
	// The submitters' lines about the client's partition say why its envelopes waited.
	if _, partitions := faultSubmitterPartitions(r.t, r.d); partitions > 0 {
		tag := fmt.Sprintf("partition=%d ", bus.Partition(r.d.Replica.CanisterID, key, partitions))
		mine := about
		about = func(line string) bool {
			return mine(line) || strings.Contains(line, tag) && !strings.Contains(line, " client=")
		}
	}
	for _, s := range r.d.Submitters {
		stdout, stderr := s.Proc.Logs()
		for _, line := range inWindow(stdout+stderr, about) {
			lines = append(lines, s.Name+": "+line)
		}
	}
	slices.SortStableFunc(lines, func(a, b string) int {
		return strings.Compare(faultLogStamp(a), faultLogStamp(b))
	})
	if len(lines) > 120 {
		lines = append(lines[:60], append([]string{fmt.Sprintf("... %d more ...", len(lines)-120)}, lines[len(lines)-60:]...)...)
	}
	r.t.Logf("client %d (%s) from %s to %s UTC, its log and the roles' lines about it:\n  %s", c.idx, key,
		from.UTC().Format("15:04:05.000"), to.UTC().Format("15:04:05.000"), strings.Join(lines, "\n  "))
	for _, e := range r.d.Edges {
		if stuck := faultStuckConnGoroutines(e.AdminURL); stuck != "" {
			r.t.Logf("%s: connection goroutines blocked for a minute or more:\n%s", e.Name, stuck)
		}
	}
}

// faultStuckConnGoroutines lists an edge's goroutines that serve a connection and have been blocked
// for at least a minute (from its /debug/pprof/goroutine?debug=2), alike stacks counted once: a
// session that relays nothing while its socket is open shows where its reader waits.
func faultStuckConnGoroutines(adminURL string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, adminURL+"/debug/pprof/goroutine?debug=2", nil)
	if err != nil {
		return err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "goroutine dump: " + err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "goroutine dump: " + err.Error()
	}
	counts := map[string]int{}
	var order []string
	for _, g := range strings.Split(string(body), "\n\n") {
		header, stack, _ := strings.Cut(g, "\n")
		if !strings.Contains(header, " minutes]") || !strings.Contains(stack, "edge.(*conn)") {
			continue
		}
		// The stack without arguments and addresses, so alike goroutines match.
		var frames []string
		for _, line := range strings.Split(stack, "\n") {
			if strings.HasPrefix(line, "\t") {
				continue // file and line
			}
			if i := strings.LastIndex(line, "("); i > 0 && strings.HasSuffix(line, ")") {
				line = line[:i]
			}
			frames = append(frames, "  "+line)
		}
		sig := strings.Join(frames, "\n")
		if counts[sig] == 0 {
			order = append(order, sig)
		}
		counts[sig]++
	}
	var out []string
	for _, sig := range order {
		out = append(out, fmt.Sprintf(" %d goroutine(s):\n%s", counts[sig], sig))
	}
	return strings.Join(out, "\n")
}

// faultLogStamp is the time= value of a log line (possibly prefixed by a process name), for sorting.
func faultLogStamp(line string) string {
	_, rest, _ := strings.Cut(line, "time=")
	ts, _, _ := strings.Cut(rest, " ")
	return ts
}

// faultLogTime reads the time= field of a slog text line.
func faultLogTime(line string) (time.Time, bool) {
	_, rest, ok := strings.Cut(line, "time=")
	if !ok {
		return time.Time{}, false
	}
	ts, _, _ := strings.Cut(rest, " ")
	at, err := time.Parse(time.RFC3339Nano, ts)
	return at, err == nil
}

// faultRaftLeaders maps every JetStream raft group of the test cluster (stream "S", durable
// consumer "S/C") to the node leading it, from the /jsz page of a running node.
func faultRaftLeaders(t *testing.T, c *NATSCluster, skip int) map[string]string {
	t.Helper()
	var j struct {
		AccountDetails []struct {
			StreamDetail []struct {
				Name    string `json:"name"`
				Cluster *struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
				ConsumerDetail []struct {
					Name   string `json:"name"`
					Config *struct {
						Durable string `json:"durable_name"`
					} `json:"config"`
					Cluster *struct {
						Leader string `json:"leader"`
					} `json:"cluster"`
				} `json:"consumer_detail"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	for i, n := range c.Nodes {
		if i == skip {
			continue
		}
		if err := getJSON(n.MonitorURL+"/jsz?accounts=true&streams=true&consumers=true&config=true", &j); err != nil {
			continue
		}
		out := map[string]string{}
		for _, a := range j.AccountDetails {
			for _, s := range a.StreamDetail {
				if s.Cluster != nil {
					out[s.Name] = s.Cluster.Leader
				}
				for _, cd := range s.ConsumerDetail {
					// Ephemeral consumers (KV watchers) have one replica: they end with their
					// server instead of electing a new leader.
					if cd.Cluster != nil && cd.Config != nil && cd.Config.Durable != "" {
						out[s.Name+"/"+cd.Name] = cd.Cluster.Leader
					}
				}
			}
		}
		return out
	}
	t.Fatal("no NATS node answered /jsz")
	return nil
}

// faultElections records when JetStream announced a new leader for each raft group, as seen from
// a node that is not the victim.
type faultElections struct {
	mu sync.Mutex
	at map[string]time.Time // "S" or "S/C" → first LEADER_ELECTED advisory after start
}

func watchFaultElections(t *testing.T, c *NATSCluster, avoid int) *faultElections {
	t.Helper()
	var url string
	for i, n := range c.Nodes {
		if i != avoid {
			url = n.ClientURL
			break
		}
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	el := &faultElections{at: map[string]time.Time{}}
	record := func(prefix string) {
		if _, err := nc.Subscribe(prefix+".>", func(m *nats.Msg) {
			group := strings.TrimPrefix(m.Subject, prefix+".")
			group = strings.Replace(group, ".", "/", 1)
			el.mu.Lock()
			if _, seen := el.at[group]; !seen {
				el.at[group] = time.Now()
			}
			el.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	record("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED")
	record("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return el
}

// electionTime waits (up to timeout) until every group in led has a new leader and returns the
// longest time from the fault to an election, with each group's figure.
func (el *faultElections) electionTime(t *testing.T, led []string, faultAt time.Time, timeout time.Duration) (time.Duration, string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		el.mu.Lock()
		var missing []string
		var worst time.Duration
		var parts []string
		for _, g := range led {
			at, ok := el.at[g]
			if !ok {
				missing = append(missing, g)
				continue
			}
			d := at.Sub(faultAt)
			worst = max(worst, d)
			parts = append(parts, fmt.Sprintf("%s %s", g, d.Round(time.Millisecond)))
		}
		el.mu.Unlock()
		if len(missing) == 0 {
			slices.Sort(parts)
			return worst, strings.Join(parts, ", ")
		}
		if time.Now().After(deadline) {
			t.Logf("no leader election seen for %v within %s", missing, timeout)
			slices.Sort(parts)
			return worst, strings.Join(parts, ", ") + fmt.Sprintf(" (none seen for %v)", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// groupsLedBy lists the raft groups whose leader was node.
func groupsLedBy(leaders map[string]string, node string) []string {
	var out []string
	for g, l := range leaders {
		if l == node {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return out
}

// clientsOnEdge returns the clients whose current connection goes to edge i.
func (r *faultRun) clientsOnEdge(i int) []*faultClient {
	var out []*faultClient
	for _, c := range r.clients {
		if int(c.dialer.current.Load()) == i {
			out = append(out, c)
		}
	}
	return out
}
