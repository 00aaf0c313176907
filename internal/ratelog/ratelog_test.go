package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiterLetsOneLinePerKindAndInterval(t *testing.T) {
	l := New(time.Minute)
	t0 := time.Unix(1000, 0)
	for _, step := range []struct {
		kind        string
		at          time.Duration
		wantOK      bool
		wantSkipped int
	}{
		{"a", 0, true, 0},
		{"a", time.Second, false, 0},
		{"b", time.Second, true, 0}, // kinds are limited apart
		{"a", 30 * time.Second, false, 0},
		{"a", 59 * time.Second, false, 0},
		{"a", 60 * time.Second, true, 3},
		{"a", 61 * time.Second, false, 0},
		{"a", 3 * time.Minute, true, 1},
		{"b", 3 * time.Minute, true, 0},
	} {
		ok, skipped := l.Allow(step.kind, t0.Add(step.at))
		if ok != step.wantOK || skipped != step.wantSkipped {
			t.Fatalf("%s at %s: %v, %d skipped; want %v, %d", step.kind, step.at, ok, skipped, step.wantOK, step.wantSkipped)
		}
	}
}

func TestWarnHoldsBackToDebugLines(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := New(time.Hour)
	for range 3 {
		l.Warn(log, "refused", "envelope refused", "client", "c1")
	}
	if got := strings.Count(buf.String(), "level=WARN"); got != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", got, buf.String())
	}
	if got := strings.Count(buf.String(), "level=DEBUG"); got != 2 {
		t.Fatalf("%d debug lines, want 2:\n%s", got, buf.String())
	}
}
