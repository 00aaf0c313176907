// Package natstest runs in-process nats-servers with JetStream for tests: one server, or a
// cluster. It is imported only by
// _test.go files; it depends on nothing of icws, so every package's tests (bus's included) can
// use it without an import cycle.
package natstest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readyTimeout bounds the wait for a fresh server; generous for a loaded CI machine.
const readyTimeout = 10 * time.Second

// NewServer starts a JetStream nats-server on a free loopback port, storing in dir, and waits
// until it accepts connections. The caller shuts it down.
func NewServer(dir string) (*server.Server, error) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		return nil, fmt.Errorf("nats-server: not ready after %s", readyTimeout)
	}
	return s, nil
}

// StartServer starts a JetStream nats-server in t's temporary directory, stopped at cleanup, and
// returns its client URL.
func StartServer(t testing.TB) string {
	t.Helper()
	s, err := NewServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// Connect opens a connection to url (with opts) with a JetStream context, closed at cleanup.
func Connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// StartJetStream starts a server (StartServer) and connects to it (Connect).
func StartJetStream(t testing.TB) (url string, nc *nats.Conn, js jetstream.JetStream) {
	t.Helper()
	url = StartServer(t)
	nc, js = Connect(t, url)
	return url, nc, js
}

// Cluster is a JetStream cluster of nats-servers running in this process, routed to each other
// over loopback.
type Cluster struct {
	Servers []*server.Server
}

// URLs is the comma-separated client URL list of every server.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// StartCluster starts n JetStream nats-servers (names n1..nN, stores in t's temporary
// directories) routed to each other on loopback, stopped at cleanup, and waits until JetStream has
// a meta leader and every server is current, so replicated streams can be created.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	ports := freePorts(t, n)
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &Cluster{}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "icws-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats-server %s: %v", opts.ServerName, err)
		}
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		go s.Start()
		if !s.ReadyForConnections(readyTimeout) {
			t.Fatalf("nats-server %s: not ready after %s", opts.ServerName, readyTimeout)
		}
		c.Servers = append(c.Servers, s)
	}
	deadline := time.Now().Add(6 * readyTimeout)
	for !c.jetStreamReady() {
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster of %d: no meta leader with every server current after %s", n, 6*readyTimeout)
		}
		time.Sleep(20 * time.Millisecond) // polling the servers' state; nothing to wait on
	}
	return c
}

// jetStreamReady reports whether every server is current and the meta leader counts every server
// as an online JetStream peer (only the leader answers JetStreamClusterPeers).
func (c *Cluster) jetStreamReady() bool {
	peers := 0
	for _, s := range c.Servers {
		if !s.JetStreamIsCurrent() {
			return false
		}
		if s.JetStreamIsLeader() {
			peers = len(s.JetStreamClusterPeers())
		}
	}
	return peers == len(c.Servers)
}

// freePorts returns n loopback TCP ports that were free a moment ago, all different.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}
