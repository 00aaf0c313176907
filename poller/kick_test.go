package poller

import (
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
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
