package bench

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const exposition = `# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 3.3554432e+07
go_goroutines 42
icws_poller_messages_total{canister="bkyz2-fmaaa-aaaaa-qaaaq-cai"} 100
icws_poller_messages_total{canister="other",note="a } in \"quotes\""} 23 1700000000000
icws_poller_messages_totalx 1000
icws_edge_connections NaN
garbage line without value
`

func TestParseMetrics(t *testing.T) {
	s, err := parseMetrics(strings.NewReader(exposition), scrapedMetrics)
	if err != nil {
		t.Fatal(err)
	}
	want := Sample{metricCPU: 12.5, metricRSS: 33554432, metricGoroutines: 42, metricPolled: 123}
	if len(s) != len(want) {
		t.Fatalf("sample %v, want %v", s, want)
	}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("%s = %g, want %g", k, s[k], v)
		}
	}
	if s.Has(metricConnections) {
		t.Errorf("a NaN sample counted: %v", s)
	}
}

func TestScraperSumsProcesses(t *testing.T) {
	serve := func(cpu float64) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/metrics" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintf(w, "process_cpu_seconds_total %g\nprocess_resident_memory_bytes 1000\n", cpu)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	sc, err := NewScraper([]string{serve(1.5), serve(2) + "/metrics"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := sc.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s[metricCPU] != 3.5 || s[metricRSS] != 2000 {
		t.Fatalf("sample %v", s)
	}
	if _, err := NewScraper([]string{"127.0.0.1:9090"}, nil); err == nil {
		t.Fatal("a URL without scheme was accepted")
	}
}

func TestCostPerMessage(t *testing.T) {
	before := Sample{metricCPU: 10, metricRSS: 1 << 20}
	after := Sample{metricCPU: 12.8, metricRSS: 2 << 20}
	c := cost(before, after, 4*time.Second, 20000)
	if math.Abs(c.CPUPer1000-0.14) > 1e-9 || math.Abs(c.CPUMicrosPerMessage-140) > 1e-6 || math.Abs(c.CoreShare-0.7) > 1e-9 {
		t.Fatalf("cost %+v", c)
	}
	if c.RSSBefore != 1<<20 || c.RSSAfter != 2<<20 {
		t.Fatalf("rss %+v", c)
	}
	if c := cost(before, after, 0, 0); c.CPUPer1000 != 0 || c.CoreShare != 0 {
		t.Fatalf("no messages, no wall: %+v", c)
	}
}

func FuzzParseMetricLine(f *testing.F) {
	for _, line := range strings.Split(exposition, "\n") {
		f.Add(line)
	}
	f.Add(`x{a="\`)
	f.Add(`x{a="\\"} 1`)
	f.Fuzz(func(t *testing.T, line string) {
		name, v, ok := parseMetricLine(line)
		if ok && (name == "" || math.IsNaN(v) || strings.ContainsAny(name, "{ \t")) {
			t.Fatalf("parseMetricLine(%q) = %q, %g", line, name, v)
		}
	})
}
