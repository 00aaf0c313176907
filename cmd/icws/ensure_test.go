package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

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
