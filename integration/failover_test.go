package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/replica/wscanister"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRoleFailover (DESIGN guarantee 4): with every role twice and NATS three times, SIGKILL the
// active poller, the submitter that owns the client's partition, the edge that holds the session
// (the client resumes on the other edge through a TCP proxy standing in for a load balancer) and
// the node leading ICWS_OUT, one after another, while a resume-enabled client keeps sending.
// Nothing is lost or duplicated: the canister receives 1…N once each in order and the client gets
// every echo once, in order. The time from each kill until the phase's last echo is logged.
func TestRoleFailover(t *testing.T) {
	d := startDeployment(t, DeploymentOptions{NATSNodes: 3, Edges: 2, Submitters: 2, Pollers: 2})
	canister := d.Replica.CanisterID
	roles := map[string]*Process{}
	for _, r := range append(append([]*Role{}, d.Submitters...), d.Pollers...) {
		roles[r.Name] = r.Proc
	}
	edges := map[string]*Edge{}
	for _, e := range d.Edges {
		edges[e.Name] = e
	}
	proxy := startProxy(t, strings.TrimPrefix(d.Edges[0].WSURL, "ws://"))
	c := dialClient(t, proxy.URL(), d.Replica.URL, canister, dialOptions{Resume: true})
	token := c.Key.Token()

	nc := d.NATS.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h, err := bus.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	leaseHolder := func(key string) string {
		t.Helper()
		e, err := h.Leases.Get(ctx, key)
		if err != nil {
			t.Fatalf("lease %s: %v", key, err)
		}
		var rec bus.LeaseRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatalf("lease %s: %v", key, err)
		}
		return rec.Holder
	}

	const perPhase = 40
	sent := 0
	phase := func(name string, kill func() string) {
		t.Helper()
		first := sent
		next := func(k int) []string {
			out := make([]string, k)
			for i := range out {
				sent++
				out[i] = fmt.Sprint(sent)
			}
			return out
		}
		c.sendTexts(next(perPhase / 2))
		killed := time.Now()
		victim := kill()
		c.sendTexts(next(perPhase / 2))
		got := c.receiveTexts(perPhase, 90*time.Second)
		want := make([]string, perPhase)
		for i := range want {
			want[i] = fmt.Sprint(first + i + 1)
		}
		assertSameTexts(t, name+": echoes", got, want)
		t.Logf("%s: killed %s; all %d echoes %s after the kill", name, victim, perPhase, time.Since(killed).Round(time.Millisecond))
	}

	phase("warm-up", func() string { return "nothing" })
	phase("poller", func() string {
		victim := leaseHolder(bus.PollerLeaseKey(canister))
		p, ok := roles[victim]
		if !ok {
			t.Fatalf("poller lease held by unknown %q", victim)
		}
		p.Kill()
		return victim
	})
	phase("submitter", func() string {
		victim := leaseHolder(bus.SubmitterLeaseKey(bus.Partition(canister, token, h.Partitions)))
		p, ok := roles[victim]
		if !ok {
			t.Fatalf("submitter lease held by unknown %q", victim)
		}
		p.Kill()
		return victim
	})
	phase("edge", func() string {
		e, err := h.Sessions.Get(ctx, bus.SessionKey(canister, token))
		if err != nil {
			t.Fatalf("session record: %v", err)
		}
		var rec bus.SessionRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		victim, ok := edges[rec.Edge]
		if !ok {
			t.Fatalf("session on unknown edge %q", rec.Edge)
		}
		victim.Proc.Kill()
		for _, other := range d.Edges {
			if other != victim {
				proxy.Switch(strings.TrimPrefix(other.WSURL, "ws://"))
			}
		}
		return victim.Name
	})
	phase("nats", func() string {
		info, err := h.Out.Info(ctx)
		if err != nil {
			t.Fatalf("ICWS_OUT info: %v", err)
		}
		i := d.NATS.Index(info.Cluster.Leader)
		if i < 0 {
			t.Fatalf("ICWS_OUT leader %q unknown", info.Cluster.Leader)
		}
		d.NATS.Kill(i)
		return "nats " + info.Cluster.Leader
	})

	l := waitCanisterLog(t, d.Replica.Control, c.Key, 30*time.Second, "canister log", func(l wscanister.ClientLog) error {
		if l.Received < sent {
			return fmt.Errorf("canister received %d of %d", l.Received, sent)
		}
		return nil
	})
	want := make([]string, sent)
	for i := range want {
		want[i] = fmt.Sprint(i + 1)
	}
	assertSameTexts(t, "canister received", l.Texts, want)
	if l.SequenceErrors != 0 || l.Received != sent {
		t.Fatalf("canister: %d received, %d sequence errors", l.Received, l.SequenceErrors)
	}
	t.Logf("%d messages each way across 4 kills; client resumes: %d, re-sent: %d", sent, c.Resumes(), c.Resent())
}

// tcpProxy forwards loopback TCP connections to a target that can be switched, standing in for a
// load balancer in front of edges.
type tcpProxy struct {
	t  testing.TB
	ln net.Listener

	mu     sync.Mutex
	target string
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

// URL is the proxy's WebSocket address.
func (p *tcpProxy) URL() string { return "ws://" + p.ln.Addr().String() }

// Switch sends new connections to target and cuts the existing ones.
func (p *tcpProxy) Switch(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
	p.closeAll()
}

func (p *tcpProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *tcpProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
}

func (p *tcpProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *tcpProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		out, err := net.DialTimeout("tcp", target, 2*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.track(in)
		p.track(out)
		p.wg.Go(func() { p.pipe(in, out) })
	}
}

// pipe copies both ways until either side ends, then closes both.
func (p *tcpProxy) pipe(a, b net.Conn) {
	var once sync.Once
	done := func() {
		once.Do(func() {
			a.Close()
			b.Close()
			p.untrack(a)
			p.untrack(b)
		})
	}
	var wg sync.WaitGroup
	for _, dir := range [][2]net.Conn{{a, b}, {b, a}} {
		wg.Go(func() {
			// Either side ending (EOF, reset, Switch) ends the pair.
			_, _ = io.Copy(dir[0], dir[1])
			done()
		})
	}
	wg.Wait()
}
