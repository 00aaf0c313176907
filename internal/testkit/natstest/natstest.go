// Package natstest runs an in-process nats-server with JetStream for tests. It is imported only by
// _test.go files; it depends on nothing of icws, so every package's tests (broker's included) can
// use it without an import cycle.
package natstest

import (
	"fmt"
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

// Connect opens a connection to url with a JetStream context, closed at cleanup.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
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
