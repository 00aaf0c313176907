package testkit

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitForReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	WaitFor(t, 10*time.Second, "the third look", func() bool { return n.Add(1) >= 3 })
	if n.Load() != 3 {
		t.Fatalf("condition evaluated %d times, want 3", n.Load())
	}
	WaitForNil(t, 10*time.Second, time.Millisecond, "the third look", func() error {
		if n.Add(1) < 6 {
			return errors.New("not yet")
		}
		return nil
	})
}

// A goroutine of the code under test may log after its test ended; t.Log would panic then.
func TestLoggerDropsLinesAfterTheTest(t *testing.T) {
	var log *slog.Logger
	t.Run("inner", func(t *testing.T) {
		log = Logger(t, slog.LevelInfo)
		log.Info("during the test")
	})
	log.Info("after the test")
}
