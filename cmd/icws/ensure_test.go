package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/config"
	"github.com/icws/icws/internal/testkit"
)

// A partition count that differs from the existing stream stops the process with a configuration
// error instead of being retried as if the cluster were not ready.
func TestEnsurePartitionMismatchIsAConfigurationError(t *testing.T) {
	_, _, js := testkit.StartBroker(t, bus.DefaultTopology()) // 16 partitions
	topo := bus.DefaultTopology()
	topo.Partitions = 8
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := ensureWithRetry(ctx, js, topo, slog.New(slog.DiscardHandler))
	var ce *config.Error
	if !errors.Is(err, bus.ErrPartitionsMismatch) || !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a configuration error wrapping ErrPartitionsMismatch", err)
	}
	if ctx.Err() != nil {
		t.Fatal("ensureWithRetry waited for its context instead of failing at once")
	}
}

// Errors the servers would give again are configuration errors; a cluster that is forming or
// missing a node for a moment is retried.
func TestPermanentEnsureError(t *testing.T) {
	api := func(code int, errCode jetstream.ErrorCode, desc string) error {
		return fmt.Errorf("ensure stream ICWS_IN: %w", &jetstream.APIError{Code: code, ErrorCode: errCode, Description: desc})
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"partition count differs", fmt.Errorf("x: %w", bus.ErrPartitionsMismatch), true},
		{"bad stream configuration", api(400, jetstream.JSErrCodeBadRequest, "replicas > 1 not supported in non-clustered mode"), true},
		{"too few nodes for the replicas", api(400, jsErrClusterNoPeers, "no suitable peers for placement, insufficient resources"), true},
		{"a peer offline while the cluster forms", api(400, jsErrClusterNoPeers, "no suitable peers for placement, peer offline"), false},
		{"request timeout", api(408, 0, "request timeout"), false},
		{"server error", api(503, 0, "JetStream system temporarily unavailable"), false},
		{"no answer", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		if got := permanentEnsureError(tt.err); got != tt.want {
			t.Errorf("%s: permanent = %v, want %v", tt.name, got, tt.want)
		}
	}
}
