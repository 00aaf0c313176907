package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one scenario run; it is printed as a table row and as one JSON line.
type Report struct {
	Scenario string `json:"scenario"`
	// Variant names a parameter of the run when a scenario runs several times (resume: "k=100").
	Variant string `json:"variant,omitempty"`
	Clients int    `json:"clients"`
	// Messages is what the clients received and the scenario counted (delivered canister → client
	// messages; for inbound and echo, the echoes).
	Messages        int     `json:"messages"`
	DurationSeconds float64 `json:"duration_seconds"`
	PerSecond       float64 `json:"messages_per_second"`
	// Latency and what it is measured from (LatencyFrom).
	Latency     Summary `json:"latency"`
	LatencyFrom string  `json:"latency_from,omitempty"`
	// Open is dial to verified OpenMessage, per session.
	Open      *Summary  `json:"open,omitempty"`
	Integrity Integrity `json:"integrity"`
	// Gateway is the cost of the gateway processes over the measured part of the scenario; nil
	// without metrics.
	Gateway *GatewayCost `json:"gateway,omitempty"`
	Idle    *IdleFigures `json:"idle,omitempty"`
	Resume  *ResumeTimes `json:"resume,omitempty"`
	// Target is the rate asked for (unicast-rate, fanout), messages per second.
	Target float64 `json:"target_per_second,omitempty"`
}

// OK reports a run whose messages all arrived once and in order.
func (r Report) OK() bool { return r.Integrity.OK() }

// GatewayCost is the difference of the gateway processes' figures over a measured interval.
type GatewayCost struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPer1000 is CPU seconds per 1,000 counted messages.
	CPUPer1000 float64 `json:"cpu_seconds_per_1000_messages"`
	// CPUMicrosPerMessage is the same figure in µs per message.
	CPUMicrosPerMessage float64 `json:"cpu_us_per_message"`
	// CoreShare is CPU seconds per wall second (1 = one core busy).
	CoreShare        float64 `json:"cpu_share_of_one_core"`
	RSSBefore        int64   `json:"rss_before_bytes"`
	RSSAfter         int64   `json:"rss_after_bytes"`
	HeapInuseBefore  int64   `json:"heap_inuse_before_bytes,omitempty"`
	HeapInuseAfter   int64   `json:"heap_inuse_after_bytes,omitempty"`
	GoroutinesBefore int64   `json:"goroutines_before,omitempty"`
	GoroutinesAfter  int64   `json:"goroutines_after,omitempty"`
}

// IdleFigures are the idle scenario's per-session figures (gateway before opening versus after
// the hold) and the echo round trips measured with every session open.
type IdleFigures struct {
	Sessions             int     `json:"sessions"`
	RSSPerSession        float64 `json:"rss_per_session_bytes,omitempty"`
	HeapPerSession       float64 `json:"heap_inuse_per_session_bytes,omitempty"`
	GoroutinesPerSession float64 `json:"goroutines_per_session,omitempty"`
	// IdleCoreShare is the gateway's CPU over the hold, per wall second.
	IdleCoreShare float64 `json:"idle_cpu_share_of_one_core"`
	HoldSeconds   float64 `json:"hold_seconds"`
	OpenSeconds   float64 `json:"open_seconds"`
	Echo          Summary `json:"echo_while_open"`
	// FileLimit is the bench's RLIMIT_NOFILE during the run.
	FileLimit uint64 `json:"file_limit,omitempty"`
}

// ResumeTimes are the resume scenario's figures, in milliseconds.
type ResumeTimes struct {
	Missed int `json:"missed"`
	// FrameToLastMs: the resume frame written to the last replayed message received and verified.
	FrameToLastMs float64 `json:"resume_frame_to_last_ms"`
	// FrameToFirstMs: the resume frame written to the first replayed message.
	FrameToFirstMs float64 `json:"resume_frame_to_first_ms"`
	// DialToLastMs: the reconnect's TCP dial to the last replayed message.
	DialToLastMs float64 `json:"dial_to_last_ms"`
	// GatewayMs is the edge's own part (icws_edge_replay_seconds): from reading the resume frame
	// to the last replayed message queued on the socket; the client's figures add the network,
	// its decoding and its verification of every frame (one BLS check per certificate). Zero
	// without metrics.
	GatewayMs float64 `json:"gateway_resume_frame_to_last_queued_ms,omitempty"`
}

// cost turns two samples taken wall apart into a GatewayCost for messages counted messages.
func cost(before, after Sample, wall time.Duration, messages int) *GatewayCost {
	c := &GatewayCost{
		CPUSeconds:       after[metricCPU] - before[metricCPU],
		RSSBefore:        int64(before[metricRSS]),
		RSSAfter:         int64(after[metricRSS]),
		HeapInuseBefore:  int64(before[metricHeapInuse]),
		HeapInuseAfter:   int64(after[metricHeapInuse]),
		GoroutinesBefore: int64(before[metricGoroutines]),
		GoroutinesAfter:  int64(after[metricGoroutines]),
	}
	if wall > 0 {
		c.CoreShare = c.CPUSeconds / wall.Seconds()
	}
	if messages > 0 {
		c.CPUPer1000 = c.CPUSeconds / float64(messages) * 1000
		c.CPUMicrosPerMessage = c.CPUSeconds / float64(messages) * 1e6
	}
	return c
}

