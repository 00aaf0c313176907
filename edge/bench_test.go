package edge

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/cputime"
	"github.com/icws/icws/internal/testkit/natstest"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const natsHelperEnv = "ICWS_EDGE_TEST_NATS_HELPER"

// TestMain lets a benchmark run nats-server in a child process (this test binary), so the
// benchmark's heap holds the edge alone.
func TestMain(m *testing.M) {
	if dir := os.Getenv(natsHelperEnv); dir != "" {
		s, err := natstest.NewServer(dir)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println(s.ClientURL())
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent goes away
		s.Shutdown()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func externalNATS(b *testing.B) *env {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), natsHelperEnv+"="+b.TempDir())
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "nats://") {
		b.Fatalf("nats helper: %q %v", line, err)
	}
	nc, err := nats.Connect(strings.TrimSpace(line))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if err := bus.Ensure(context.Background(), js, bus.DefaultTopology()); err != nil {
		b.Fatal(err)
	}
	h, err := bus.Open(context.Background(), js)
	if err != nil {
		b.Fatal(err)
	}
	v := newEnvWith(b, nc, js, h)
	return v
}

// rawOpen opens a WebSocket by hand and sends the ws_open frame; it never reads, so the client
// side costs a socket and nothing else.
func rawOpen(b testing.TB, addr string, c *client) net.Conn {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		addr, base64.StdEncoding.EncodeToString(key))
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	f, _ := protocol.EncodeClientFrame(c.openEnvelope(c.gw))
	if _, err := conn.Write(maskedBinaryFrame(f)); err != nil {
		b.Fatal(err)
	}
	return conn
}

func maskedBinaryFrame(p []byte) []byte { return maskedFrame(true, 0x2, p) }

// maskedFrame is a client frame: masked, with the FIN bit as fin, opcode op and payload p.
func maskedFrame(fin bool, op byte, p []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch {
	case len(p) < 126:
		out = append(out, 0x80|byte(len(p)))
	case len(p) < 65536:
		out = append(out, 0x80|126, byte(len(p)>>8), byte(len(p)))
	default:
		out = append(out, 0x80|127, 0, 0, 0, 0, byte(len(p)>>24), byte(len(p)>>16), byte(len(p)>>8), byte(len(p)))
	}
	mask := []byte{1, 2, 3, 4}
	out = append(out, mask...)
	for i, x := range p {
		out = append(out, x^mask[i%4])
	}
	return out
}

// heapAndStack are signed: with idle connections parked instead of waiting in goroutines, the
// stacks in use may shrink while sessions are opened.
func heapAndStack() (int64, int64) {
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse), int64(ms.StackInuse)
}

// BenchmarkIdleSessionMemory opens 1,000 idle sessions (open, OpenMessage delivered) against an
// edge whose NATS server runs in another process, and reports heap+stack bytes and goroutines per
// session. Run with -benchtime=1x.
func BenchmarkIdleSessionMemory(b *testing.B) {
	b.Run("opened", func(b *testing.B) { idleSessions(b, nil) })
	// After a ws_message or a pong (the answer to the edge's liveness ping) the connection waits
	// in the idle poller again, or (without epoll) in a fresh 2 KiB goroutine.
	b.Run("after_one_message", func(b *testing.B) {
		idleSessions(b, func(c *client) []byte {
			f, _ := protocol.EncodeClientFrame(c.messageEnvelope(1, true))
			return maskedBinaryFrame(f)
		})
	})
	b.Run("after_a_pong", func(b *testing.B) {
		idleSessions(b, func(*client) []byte { return maskedFrame(true, opPong, []byte("liveness")) })
	})
}

