package bus_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startClusterWatch runs a watch of nc until the test ends; moves counts the reconnects it forced.
func startClusterWatch(t *testing.T, nc *nats.Conn, js jetstream.JetStream, timeout time.Duration) (*bus.ClusterWatch, *atomic.Int32) {
	t.Helper()
	moves := new(atomic.Int32)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	w := bus.NewClusterWatch(nc, js, timeout, testkit.Logger(t, slog.LevelDebug), func() { moves.Add(1) })
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w, moves
}

// A server whose JetStream does not answer while the server does (here: one without JetStream,
// which a server cut off from its cluster resembles to its clients) is left for the next one, and
// a server whose JetStream answers is kept.
func TestClusterWatchLeavesAServerWithoutJetStream(t *testing.T) {
	_, silent := natstest.StartWith(t, func(o *server.Options) { o.JetStream = false })
	working := natstest.StartServer(t)
	nc, js := natstest.Connect(t, silent+","+working, nats.DontRandomize(), nats.ReconnectWait(50*time.Millisecond))
	if nc.ConnectedUrl() != silent {
		t.Fatalf("connected to %s first, want %s", nc.ConnectedUrl(), silent)
	}
	const timeout = time.Second
	_, moves := startClusterWatch(t, nc, js, timeout)

	testkit.WaitFor(t, 10*time.Second, "the watch moves to the server with JetStream", func() bool {
		return nc.IsConnected() && nc.ConnectedUrl() == working
	})
	// Several timeouts on the working server: its answers keep the watch there.
	stay := time.Now().Add(3 * timeout)
	for time.Now().Before(stay) {
		if url := nc.ConnectedUrl(); nc.IsConnected() && url != working {
			t.Fatalf("left the working server for %s", url)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := moves.Load(); n != 1 {
		t.Fatalf("%d moves, want 1", n)
	}
}

// A server whose peers are gone keeps answering its clients while their JetStream requests go
// unanswered or fail: the watch leaves it (and, with no other server listed, comes back to it).
func TestClusterWatchLeavesAServerThatLostItsCluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	survivor := 0
	for i, s := range c.Servers {
		if !s.JetStreamIsLeader() {
			survivor = i
			break
		}
	}
	nc, js := natstest.Connect(t, c.Servers[survivor].ClientURL(), nats.ReconnectWait(50*time.Millisecond))
	_, moves := startClusterWatch(t, nc, js, time.Second)
	for i, s := range c.Servers {
		if i != survivor {
			s.Shutdown()
		}
	}
	testkit.WaitFor(t, 20*time.Second, "the watch leaves the server without its cluster", func() bool {
		return moves.Load() > 0
	})
}

// Lease operations that keep failing move the connection although the meta leader answers: a
// cut-off server that leads the meta group answers account information itself until it steps
// down, but no write of its clients lands.
func TestClusterWatchLeavesAServerWhereLeaseWritesFail(t *testing.T) {
	_, nc, js := natstest.StartJetStream(t)
	w, moves := startClusterWatch(t, nc, js, time.Second)
	// A holder's renewals and attempts to take its lease back keep failing.
	testkit.WaitFor(t, 10*time.Second, "the watch moves after a timeout of failing lease writes", func() bool {
		w.LeaseFailed(context.DeadlineExceeded)
		return moves.Load() > 0
	})
}

func TestClusterWatchIsOptional(t *testing.T) {
	var w *bus.ClusterWatch // no external cluster: the roles call it all the same
	w.LeaseFailed(context.DeadlineExceeded)
	w.LeaseWritten()
}

func TestClientConfigRefusesAShortJetStreamTimeout(t *testing.T) {
	cfg := bus.DefaultClientConfig()
	cfg.JetStreamTimeout = 500 * time.Millisecond
	if err := cfg.Validate(); err == nil {
		t.Fatal("a 500ms ICWS_NATS_JETSTREAM_TIMEOUT was accepted")
	}
}
