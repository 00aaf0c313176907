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
		var m map[string]int
		//lint:ignore SA5000 a runtime panic, not a panic call, is what Recover must survive
		m["boom"] = 1 // panics: assignment to a nil map
	}()
	if !cleaned {
		t.Error("onPanic did not run")
	}
	if got := testutil.ToFloat64(c); got != 1 {
		t.Errorf("counter = %v, want 1", got)
	}
	if !strings.Contains(buf.String(), "only this connection is affected") || !strings.Contains(buf.String(), "nil map") {
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