// idleSessions opens the sessions, then has each client send what then returns (if not nil).
func idleSessions(b *testing.B, then func(*client) []byte) {
	const n = 1000
	v := externalNATS(b)
	v.startPipeline(false)
	e := v.startEdge(testConfig("mem"))
	addr := e.Addr().String()
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = newClient(b, v.gw, randomCanister(b))
		_ = clients[i].openEnvelope(v.gw) // warm up signing paths before measuring
	}
	// Warm-up session (lazy NATS and HTTP structures).
	w := newClient(b, v.gw, randomCanister(b))
	rawOpen(b, addr, w)
	testkit.WaitFor(b, 10*time.Second, "warm-up delivered", func() bool { return counter(b, e.m.framesOut) >= 2 })
	time.Sleep(100 * time.Millisecond)
	heap0, stack0 := heapAndStack()
	g0 := runtime.NumGoroutine()
	b.ResetTimer()
	conns := make([]net.Conn, 0, n)
	for _, c := range clients {
		conns = append(conns, rawOpen(b, addr, c))
	}
	// Each session got its handshake and its OpenMessage.
	testkit.WaitFor(b, 60*time.Second, "all OpenMessages delivered", func() bool { return counter(b, e.m.framesOut) >= float64(2*(n+1)) })
	if then != nil {
		sent := time.Now().UnixNano()
		for i, c := range clients {
			if _, err := conns[i].Write(then(c)); err != nil {
				b.Fatal(err)
			}
		}
		// Every frame a client sends stamps its connection's lastSeen once read (or marks it busy).
		testkit.WaitFor(b, 60*time.Second, "all sent frames read", func() bool {
			e.mu.RLock()
			defer e.mu.RUnlock()
			read := 0
			for c := range e.conns {
				if s := c.lastSeen.Load(); s == readerBusy || s >= sent {
					read++
				}
			}
			return read >= n
		})
	}
	time.Sleep(200 * time.Millisecond) // let transient writer goroutines end
	b.StopTimer()
	heap1, stack1 := heapAndStack()
	g1 := runtime.NumGoroutine()
	b.ReportMetric(float64(heap1-heap0)/n, "heap-B/session")
	b.ReportMetric(float64(stack1-stack0)/n, "stack-B/session")
	b.ReportMetric(float64((heap1+stack1)-(heap0+stack0))/n, "B/session")
	b.ReportMetric(float64(g1-g0)/n, "goroutines/session")
	for _, c := range conns {
		_ = c.Close()
	}
}

// BenchmarkReplay1000 measures a resume that replays 1,000 missed messages: from the resume frame
// sent to the last replayed frame received (by a client that decodes each frame but does not
// verify it). frame=3KB is the size of the bench's resume frames (1 KiB payload, certificate and
// witness); cpu-ms/replay is this process's CPU per replay (nats-server, edge and client).
func BenchmarkReplay1000(b *testing.B) {
	for _, c := range []struct {
		name string
		pad  int
	}{{"frame=1KB", 1024}, {"frame=3KB", 2900}} {
		b.Run(c.name, func(b *testing.B) { replay1000(b, c.pad) })
	}
}

func replay1000(b *testing.B, pad int) {
	const missed = 1000
	v := newEnv(b)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("replay"))
	c := newClient(b, v.gw, randomCanister(b))
	c.dial(e.url, true)
	c.open()
	c.next()
	subj := outSubjectOfClient(c)
	for s := uint64(2); s <= missed+1; s++ {
		if _, err := v.js.PublishMsgAsync(outMsg(v.gw, subj, s, pad)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-v.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		b.Fatal("publish timeout")
	}
	b.ResetTimer()
	meter := cputime.Start()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		meter.Stop()
		_ = c.ws.UnderlyingConn().Close()
		testkit.WaitFor(b, 10*time.Second, "detached", func() bool {
			rec := v.session(c)
			return rec != nil && rec.State == bus.SessionDetached
		})
		old := c.token
		c.dial(e.url, true)
		frame := c.resumeFrame(c.canister, old, 1)
		meter.Start()
		b.StartTimer()
		if err := c.ws.WriteMessage(2, frame); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, _, err := c.ws.ReadMessage(); err != nil { // icws_resumed
			b.Fatal(err)
		}
		t1 := time.Now()

		for want := uint64(2); want <= missed+1; want++ {
			if got, _ := c.next(); got != want {
				b.Fatalf("got %d want %d", got, want)
			}
		}
		if testing.Verbose() {
			b.Logf("icws_resumed after %v, then 1000 messages in %v", t1.Sub(t0), time.Since(t1))
		}
	}
	b.StopTimer()
	meter.Report(b, 0, "")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/replay")
	_ = p
}
