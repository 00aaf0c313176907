package testkit

import (
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/icws/icws/internal/config"
)

// LogLevelVariable, when set (debug, info, warn or error), replaces the level of every Logger, so
// a failing test can be rerun with more detail without editing it.
const LogLevelVariable = "ICWS_TEST_LOG_LEVEL"

// Logger gives code under test a logger whose lines at level and above go to t.Log: they show for
// a failed test, or with -v. Lines logged after the test's cleanups have run (by a goroutine that
// is still stopping) are dropped, since t.Log must not be called once the test has ended.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	if s := os.Getenv(LogLevelVariable); s != "" {
		l, err := config.ParseLevel(s)
		if err != nil {
			t.Fatalf("%s: %v", LogLevelVariable, err)
		}
		level = l
	}
	w := &testLogWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testLogWriter struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}
