package submitter

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/icws/icws/internal/testkit"
)

func owned(t testing.TB, r *running) int {
	return int(testkit.MetricValue(t, r.s.m.partitionsOwned))
}

func (f *fakeStore) callsBy(by string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.by == by {
			n++
		}
	}
	return n
}

// publishClients publishes n envelopes for each of k new clients, interleaved, and returns the
// expected execution counts.
func publishClients(t testing.TB, pub *publisher, k int, n uint64) map[string]uint64 {
	want := map[string]uint64{}
	var bursts [][]*nats.Msg
	for i := 0; i < k; i++ {
		c := newTestClient(i)
		want[c.token] = n
		bursts = append(bursts, pub.burst(c, 1, n))
	}
	pub.async(interleave(bursts...))
	return want
}

func TestTwoSubmittersShareThenOneCrashes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 8)
	store := newFakeStore()
	store.latency = 5 * time.Millisecond
	a := e.start(t, testConfig("a"), store.as("a"))
	b := e.start(t, testConfig("b"), store.as("b"))
	testkit.WaitFor(t, 15*time.Second, "partitions shared 4/4", func() bool { return owned(t, a) == 4 && owned(t, b) == 4 })

	pub := e.publisher(t)
	want := publishClients(t, pub, 40, 40)
	total := len(want) * 40
	testkit.WaitFor(t, 30*time.Second, "both submitters working", func() bool {
		return store.callsBy("a") > 50 && store.callsBy("b") > 50
	})
	if store.executedCount() >= total {
		t.Fatal("burst finished before the crash; make it longer")
	}
	killedAt := time.Now()
	a.kill(t)
	testkit.WaitFor(t, 30*time.Second, "b owns every partition", func() bool { return owned(t, b) == 8 })
	t.Logf("takeover after a crash: %s (lease TTL %s)", time.Since(killedAt), testConfig("").LeaseTTL)
	testkit.WaitFor(t, 60*time.Second, "every envelope executed", func() bool { return store.executedCount() == total })
	store.checkOrder(t, want)
	t.Logf("calls: a=%d b=%d for %d envelopes", store.callsBy("a"), store.callsBy("b"), total)
}

func TestStalledOwnerStopsBeforeTakeover(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	store := newFakeStore()
	store.latency = 20 * time.Millisecond
	a := e.start(t, testConfig("a"), store.as("a"))
	b := e.start(t, testConfig("b"), store.as("b"))
	testkit.WaitFor(t, 15*time.Second, "partitions shared 2/2", func() bool { return owned(t, a) == 2 && owned(t, b) == 2 })

	pub := e.publisher(t)
	// Each client needs about 150 × 20 ms = 3 s, longer than the lease TTL.
	want := publishClients(t, pub, 12, 150)
	total := len(want) * 150
	testkit.WaitFor(t, 30*time.Second, "a working", func() bool { return store.callsBy("a") > 20 })
	// a keeps relaying but can no longer renew its leases, like a process stuck on a slow disk or
	// partitioned from NATS while the IC is still reachable.
	a.s.pauseRenew.Store(true)
	testkit.WaitFor(t, 30*time.Second, "b owns every partition", func() bool { return owned(t, b) == 4 })
	testkit.WaitFor(t, 60*time.Second, "every envelope executed", func() bool { return store.executedCount() == total })
	store.checkOrder(t, want)

	// The stalled owner must have stopped before the new owner started on the same clients.
	store.mu.Lock()
	lastA, firstB := map[string]time.Time{}, map[string]time.Time{}
	for _, c := range store.calls {
		switch c.by {
		case "a":
			if c.start.After(lastA[c.client]) {
				lastA[c.client] = c.start
			}
		case "b":
			if f, ok := firstB[c.client]; !ok || c.start.Before(f) {
				firstB[c.client] = c.start
			}
		}
	}
	store.mu.Unlock()
	moved := 0
	for client, la := range lastA {
		fb, ok := firstB[client]
		if !ok {
			continue
		}
		moved++
		if !la.Before(fb) {
			t.Errorf("client %s: stalled owner sent at %s, after the new owner started at %s", client, la.Format(time.StampMicro), fb.Format(time.StampMicro))
		}
	}
	if moved == 0 {
		t.Error("no client moved from a to b")
	}
	t.Logf("%d clients moved from the stalled owner", moved)
	if testkit.MetricValue(t, a.s.m.leasesLost) == 0 {
		t.Error("a did not count lost leases")
	}
	if owned(t, a) != 0 {
		t.Errorf("a still counts %d partitions", owned(t, a))
	}
}

func TestJoinRebalancesAndGracefulShutdownHandsOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 8)
	store := newFakeStore()
	store.latency = 2 * time.Millisecond
	a := e.start(t, testConfig("a"), store.as("a"))
	testkit.WaitFor(t, 15*time.Second, "a owns every partition", func() bool { return owned(t, a) == 8 })

	pub := e.publisher(t)
	const clients, half = 30, 40
	var first, second [][]*nats.Msg
	want := map[string]uint64{}
	for i := 0; i < clients; i++ {
		c := newTestClient(i)
		want[c.token] = 2 * half
		first = append(first, pub.burst(c, 1, half))
		second = append(second, pub.burst(c, half+1, half))
	}
	pub.async(interleave(first...))

	b := e.start(t, testConfig("b"), store.as("b"))
	testkit.WaitFor(t, 15*time.Second, "partitions rebalanced 4/4", func() bool { return owned(t, a) == 4 && owned(t, b) == 4 })
	pub.async(interleave(second...))
	testkit.WaitFor(t, 15*time.Second, "b working", func() bool { return store.callsBy("b") > 0 })

	stoppedAt := time.Now()
	a.stop(t)
	testkit.WaitFor(t, 15*time.Second, "b owns every partition", func() bool { return owned(t, b) == 8 })
	t.Logf("hand-over after a graceful stop: %s (lease TTL %s)", time.Since(stoppedAt), testConfig("").LeaseTTL)
	testkit.WaitFor(t, 60*time.Second, "every envelope executed", func() bool { return store.executedCount() == clients*2*half })
	store.checkOrder(t, want)
}
