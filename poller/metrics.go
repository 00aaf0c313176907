package poller

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	pollLatency    prometheus.Histogram
	publishLatency prometheus.Histogram
	messages       *prometheus.CounterVec
	cursor         *prometheus.GaugeVec
	errors         *prometheus.CounterVec
	leaseHeld      *prometheus.GaugeVec
	resets         *prometheus.CounterVec
	panics         prometheus.Counter
	refused        prometheus.Counter
	failures       *prometheus.CounterVec
	announced      prometheus.Counter
}

// Error kinds of icws_poller_errors_total.
const (
	errKindTransient  = "ic_transient"
	errKindCanister   = "canister_err"
	errKindDecode     = "decode"
	errKindPublish    = "publish"
	errKindCursor     = "cursor"
	errKindLease      = "lease"
	errKindGap        = "gap"
	errKindBadContent = "bad_content"
	errKindTooLarge   = "too_large"
	errKindReject     = "ic_reject"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pollLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "icws_poller_poll_duration_seconds", Help: "Latency of ws_get_messages queries.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		publishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "icws_poller_publish_duration_seconds", Help: "Time from a poll answer to the last PubAck of its batch.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icws_poller_messages_total", Help: "Canister messages published to ICWS_OUT.",
		}, []string{"canister"}),
		cursor: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "icws_poller_cursor", Help: "Next queue nonce to poll, per canister.",
		}, []string{"canister"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icws_poller_errors_total", Help: "Poller errors by kind.",
		}, []string{"kind"}),
		leaseHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "icws_poller_lease_held", Help: "1 while this process holds the poller lease of the canister.",
		}, []string{"canister"}),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icws_poller_queue_resets_total", Help: "Detected canister queue resets (epoch bumps).",
		}, []string{"canister"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_poller_panics_total", Help: "Panics recovered while handling one ws_get_messages answer (the poll failed and is retried).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_poller_canisters_refused_total", Help: "Canisters not polled because ICWS_MAX_CANISTERS are polled already.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icws_poller_canister_failures_total",
			Help: "Canisters declared failed after ICWS_POLL_FAIL_CLOSE of permanent ws_get_messages errors (their sessions were closed), by cause (stopped, not_found, method_missing, no_module, trapped, rejected, refused, undecodable).",
		}, []string{"cause"}),
		announced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_poller_duplicates_announced_total",
			Help: "Canister messages ICWS_OUT acknowledged as already stored (a publish sent again after a timeout or by a new poller), published on their live subjects by the poller because the stream re-publishes only what it stores.",
		}),
	}
	for _, c := range []prometheus.Collector{m.pollLatency, m.publishLatency, m.messages, m.cursor, m.errors, m.leaseHeld, m.resets, m.panics, m.refused, m.failures, m.announced} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// forget drops the per-canister series of a canister that is no longer polled.
func (m *metrics) forget(canister string) {
	m.leaseHeld.DeleteLabelValues(canister)
	m.cursor.DeleteLabelValues(canister)
	m.messages.DeleteLabelValues(canister)
	m.resets.DeleteLabelValues(canister)
}
