package submitter

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/icws/icws/internal/testkit"
)

// BenchmarkRelayManyClients measures envelopes per second through one submitter to a fake IC that
// answers at once (or after SUBMITTER_BENCH_LATENCY): ICWS_IN consumption, per-client queues,
// outcome handling and acks. Each b.N is spread over 200 clients.
func BenchmarkRelayManyClients(b *testing.B) {
	for _, lat := range []time.Duration{0, 5 * time.Millisecond} {
		b.Run("latency="+lat.String(), func(b *testing.B) {
			e := newEnv(b, 16)
			store := newFakeStore()
			store.latency = lat
			cfg := testConfig("bench")
			cfg.MaxPending = 20000
			pub := e.publisher(b)
			const clients = 200
			per := uint64(b.N/clients + 1)
			var bursts [][]*nats.Msg
			for i := 0; i < clients; i++ {
				bursts = append(bursts, pub.burst(newTestClient(i), 1, per))
			}
			msgs := interleave(bursts...)
			// The backlog is in ICWS_IN before the submitter starts, so only relaying is timed.
			pub.async(msgs)
			b.ResetTimer()
			start := time.Now()
			r := e.start(b, cfg, store.as("bench"))
			b.Logf("ready after %s", time.Since(start))
			defer func() {
				b.Logf("leases lost %v, acquisitions %v, calls %d", testkit.MetricValue(b, r.s.m.leasesLost), testkit.MetricValue(b, r.s.m.takeovers), len(store.calls))
			}()
			testkit.WaitFor(b, 5*time.Minute, "all executed", func() bool { return store.executedCount() == len(msgs) })
			b.StopTimer()
			b.ReportMetric(float64(len(msgs))/time.Since(start).Seconds(), "envelopes/s")
		})
	}
}
