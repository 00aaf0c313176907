package edge

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
)

// freezableProxy forwards TCP connections to a target until frozen; frozen, it forwards nothing in
// either direction and closes nothing, as a network partition or a hung peer would.
type freezableProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startFreezableProxy(t testing.TB, target string) *freezableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezableProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.thaw()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *freezableProxy) addr() string { return p.ln.Addr().String() }

func (p *freezableProxy) freeze() { p.mu.Lock(); p.frozen = true; p.mu.Unlock() }

func (p *freezableProxy) thaw() {
	p.mu.Lock()
	p.frozen = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *freezableProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(out, in) })
		p.wg.Go(func() { p.pipe(in, out) })
	}
}

// pipe copies src to dst, holding each chunk while the proxy is frozen.
func (p *freezableProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.frozen {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				src.Close()
			}
			return
		}
	}
}

// startEdgeVia runs an edge whose NATS connection goes through px.
func (v *env) startEdgeVia(cfg Config, natsAddr string) *runningEdge {
	t := v.t
	t.Helper()
	nc, err := nats.Connect("nats://"+natsAddr, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.Timeout(300*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	savedNC, savedJS := v.nc, v.js
	v.nc, v.js = nc, js
	defer func() { v.nc, v.js = savedNC, savedJS }()
	return v.startEdge(cfg)
}

// An edge cut off from NATS closes its resumable clients with 4103 (resume elsewhere), its standard
// ones with 1011, refuses new connections with 1013 and reports not ready; once NATS answers again
// and its lease is renewed it serves again.
func TestEdgeShedsClientsWhenNATSIsUnreachable(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	px := startFreezableProxy(t, natsHostPort(t, v.nc))
	cfg := testConfig("e1")
	cfg.NATSTimeout = 600 * time.Millisecond
	cfg.JetStreamTimeout = 5 * time.Second
	e := v.startEdgeVia(cfg, px.addr())

	resumable := openedClient(t, v, e.url, true)
	standard := openedClient(t, v, e.url, false)
	px.freeze()

	if code, reason := expectClose(t, resumable.ws); code != CloseResumeElsewhere || reason != reasonResumeElsewhere {
		t.Fatalf("resumable client: close %d %q, want %d %q", code, reason, CloseResumeElsewhere, reasonResumeElsewhere)
	}
	if code, _ := expectClose(t, standard.ws); code != websocket.CloseInternalServerErr {
		t.Fatalf("standard client: close %d, want 1011", code)
	}
	if err := e.Ready(context.Background()); err == nil {
		t.Fatal("edge ready without NATS")
	}
	// A load balancer's plain GET on the WebSocket port sees the edge out of service.
	if resp, err := http.Get("http" + strings.TrimPrefix(e.url, "ws")); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("plain GET while NATS is gone: %v %v, want 503", resp, err)
	} else {
		resp.Body.Close()
	}
	if n := testutil.ToFloat64(e.m.sheds.WithLabelValues("nats")); n != 1 {
		t.Fatalf("sheds{nats} = %v, want 1", n)
	}

	ws, _, err := websocket.DefaultDialer.Dial(e.url+"?icws-resume=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := expectClose(t, ws); code != websocket.CloseTryAgainLater {
		t.Fatalf("new connection while NATS is gone: close %d, want 1013", code)
	}
	ws.Close()

	px.thaw()
	testkit.WaitFor(t, 15*time.Second, "edge ready again", func() bool { return e.Ready(context.Background()) == nil })
	if resp, err := http.Get("http" + strings.TrimPrefix(e.url, "ws")); err != nil || resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET after recovery: %v %v, want 426", resp, err)
	} else {
		resp.Body.Close()
	}
	c := openedClient(t, v, e.url, true)
	if rec := v.session(c); rec == nil || rec.State != bus.SessionOpen || rec.Edge != "e1" {
		t.Fatalf("session after recovery: %+v", rec)
	}
}

func natsHostPort(t testing.TB, nc *nats.Conn) string {
	t.Helper()
	u := nc.ConnectedUrl()
	host, port, err := net.SplitHostPort(u[len("nats://"):])
	if err != nil {
		t.Fatalf("NATS URL %q: %v", u, err)
	}
	return net.JoinHostPort(host, port)
}
