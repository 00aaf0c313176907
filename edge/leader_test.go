package edge

import (
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
)

// A new ICWS_OUT leader may have applied messages without re-publishing them to the live
// subjects; the edge re-reads the stream for its live connections when the advisory arrives.
func TestLeaderElectionRefillsLiveConnections(t *testing.T) {
	v := newEnv(t)
	e := v.startEdge(testConfig("e1"))
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, false)
	c.open()
	testkit.WaitFor(t, 5*time.Second, "session live", func() bool {
		e.mu.RLock()
		defer e.mu.RUnlock()
		return len(e.byKey) == 1 && len(e.liveSubs) == 1
	})
	before := testkit.MetricValue(t, e.m.gapFills)
	testkit.WaitFor(t, 5*time.Second, "a fill after the advisory", func() bool {
		if err := v.nc.Publish(bus.OutLeaderElectedAdvisory, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		return testkit.MetricValue(t, e.m.gapFills) > before
	})
}
