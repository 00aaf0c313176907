package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Metric names read from the gateway processes' /metrics (Prometheus text format).
const (
	metricCPU         = "process_cpu_seconds_total"
	metricRSS         = "process_resident_memory_bytes"
	metricHeapInuse   = "go_memstats_heap_inuse_bytes"
	metricGoroutines  = "go_goroutines"
	metricPolled      = "icws_poller_messages_total"
	metricConnections = "icws_edge_connections"
	metricInFlight    = "icws_submitter_clients_in_flight"
	metricEnvelopes   = "icws_submitter_envelopes_total"
	// The edge's own replay time: resume frame read to last replayed message queued.
	metricReplaySum   = "icws_edge_replay_seconds_sum"
	metricReplayCount = "icws_edge_replay_seconds_count"
)

var scrapedMetrics = []string{metricCPU, metricRSS, metricHeapInuse, metricGoroutines, metricPolled, metricConnections, metricInFlight, metricEnvelopes, metricReplaySum, metricReplayCount}

// Scrape limits: a /metrics answer is a few tens of kB; these bound a misbehaving endpoint.
const (
	maxMetricsBody = 16 << 20
	maxMetricsLine = 1 << 20
)

// Sample is the sum over the gateway processes of each scraped metric (every series of a name
// is added up); a name no process exposes is absent.
type Sample map[string]float64

// Has reports whether some process exposed the metric.
func (s Sample) Has(name string) bool { _, ok := s[name]; return ok }

// Scraper reads Samples from the admin endpoints of the gateway processes.
type Scraper struct {
	urls []string
	http *http.Client
}

// NewScraper takes admin base URLs (http://host:port, /metrics is added when no path is given)
// or full /metrics URLs.
func NewScraper(adminURLs []string, hc *http.Client) (*Scraper, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	s := &Scraper{http: hc}
	for _, raw := range adminURLs {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("metrics URL %q: must be http(s)://host:port of an admin server", raw)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/metrics"
		}
		s.urls = append(s.urls, u.String())
	}
	return s, nil
}

// Sample scrapes every process once.
func (s *Scraper) Sample(ctx context.Context) (Sample, error) {
	total := Sample{}
	for _, u := range s.urls {
		one, err := s.scrape(ctx, u)
		if err != nil {
			return nil, err
		}
		for k, v := range one {
			total[k] += v
		}
	}
	return total, nil
}

func (s *Scraper) scrape(ctx context.Context, u string) (Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", u, err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: HTTP %d", u, resp.StatusCode)
	}
	sample, err := parseMetrics(io.LimitReader(resp.Body, maxMetricsBody), scrapedMetrics)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", u, err)
	}
	return sample, nil
}

// parseMetrics sums the values of the wanted metric names in Prometheus text exposition format.
// Lines it cannot read are skipped: only the wanted names matter, and they are simple counters
// and gauges.
func parseMetrics(r io.Reader, wanted []string) (Sample, error) {
	sample := Sample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxMetricsLine)
	for sc.Scan() {
		name, value, ok := parseMetricLine(sc.Text())
		if !ok {
			continue
		}
		for _, w := range wanted {
			if name == w {
				sample[name] += value
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return sample, nil
}

var errBadLine = errors.New("not a sample line")

// parseMetricLine reads `name{labels} value [timestamp]`; comments and malformed lines are not ok.
func parseMetricLine(line string) (name string, value float64, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", 0, false
	}
	end := strings.IndexAny(line, "{ \t")
	if end <= 0 {
		return "", 0, false
	}
	name, rest := line[:end], line[end:]
	if rest[0] == '{' {
		n, err := skipLabels(rest)
		if err != nil {
			return "", 0, false
		}
		rest = rest[n:]
	}
	fields := strings.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil || math.IsNaN(v) {
		return "", 0, false
	}
	return name, v, true
}

// skipLabels returns the length of the label set at the start of s ({...}), honouring quoted
// values with backslash escapes.
func skipLabels(s string) (int, error) {
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return i + 1, nil
		}
	}
	return 0, errBadLine
}
