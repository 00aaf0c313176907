package edge

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connections      prometheus.Gauge
	connectionsTotal *prometheus.CounterVec // outcome
	framesIn         prometheus.Counter
	framesOut        prometheus.Counter
	bytesIn          prometheus.Counter
	bytesOut         prometheus.Counter
	overflows        prometheus.Counter
	resumes          *prometheus.CounterVec // result
	replayed         prometheus.Counter
	replayLatency    prometheus.Histogram
	gapFills         prometheus.Counter
	sweeps           *prometheus.CounterVec // action
	refused          *prometheus.CounterVec // reason
	panics           *prometheus.CounterVec // where
	opens            *prometheus.CounterVec // result of ws_open at the IC
	forcedCloses     *prometheus.CounterVec // cause
	pings            prometheus.Counter
	unresponsive     prometheus.Counter
	heartbeats       prometheus.Counter
	busLost          prometheus.Gauge
	sheds            *prometheus.CounterVec // why
}

// newMetrics registers the edge's metrics; unfinished reports the bytes of client messages still
// arriving (Edge.unfinished).
func newMetrics(reg *prometheus.Registry, unfinished func() float64) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "icws_edge_connections", Help: "open WebSocket connections"}),
		connectionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "icws_edge_connections_total",
			Help: "WebSocket connections by outcome of their first frame (open, resume, rejected, gone)"}, []string{"outcome"}),
		framesIn:  prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_frames_in_total", Help: "client frames received"}),
		framesOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_frames_out_total", Help: "frames written to clients"}),
		bytesIn:   prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_bytes_in_total", Help: "bytes of client frames received"}),
		bytesOut:  prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_bytes_out_total", Help: "bytes of frames written to clients"}),
		overflows: prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_send_queue_overflows_total", Help: "connections closed as slow (4101)"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "icws_edge_resumes_total",
			Help: "resume attempts by result (ok, not_resumable, error)"}, []string{"result"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_replayed_messages_total", Help: "canister messages read back from ICWS_OUT (resume and gap fills)"}),
		replayLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "icws_edge_replay_seconds",
			Help: "time from a resume frame to the last replayed message queued", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		gapFills: prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_gap_fills_total", Help: "reads from ICWS_OUT started to fill a sequence gap"}),
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "icws_edge_sweeper_actions_total",
			Help: "sessions acted on by the sweeper (expired, detached_dead_edge, closed_dead_edge, finished)"}, []string{"action"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "icws_edge_refused_total",
			Help: "connections and sessions refused by a limit or a failed check, by reason (max_connections, max_connections_per_ip, max_sessions_per_principal, max_canisters, streams_full, max_sockets, open_rate, not_upgrade, forged_envelope, byte_rate, message_timeout, unfinished_budget, anonymous, nats_lost)"}, []string{"reason"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "icws_edge_panics_total",
			Help: "panics recovered while handling one connection (the connection was closed), by where"}, []string{"where"}),
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "icws_edge_open_results_total",
			Help: "sessions by the IC's answer to their ws_open (confirmed, refused, timeout)"}, []string{"result"}),
		forcedCloses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "icws_edge_forced_closes_total",
			Help: "sessions ended for good at another role's request, by cause (canister_failed: a poller declared the canister failed, sockets and detached sessions; backlog: a submitter found the client sending faster than the canister executes)"}, []string{"cause"}),
		pings: prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_pings_total", Help: "WebSocket pings sent to clients that were silent for ICWS_PING_INTERVAL"}),
		unresponsive: prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_unresponsive_closed_total",
			Help: "connections closed because the client answered no ping within ICWS_PING_TIMEOUT (4104)"}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_edge_heartbeats_total", Help: "icws_heartbeat frames sent to idle connections that asked for them"}),
		busLost: prometheus.NewGauge(prometheus.GaugeOpts{Name: "icws_edge_nats_lost",
			Help: "1 while the edge has shed its clients and refuses new ones because it cannot reach NATS (or JetStream)"}),
		sheds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "icws_edge_sheds_total",
			Help: "times the edge shed its clients for lack of NATS, by why (nats, jetstream)"}, []string{"why"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connections, m.connectionsTotal, m.framesIn, m.framesOut, m.bytesIn,
		m.bytesOut, m.overflows, m.resumes, m.replayed, m.replayLatency, m.gapFills, m.sweeps, m.refused, m.panics, m.opens, m.forcedCloses,
		m.pings, m.unresponsive, m.heartbeats, m.busLost, m.sheds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "icws_edge_unfinished_bytes",
			Help: "bytes of client messages still arriving, over all connections (bounded by ICWS_MAX_UNFINISHED_BYTES)"}, unfinished)} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