// meter measures the gateway over one interval; without a scraper it measures nothing.
type meter struct {
	scraper *Scraper
	before  Sample
	start   time.Time
}

func (r *runner) startMeter(ctx context.Context) (*meter, error) {
	m := &meter{scraper: r.scraper}
	if r.scraper != nil {
		s, err := r.scraper.Sample(ctx)
		if err != nil {
			return nil, err
		}
		m.before = s
	}
	m.start = time.Now()
	return m, nil
}

// stop takes the second sample; it returns nil cost (and the sample) without a scraper.
func (m *meter) stop(ctx context.Context, messages int) (*GatewayCost, Sample, error) {
	wall := time.Since(m.start)
	if m.scraper == nil {
		return nil, nil, nil
	}
	after, err := m.scraper.Sample(ctx)
	if err != nil {
		return nil, nil, err
	}
	return cost(m.before, after, wall, messages), after, nil
}

// WriteTable prints the reports as an aligned table, one row per run.
func WriteTable(w io.Writer, reports []Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tclients\tmessages\tmsg/s\tp50\tp99\tp99.9\tmax\tlost/dup/order\tgw CPU-s per 1k msg\tgw µs/msg\tgw CPU share\tnotes")
	for _, r := range reports {
		name := r.Scenario
		if r.Variant != "" {
			name += " " + r.Variant
		}
		integrity := fmt.Sprintf("%d/%d/%d", r.Integrity.Lost, r.Integrity.Duplicated, r.Integrity.OutOfOrder)
		if r.Integrity.Unexpected > 0 {
			integrity += fmt.Sprintf(" +%d unexpected", r.Integrity.Unexpected)
		}
		if !r.OK() {
			integrity += " FAIL"
		}
		cpu1k, cpuUs, share := "-", "-", "-"
		if g := r.Gateway; g != nil {
			if g.CPUMicrosPerMessage > 0 {
				cpu1k, cpuUs = fmt.Sprintf("%.3f", g.CPUPer1000), fmt.Sprintf("%.1f", g.CPUMicrosPerMessage)
			}
			share = fmt.Sprintf("%.0f%%", g.CoreShare*100)
		}
		lat := r.Latency
		p50, p99, p999, mx := "-", "-", "-", "-"
		if lat.Count > 0 {
			p50, p99, p999, mx = fmtMs(lat.P50Ms), fmtMs(lat.P99Ms), fmtMs(lat.P999Ms), fmtMs(lat.MaxMs)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, r.Clients, r.Messages, r.PerSecond,
			p50, p99, p999, mx, integrity, cpu1k, cpuUs, share, r.notes())
	}
	return tw.Flush()
}

// notes says what the latency is measured from and the scenario's own figures.
func (r Report) notes() string {
	var parts []string
	if r.LatencyFrom != "" {
		parts = append(parts, "latency from "+r.LatencyFrom)
	}
	if r.Target > 0 {
		parts = append(parts, fmt.Sprintf("target %.0f msg/s", r.Target))
	}
	if i := r.Idle; i != nil {
		if r.Gateway != nil {
			parts = append(parts, fmt.Sprintf("RSS %.0f B/session, heap %.0f B/session, %.2f goroutines/session, idle CPU %.1f%% of a core",
				i.RSSPerSession, i.HeapPerSession, i.GoroutinesPerSession, i.IdleCoreShare*100))
		}
		parts = append(parts, fmt.Sprintf("opened in %.1fs; echo with all open: p50 %s p99 %s", i.OpenSeconds, fmtMs(i.Echo.P50Ms), fmtMs(i.Echo.P99Ms)))
	}
	if s := r.Resume; s != nil {
		parts = append(parts, fmt.Sprintf("resume frame → last replayed %s (→ first %s; dial → last %s)",
			fmtMs(s.FrameToLastMs), fmtMs(s.FrameToFirstMs), fmtMs(s.DialToLastMs)))
		if s.GatewayMs > 0 {
			parts = append(parts, fmt.Sprintf("edge: resume frame → last replayed queued %s", fmtMs(s.GatewayMs)))
		}
	}
	if r.Open != nil && r.Idle == nil {
		parts = append(parts, fmt.Sprintf("open p50 %s", fmtMs(r.Open.P50Ms)))
	}
	return strings.Join(parts, "; ")
}

// WriteJSON prints one JSON object per report, one per line.
func WriteJSON(w io.Writer, reports []Report) error {
	enc := json.NewEncoder(w)
	for _, r := range reports {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("encode report %s: %w", r.Scenario, err)
		}
	}
	return nil
}
