package submitter

import (
	"testing"
	"time"

	"github.com/icws/icws/internal/testkit"
)

// With one in-flight slot, a client with a long backlog takes turns with a client that has one
// envelope instead of making it wait for the whole backlog.
func TestBacklogTakesTurns(t *testing.T) {
	e := newEnv(t, 1)
	store := newFakeStore()
	store.latency = 5 * time.Millisecond
	cfg := testConfig("a")
	cfg.MaxInFlight = 1
	e.start(t, cfg, store.as("a"))
	pub := e.publisher(t)
	busy, quiet := newTestClient(1), newTestClient(2)
	const backlog = 100
	pub.async(append(pub.burst(busy, 1, backlog), pub.burst(quiet, 1, 1)...))
	testkit.WaitFor(t, 30*time.Second, "every envelope", func() bool { return store.executedCount() == backlog+1 })
	store.checkOrder(t, map[string]uint64{busy.token: backlog, quiet.token: 1})

	store.mu.Lock()
	defer store.mu.Unlock()
	for i, c := range store.calls {
		if c.client == quiet.token {
			if i >= backlog {
				t.Fatalf("the quiet client's envelope was call %d of %d: it waited for the whole backlog", i+1, len(store.calls))
			}
			return
		}
	}
	t.Fatal("the quiet client's envelope was never called")
}
