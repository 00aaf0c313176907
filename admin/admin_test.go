package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func start(t *testing.T, reg *prometheus.Registry, checks []Check) (base string, stop func() error) {
	t.Helper()
	s := New("127.0.0.1:0", reg, checks, nil)
	s.CheckTimeout = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer acancel()
	addr, err := s.Addr(actx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var stopped bool
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(15 * time.Second):
			return errors.New("Run did not return after cancel")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return "http://" + addr.String(), stop
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "icws_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	var natsDown atomic.Bool
	base, stop := start(t, reg, []Check{
		{"always", func(context.Context) error { return nil }},
		{"nats", func(context.Context) error {
			if natsDown.Load() {
				return errors.New("disconnected")
			}
			return nil
		}},
	})

	if code, body := get(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	natsDown.Store(true)
	code, body := get(t, base+"/readyz")
	if code != 503 {
		t.Fatalf("/readyz with a failing check = %d", code)
	}
	var rep readyReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Ready || rep.Failed["nats"] != "disconnected" || len(rep.Failed) != 1 {
		t.Fatalf("/readyz body %q", body)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "icws_test_total 3") {
		t.Fatalf("/metrics = %d %q", code, body)
	}
	if code, _ := get(t, base+"/nothing"); code != 404 {
		t.Fatalf("/nothing = %d", code)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run returned %v after cancel", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func TestSlowAndPanickingChecks(t *testing.T) {
	base, _ := start(t, nil, []Check{
		{"stuck", func(context.Context) error { select {} }},
		{"panics", func(context.Context) error { panic("boom") }},
		{"honest", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
	})
	start := time.Now()
	code, body := get(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "stuck") || !strings.Contains(body, "panics") || !strings.Contains(body, "honest") {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("/readyz took %s with a stuck check", d)
	}
}

func TestListenError(t *testing.T) {
	s := New("nonsense", nil, nil, nil)
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "nonsense") {
		t.Fatalf("Run = %v", err)
	}
	if _, err := s.Addr(context.Background()); err == nil {
		t.Fatal("Addr after a failed listen returned no error")
	}
}
