package submitter

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	envelopes       *prometheus.CounterVec // kind, outcome
	rejects         *prometheus.CounterVec // kind, reject_code
	latency         *prometheus.HistogramVec
	expired         prometheus.Counter
	retries         *prometheus.CounterVec // kind
	partitionsOwned prometheus.Gauge
	clientsInFlight prometheus.Gauge
	takeovers       prometheus.Counter
	leasesLost      prometheus.Counter
	opens           *prometheus.CounterVec // result
	panics          prometheus.Counter
	clientBacklog   prometheus.Histogram
	backlogCloses   prometheus.Counter
	icGiveUps       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		envelopes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icws_submitter_envelopes_total",
			Help: "ICWS_IN messages handled, by kind (open, message, close) and outcome.",
		}, []string{"kind", "outcome"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icws_submitter_rejects_total",
			Help: "Certified rejections of relayed calls, by kind and IC reject code.",
		}, []string{"kind", "reject_code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "icws_submitter_submit_latency_seconds",
			Help:    "Duration of one IC call attempt, by kind.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 4, 8, 16, 32},
		}, []string{"kind"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_submitter_expired_total",
			Help: "Envelopes skipped because their ingress_expiry passed before a certified outcome.",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icws_submitter_retries_total",
			Help: "IC call attempts repeated after a retryable error, by kind.",
		}, []string{"kind"}),
		partitionsOwned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "icws_submitter_partitions_owned",
			Help: "ICWS_IN partitions whose lease this process holds.",
		}),
		clientsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "icws_submitter_clients_in_flight",
			Help: "Clients whose envelopes are being relayed right now.",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_submitter_partition_acquisitions_total",
			Help: "Partition leases acquired by this process.",
		}),
		leasesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_submitter_partition_leases_lost_total",
			Help: "Partitions this process stopped working on because it could not renew their lease in time.",
		}),
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icws_submitter_open_results_total",
			Help: "Sessions whose ws_open outcome was recorded, by result (confirmed, refused).",
		}, []string{"result"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_submitter_panics_total",
			Help: "Panics recovered while relaying one ICWS_IN message (the message was dropped).",
		}),
		clientBacklog: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "icws_submitter_client_backlog",
			Help:    "Envelopes a client has waiting (queued and in flight), observed as each one arrives.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}),
		backlogCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_submitter_backlog_closes_total",
			Help: "Clients closed because a queued envelope would expire before its turn (the client sends faster than the canister executes); their dropped envelopes count as icws_submitter_envelopes_total{outcome=\"backlog_dropped\"}.",
		}),
		icGiveUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_submitter_ic_give_ups_total",
			Help: "Times this process handed its partitions to other submitters because the IC answered none of its status probes for ICWS_SUBMIT_IC_GIVE_UP.",
		}),
	}
	for _, c := range []prometheus.Collector{m.envelopes, m.rejects, m.latency, m.expired, m.retries,
		m.partitionsOwned, m.clientsInFlight, m.takeovers, m.leasesLost, m.opens, m.panics, m.clientBacklog, m.backlogCloses, m.icGiveUps} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register submitter metrics: %w", err)
		}
	}
	return m, nil
}
