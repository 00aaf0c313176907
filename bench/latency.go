package bench

import (
	"fmt"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency range and precision: 1 µs to 1 h with 3 significant digits (every recorded value is
// within 0.1% of the true one), which covers loopback round trips and multi-second stalls alike.
const (
	latencyMin    = 1                                   // µs
	latencyMax    = int64(time.Hour / time.Microsecond) // µs
	latencyDigits = 3
)

// Latencies records durations in an HdrHistogram; it is safe for concurrent use. Values beyond an
// hour are clamped to an hour and counted in Clamped, so a stall is never silently dropped.
type Latencies struct {
	mu      sync.Mutex
	h       *hdrhistogram.Histogram
	clamped int64
}

// NewLatencies returns an empty recorder.
func NewLatencies() *Latencies {
	return &Latencies{h: hdrhistogram.New(latencyMin, latencyMax, latencyDigits)}
}

// Record adds one duration; negative durations (clock steps) count as zero.
func (l *Latencies) Record(d time.Duration) {
	us := max(int64(d/time.Microsecond), 0)
	l.mu.Lock()
	defer l.mu.Unlock()
	if us > latencyMax {
		us = latencyMax
		l.clamped++
	}
	// In range by construction, so RecordValue cannot fail.
	_ = l.h.RecordValue(us)
}

// Summary is a latency distribution in milliseconds.
type Summary struct {
	Count   int64   `json:"count"`
	MeanMs  float64 `json:"mean_ms"`
	P50Ms   float64 `json:"p50_ms"`
	P90Ms   float64 `json:"p90_ms"`
	P99Ms   float64 `json:"p99_ms"`
	P999Ms  float64 `json:"p999_ms"`
	MaxMs   float64 `json:"max_ms"`
	Clamped int64   `json:"clamped,omitempty"`
}

// Summary reads the percentiles recorded so far.
func (l *Latencies) Summary() Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h.TotalCount() == 0 {
		return Summary{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Summary{
		Count:   l.h.TotalCount(),
		MeanMs:  l.h.Mean() / 1000,
		P50Ms:   ms(l.h.ValueAtPercentile(50)),
		P90Ms:   ms(l.h.ValueAtPercentile(90)),
		P99Ms:   ms(l.h.ValueAtPercentile(99)),
		P999Ms:  ms(l.h.ValueAtPercentile(99.9)),
		MaxMs:   ms(l.h.Max()),
		Clamped: l.clamped,
	}
}

func (s Summary) String() string {
	if s.Count == 0 {
		return "n=0"
	}
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s p99.9=%s max=%s", s.Count, fmtMs(s.P50Ms), fmtMs(s.P90Ms), fmtMs(s.P99Ms), fmtMs(s.P999Ms), fmtMs(s.MaxMs))
}

// fmtMs prints milliseconds with a precision that suits their size.
func fmtMs(ms float64) string {
	switch {
	case ms < 1:
		return fmt.Sprintf("%.3fms", ms)
	case ms < 100:
		return fmt.Sprintf("%.2fms", ms)
	default:
		return fmt.Sprintf("%.0fms", ms)
	}
}
