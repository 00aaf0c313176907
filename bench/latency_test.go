package bench

import (
	"math"
	"sync"
	"testing"
	"time"
)

func TestLatencyPercentiles(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		values                 []time.Duration
		p50, p90, p99, maxWant float64 // ms
	}{
		{"empty", nil, 0, 0, 0, 0},
		{"one value", []time.Duration{7 * time.Millisecond}, 7, 7, 7, 7},
		{
			"1..1000 ms", func() []time.Duration {
				var ds []time.Duration
				for i := 1000; i >= 1; i-- { // order must not matter
					ds = append(ds, time.Duration(i)*time.Millisecond)
				}
				return ds
			}(),
			500, 900, 990, 1000,
		},
		{
			"a stall among fast values", func() []time.Duration {
				ds := make([]time.Duration, 0, 1000)
				for range 995 {
					ds = append(ds, 100*time.Microsecond)
				}
				for range 5 {
					ds = append(ds, 3*time.Second)
				}
				return ds
			}(),
			0.1, 0.1, 0.1, 3000,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLatencies()
			for _, d := range tc.values {
				l.Record(d)
			}
			s := l.Summary()
			if s.Count != int64(len(tc.values)) {
				t.Fatalf("count %d, want %d", s.Count, len(tc.values))
			}
			for _, c := range []struct {
				name      string
				got, want float64
			}{{"p50", s.P50Ms, tc.p50}, {"p90", s.P90Ms, tc.p90}, {"p99", s.P99Ms, tc.p99}, {"max", s.MaxMs, tc.maxWant}} {
				// Three significant digits: within 0.1% (plus the 1 µs floor).
				if math.Abs(c.got-c.want) > c.want*0.001+0.001 {
					t.Errorf("%s = %gms, want %gms", c.name, c.got, c.want)
				}
			}
		})
	}
}

func TestLatencyClampsAndFloors(t *testing.T) {
	l := NewLatencies()
	l.Record(-time.Second) // a clock step counts as zero
	l.Record(2 * time.Hour)
	s := l.Summary()
	if s.Count != 2 || s.Clamped != 1 {
		t.Fatalf("count %d clamped %d, want 2 and 1", s.Count, s.Clamped)
	}
	if math.Abs(s.MaxMs-float64(time.Hour/time.Millisecond)) > float64(time.Hour/time.Millisecond)*0.001 {
		t.Fatalf("max %gms, want about an hour", s.MaxMs)
	}
}

func TestLatencyConcurrentRecording(t *testing.T) {
	l := NewLatencies()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				l.Record(time.Duration(w*1000+i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if s := l.Summary(); s.Count != 8000 {
		t.Fatalf("count %d, want 8000", s.Count)
	}
}

// Recording stays cheap enough to sit on a receive path at tens of thousands of messages a second.
func BenchmarkLatencyRecord(b *testing.B) {
	l := NewLatencies()
	for i := 0; b.Loop(); i++ {
		l.Record(time.Duration(i%100000) * time.Microsecond)
	}
}
