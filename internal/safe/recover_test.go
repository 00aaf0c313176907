package safe

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRecoverCountsLogsAndCleansUp(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "panics_total"})
	cleaned := false
	func() {
		defer Recover(log, c, "connection", func() { cleaned = true })
		var out []int
		i := len(out)
		out[i] = 1 // panics: index out of range
	}()
	if !cleaned {
		t.Error("onPanic did not run")
	}
	if got := testutil.ToFloat64(c); got != 1 {
		t.Errorf("counter = %v, want 1", got)
	}
	if !strings.Contains(buf.String(), "only this connection is affected") || !strings.Contains(buf.String(), "index out of range") {
		t.Errorf("log = %q", buf.String())
	}
}

func TestRecoverWithoutPanicDoesNothing(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "panics_total"})
	func() {
		defer Recover(nil, c, "poll", func() { t.Error("onPanic ran without a panic") })
	}()
	if got := testutil.ToFloat64(c); got != 0 {
		t.Errorf("counter = %v, want 0", got)
	}
}
