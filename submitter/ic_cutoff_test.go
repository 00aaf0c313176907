package submitter

import (
	"testing"
	"time"

	"github.com/icws/icws/internal/testkit"
)

// A submitter that reaches NATS but not the IC hands its partitions to one that reaches the IC,
// which starts from the ack floor, so every client's envelopes still execute once each, in order;
// it takes its share back once its probes are answered again.
func TestSubmitterCutOffFromICHandsItsPartitionsOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 8)
	store := newFakeStore()
	store.latency = 5 * time.Millisecond
	icA, icB := store.as("a"), store.as("b")
	a := e.start(t, testConfig("a"), icA)
	b := e.start(t, testConfig("b"), icB)
	testkit.WaitFor(t, 15*time.Second, "partitions shared 4/4", func() bool { return owned(t, a) == 4 && owned(t, b) == 4 })

	pub := e.publisher(t)
	want := publishClients(t, pub, 40, 40)
	total := len(want) * 40
	testkit.WaitFor(t, 30*time.Second, "both submitters working", func() bool {
		return store.callsBy("a") > 50 && store.callsBy("b") > 50
	})
	if store.executedCount() >= total {
		t.Fatal("burst finished before the cut; make it longer")
	}
	cutAt := time.Now()
	icA.cut.Store(true)
	testkit.WaitFor(t, 30*time.Second, "b owns every partition", func() bool { return owned(t, b) == 8 && owned(t, a) == 0 })
	t.Logf("hand-over after the cut: %s (ICWS_SUBMIT_IC_UNREACHABLE_AFTER %s, call timeout %s)",
		time.Since(cutAt), testConfig("").ICUnreachableAfter, testConfig("").CallTimeout)
	testkit.WaitFor(t, 60*time.Second, "every envelope executed", func() bool { return store.executedCount() == total })
	store.checkOrder(t, want)

	if n := testkit.MetricValue(t, a.s.m.icHandovers); n != 4 {
		t.Errorf("a counts %v partitions handed over for the IC, want 4", n)
	}
	// Cut off, a takes nothing back, however often b's liveness changes.
	if owned(t, a) != 0 {
		t.Fatalf("a owns %d partitions while cut off", owned(t, a))
	}
	icA.cut.Store(false)
	testkit.WaitFor(t, 30*time.Second, "partitions shared 4/4 again", func() bool { return owned(t, a) == 4 && owned(t, b) == 4 })
	more := publishClients(t, pub, 10, 10)
	testkit.WaitFor(t, 60*time.Second, "the later envelopes executed", func() bool { return store.executedCount() == total+100 })
	store.checkOrder(t, more)
}

// When the IC answers nobody, the submitters keep their partitions instead of handing them to
// each other.
func TestICDownForEveryoneMovesNoPartition(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 8)
	store := newFakeStore()
	store.latency = 5 * time.Millisecond
	icA, icB := store.as("a"), store.as("b")
	a := e.start(t, testConfig("a"), icA)
	b := e.start(t, testConfig("b"), icB)
	testkit.WaitFor(t, 15*time.Second, "partitions shared 4/4", func() bool { return owned(t, a) == 4 && owned(t, b) == 4 })

	pub := e.publisher(t)
	want := publishClients(t, pub, 20, 5)
	icA.cut.Store(true)
	icB.cut.Store(true)
	// Both see their calls unanswered; wait until both have for three times the bound.
	cfg := testConfig("")
	testkit.WaitFor(t, 30*time.Second, "both submitters see the IC unreachable", func() bool {
		return a.s.health.unreachable(time.Now()) && b.s.health.unreachable(time.Now())
	})
	for until := time.Now().Add(3 * cfg.ICUnreachableAfter); time.Now().Before(until); {
		// (A lease lost to a slow KV round trip on a loaded machine may move a partition; only a
		// hand-over for the IC's sake would be wrong.)
		if n := testkit.MetricValue(t, a.s.m.icHandovers) + testkit.MetricValue(t, b.s.m.icHandovers); n != 0 {
			t.Fatalf("%v partitions handed over while the IC answered nobody", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	icA.cut.Store(false)
	icB.cut.Store(false)
	testkit.WaitFor(t, 60*time.Second, "every envelope executed", func() bool { return store.executedCount() == 100 })
	store.checkOrder(t, want)
}
