package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit/natstest"
)

// StartBroker starts a JetStream nats-server (natstest.StartJetStream) and creates topo's streams
// and buckets on it.
func StartBroker(t testing.TB, topo bus.Topology) (url string, nc *nats.Conn, js jetstream.JetStream) {
	t.Helper()
	url, nc, js = natstest.StartJetStream(t)
	EnsureTopology(t, js, topo)
	return url, nc, js
}

// EnsureTopology creates topo's streams and buckets through js.
func EnsureTopology(t testing.TB, js jetstream.JetStream, topo bus.Topology) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
}
