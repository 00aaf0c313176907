package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icws/icws/internal/testkit"
)

// grafanaPanel is the part of a Grafana dashboard panel the test reads (rows nest panels).
type grafanaPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *grafanaSource `json:"datasource"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *grafanaSource `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaSource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// scrape is one /metrics answer: metric families (from # TYPE lines) and sample names.
type scrape struct {
	families map[string]string // name → type
	samples  map[string]bool
}

func scrapeMetrics(t testing.TB, adminURL string) scrape {
	t.Helper()
	code, body, err := httpGet(context.Background(), adminURL+"/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %v", adminURL, code, err)
	}
	s := scrape{families: map[string]string{}, samples: map[string]bool{}}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if f := strings.Fields(rest); len(f) == 2 {
				s.families[f[0]] = f[1]
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		s.samples[name] = true
	}
	return s
}

// has reports whether the scrape exposes name: a sample name, a family name, or a histogram or
// summary series (_bucket, _sum, _count) of an exposed family.
func (s scrape) has(name string) bool {
	if s.samples[name] || s.families[name] != "" {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ := s.families[base]; typ == "histogram" || (typ == "summary" && suffix != "_bucket") {
				return true
			}
		}
	}
	return false
}

var (
	promQLString = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	// Names of the metrics icws exports (its own, and the Go and process collectors'); PromQL
	// functions, keywords and label names never start with these prefixes.
	promQLMetric = regexp.MustCompile(`\b(?:icws|process|go)_[a-zA-Z0-9_:]*`)
)

// promQLMetrics lists the metric names a PromQL expression refers to (string literals, such as
// label values, are skipped).
func promQLMetrics(expr string) []string {
	names := promQLMetric.FindAllString(promQLString.ReplaceAllString(expr, `""`), -1)
	slices.Sort(names)
	return slices.Compact(names)
}

