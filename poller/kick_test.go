package poller

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/tokenbucket"
)

// A kick from a submitter makes the active poller poll at once instead of after its interval.
func TestKickPollsAtOnce(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(5, testClient(1))
	cfg := fastConfig(testCanister.Encode())
	cfg.Interval = time.Hour // without kicks, nothing after the first poll would be seen in time
	e.startPoller("p1", cfg, newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "first 5 messages", func() bool { return e.outCount() >= 5 })

	c.push(3, testClient(1))
	// Kicks are core NATS messages: one sent before the poller subscribed is lost, so keep kicking.
	testkit.WaitFor(t, 10*time.Second, "8 messages after kicks", func() bool {
		if err := e.nc.Publish(bus.KickSubject(testCanister.Encode()), nil); err != nil {
			t.Fatal(err)
		}
		return e.outCount() >= 8
	})
	checkStream(t, e, snapshot(c), zeroEpoch)
}

// Kicks within the burst poll at once even when the last poll started a moment ago (an echo-style
// exchange kicks once per round trip); the kick after the burst waits for its token.
func TestKickBudget(t *testing.T) {
	p := &Poller{cfg: Config{Interval: 2 * time.Hour, KickGap: time.Hour, KickBurst: 3}, log: testkit.Logger(t, slog.LevelWarn)}
	kick := make(chan struct{}, 1)
	var kicks tokenbucket.Bucket
	wait := func(ctx context.Context) <-chan bool {
		kick <- struct{}{}
		done := make(chan bool, 1)
		go func() { done <- p.waitNextPoll(ctx, time.Now(), kick, &kicks) }()
		return done
	}
	for i := range p.cfg.KickBurst {
		select {
		case ok := <-wait(context.Background()):
			if !ok {
				t.Fatalf("kick %d: waitNextPoll reported a dead context", i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("kick %d of a burst of %d did not poll at once", i, p.cfg.KickBurst)
		}
	}
	// The next kick must wait an hour for its token: it returns only when its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := wait(ctx)
	cancel()
	if <-done {
		t.Fatal("a kick beyond the burst polled at once")
	}
}
