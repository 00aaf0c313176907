package submitter

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/testkit"
)

// cuttableIC is a fakeIC whose route to the IC can be cut: status probes and calls then hang until
// their context ends, as behind a dropped route.
type cuttableIC struct {
	*fakeIC
	cut atomic.Bool
}

func (c *cuttableIC) hang(ctx context.Context) error {
	<-ctx.Done()
	return &icclient.TransportError{Err: ctx.Err()}
}

func (c *cuttableIC) Status(ctx context.Context) error {
	if c.cut.Load() {
		return c.hang(ctx)
	}
	return nil
}

func (c *cuttableIC) SubmitCall(ctx context.Context, canister principal.Principal, env []byte) (icclient.CallOutcome, error) {
	if c.cut.Load() {
		return icclient.CallOutcome{}, c.hang(ctx)
	}
	return c.fakeIC.SubmitCall(ctx, canister, env)
}

// A submitter that reaches NATS but not the IC gives its partitions to the others after
// ICWS_SUBMIT_IC_GIVE_UP instead of holding them while its calls hang, and takes its share back
// once the IC answers again; every envelope executes once and in order.
func TestSubmitterCutOffFromTheICHandsItsPartitionsOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	store := newFakeStore()
	store.latency = 5 * time.Millisecond
	cfg := testConfig("a")
	cfg.ICGiveUp = 600 * time.Millisecond
	cfg.CallTimeout = 10 * time.Minute // only giving the partitions up can move a's clients
	ica := &cuttableIC{fakeIC: store.as("a")}
	a := e.start(t, cfg, ica)
	b := e.start(t, testConfig("b"), store.as("b"))
	testkit.WaitFor(t, 15*time.Second, "partitions shared 2/2", func() bool { return owned(t, a) == 2 && owned(t, b) == 2 })

	ica.cut.Store(true)
	pub := e.publisher(t)
	want := publishClients(t, pub, 16, 10)
	total := len(want) * 10
	testkit.WaitFor(t, 30*time.Second, "b owns every partition and every envelope executed", func() bool {
		return owned(t, a) == 0 && owned(t, b) == 4 && store.executedCount() == total
	})
	store.checkOrder(t, want)
	if err := a.s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "IC") {
		t.Fatalf("a's readiness while cut off: %v, want an error naming the IC", err)
	}
	if n := testkit.MetricValue(t, a.s.m.icGiveUps); n != 1 {
		t.Fatalf("give-ups = %v, want 1", n)
	}

	ica.cut.Store(false)
	testkit.WaitFor(t, 30*time.Second, "a takes its share back", func() bool { return owned(t, a) == 2 && owned(t, b) == 2 })
	if err := a.s.Ready(context.Background()); err != nil {
		t.Fatalf("a's readiness once the IC answers: %v", err)
	}
	more := publishClients(t, pub, 16, 10)
	for k, v := range more {
		want[k] = v
	}
	testkit.WaitFor(t, 30*time.Second, "every later envelope executed", func() bool { return store.executedCount() == 2*total })
	store.checkOrder(t, want)
}

// A frozen process sees a long silence when it wakes, but not a run of failed probes: it keeps
// its partitions. Only time and failed probes together make the IC unreachable.
func TestICSilenceNeedsFailedProbes(t *testing.T) {
	s := &Submitter{cfg: Config{ICGiveUp: 3 * time.Second}}
	now := time.Now()
	tests := []struct {
		name     string
		answered time.Time
		failed   int32
		want     bool
	}{
		{"no probe ran yet", time.Time{}, 0, false},
		{"answered a moment ago", now.Add(-time.Second), 0, false},
		{"silent long enough, one probe failed (a freeze)", now.Add(-10 * time.Second), 1, false},
		{"failing probes, not long enough", now.Add(-time.Second), 5, false},
		{"silent long enough and probes failing", now.Add(-3 * time.Second), probesToGiveUp, true},
	}
	for _, tt := range tests {
		var at int64
		if !tt.answered.IsZero() {
			at = tt.answered.UnixNano()
		}
		s.icAnswered.Store(at)
		s.icFailedProbes.Store(tt.failed)
		if _, got := s.icSilence(now); got != tt.want {
			t.Errorf("%s: unreachable = %v, want %v", tt.name, got, tt.want)
		}
	}
}