func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (outcome) (rate(icws_edge_connections_total[$__rate_interval]))`, []string{"icws_edge_connections_total"}},
		{`histogram_quantile(0.95, sum by (le, kind) (rate(icws_submitter_submit_latency_seconds_bucket[5m])))`, []string{"icws_submitter_submit_latency_seconds_bucket"}},
		{`sum(rate(icws_edge_connections_total{outcome="icws_not_a_metric"}[1m])) / go_goroutines`, []string{"go_goroutines", "icws_edge_connections_total"}},
		{`rate(process_cpu_seconds_total[1m]) + rate(process_cpu_seconds_total[5m])`, []string{"process_cpu_seconds_total"}},
		{`vector(1)`, nil},
	} {
		if got := promQLMetrics(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("promQLMetrics(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

func flattenPanels(ps []grafanaPanel) []grafanaPanel {
	var out []grafanaPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flattenPanels(p.Panels)...)
	}
	return out
}

// TestGrafanaDashboardQueriesExistingMetrics runs `icws dev`, drives it until every kind of event
// the dashboard shows has happened once (so that labelled metrics exist), scrapes its /metrics and
// checks that every metric each panel query of deploy/grafana/dashboards/icws.json names is in the
// scrape, and that the panels use the provisioned Prometheus datasource.
func TestGrafanaDashboardQueriesExistingMetrics(t *testing.T) {
	dashboardFile := filepath.Join(bins.repoRoot, "deploy", "grafana", "dashboards", "icws.json")
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		UID    string         `json:"uid"`
		Panels []grafanaPanel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	datasourceUID := provisionedDatasourceUID(t)

	// Which metric each query needs, checked statically first.
	needed := map[string][]string{} // metric → "panel/refId"
	ids := map[int]string{}
	queries := 0
	for _, p := range flattenPanels(dashboard.Panels) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, ds := range []*grafanaSource{p.Datasource, tg.Datasource} {
				if ds != nil && (ds.Type != "prometheus" || ds.UID != datasourceUID) {
					t.Errorf("panel %q query %s: datasource %+v, want the provisioned prometheus %q", p.Title, tg.RefID, *ds, datasourceUID)
				}
			}
			queries++
			names := promQLMetrics(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q query %s names no icws metric: %s", p.Title, tg.RefID, tg.Expr)
			}
			for _, n := range names {
				needed[n] = append(needed[n], p.Title+"/"+tg.RefID)
			}
		}
	}
	if t.Failed() {
		return
	}

	dev := startDev(t, ReplicaOptions{Env: map[string]string{
		"ICWS_REPLICA_TEST_HOOKS": "true", // corruption switches, for poller errors and submit retries
		"ICWS_RESUME_GRACE":       "1s",   // a detached session expires (sweeper) quickly
		"ICWS_POLL_LINGER":        "10m",  // per-canister metrics stay while the test runs
	}})
	present := func(name string) func() error {
		return func() error {
			if s := scrapeMetrics(t, dev.AdminURL); !s.has(name) {
				return fmt.Errorf("%s is not in the scrape yet", name)
			}
			return nil
		}
	}

	// Sessions, traffic, submitter and poller: a resumable client sends, gets a burst, and is
	// dropped and resumes.
	var mu sync.Mutex
	var sockets []net.Conn
	a := dialClientWith(t, dev.GatewayURL, dev.URL, dev.CanisterID, dialOptions{Resume: true}, func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		sockets = append(sockets, c)
	})
	a.sendTexts([]string{"hello", "burst:5"})
	a.receiveTexts(6, 30*time.Second)
	mu.Lock()
	sockets[len(sockets)-1].Close()
	mu.Unlock()
	a.sendTexts([]string{"after the drop"})
	a.receiveTexts(1, 30*time.Second)
	testkit.WaitForNil(t, 30*time.Second, 100*time.Millisecond, "a resume in the metrics", present("icws_edge_resumes_total"))

	// A rejected call: content that is not an AppMessage makes the demo app trap (reject code 5).
	b := dialClient(t, dev.GatewayURL, dev.URL, dev.CanisterID, dialOptions{})
	if err := b.Send(context.Background(), []byte("not candid")); err != nil {
		t.Fatalf("send undecodable content: %v", err)
	}
	testkit.WaitForNil(t, 30*time.Second, 100*time.Millisecond, "a reject in the metrics", present("icws_submitter_rejects_total"))

	// The sweeper: a resumable session that closes stays detached until the grace period ends.
	c := dialClient(t, dev.GatewayURL, dev.URL, dev.CanisterID, dialOptions{Resume: true})
	_ = c.Close()
	testkit.WaitForNil(t, 30*time.Second, 100*time.Millisecond, "a sweeper action in the metrics", present("icws_edge_sweeper_actions_total"))

	// Errors: with corrupted certificates and query signatures, the submitter retries and the
	// poller fails until the replica is healthy again; then the message gets through.
	corrupt := func(on bool) {
		url := fmt.Sprintf("%s/_/control/replica/corrupt?certificates=%t&query_signatures=%t", dev.URL, on, on)
		req, _ := http.NewRequest(http.MethodPost, url, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", url, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: status %d", url, res.StatusCode)
		}
	}
	corrupt(true)
	a.sendTexts([]string{"while the replica misbehaves"})
	testkit.WaitForNil(t, 30*time.Second, 100*time.Millisecond, "submit retries in the metrics", present("icws_submitter_retries_total"))
	testkit.WaitForNil(t, 30*time.Second, 100*time.Millisecond, "poller errors in the metrics", present("icws_poller_errors_total"))
	corrupt(false)
	a.receiveTexts(1, 60*time.Second)

	// A canister upgrade empties its queue: the poller detects the reset.
	if err := dev.Control.Upgrade(context.Background()); err != nil {
		t.Fatalf("upgrade the demo canister: %v", err)
	}
	testkit.WaitForNil(t, 30*time.Second, 100*time.Millisecond, "a queue reset in the metrics", present("icws_poller_queue_resets_total"))

	s := scrapeMetrics(t, dev.AdminURL)
	var names []string
	for n := range needed {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !s.has(n) {
			t.Errorf("%s (used by %s) is not exported by icws dev", n, strings.Join(needed[n], ", "))
		}
	}
	var unused []string
	for f := range s.families {
		used := slices.ContainsFunc(names, func(n string) bool {
			return n == f || n == f+"_bucket" || n == f+"_sum" || n == f+"_count"
		})
		if strings.HasPrefix(f, "icws_") && !used {
			unused = append(unused, f)
		}
	}
	sort.Strings(unused)
	t.Logf("dashboard: %d queries name %d metrics, all exported; icws metrics no panel shows: %v", queries, len(names), unused)
}

// provisionedDatasourceUID reads the uid of the Prometheus datasource Grafana provisions.
func provisionedDatasourceUID(t testing.TB) string {
	t.Helper()
	file := filepath.Join(bins.repoRoot, "deploy", "grafana", "provisioning", "datasources", "prometheus.yml")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*uid:\s*(\S+)\s*$`).FindSubmatch(raw)
	if m == nil {
		t.Fatalf("%s: no datasource uid", file)
	}
	return string(m[1])
}
