//go:build linux

package edge

import (
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/internal/testkit"
)

// Idle connections wait in the edge's epoll set, not in goroutines; a message wakes its
// connection, which waits there again afterwards.
func TestIdleConnectionsWaitWithoutGoroutines(t *testing.T) {
	const n = 40
	v := newEnv(t)
	v.startPipeline(true)
	e := v.startEdge(testConfig("e1"))
	g0 := runtime.NumGoroutine()
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = openedClient(t, v, e.url, false)
	}
	testkit.WaitFor(t, 5*time.Second, "every connection parked", func() bool { return e.idle.count() == n })
	// A reader goroutine per connection would add n.
	testkit.WaitFor(t, 5*time.Second, "no goroutine per idle connection", func() bool { return runtime.NumGoroutine()-g0 < n/2 })
	for round := uint64(1); round <= 2; round++ {
		for _, c := range clients {
			c.send()
		}
		for _, c := range clients {
			if seq, _ := c.next(); seq != round+1 {
				t.Fatalf("echo %d, want %d", seq, round+1)
			}
		}
		testkit.WaitFor(t, 5*time.Second, "parked again", func() bool { return e.idle.count() == n })
	}
}

// A parked connection the edge closes is taken back from the epoll set: its reader waits out the
// close grace for the client's reply, and a client that never replies still loses its socket.
func TestEdgeClosesParkedConnection(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	silent := newClient(t, v.gw, randomCanister(t))
	sock := rawOpen(t, e.Addr().String(), silent)
	t.Cleanup(func() { _ = sock.Close() })
	var c *conn
	testkit.WaitFor(t, 5*time.Second, "parked", func() bool {
		c = e.connOf(silent)
		return c != nil && e.idle.count() == 1
	})
	c.closeWith(websocket.ClosePolicyViolation, "test")
	testkit.WaitFor(t, 5*time.Second, "socket closed without the client's reply", func() bool { return e.connCount() == 0 })
	if e.idle.count() != 0 {
		t.Fatalf("%d connections still parked", e.idle.count())
	}
}

// count is the number of parked connections.
func (p *idlePoller) count() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}
