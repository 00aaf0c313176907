package testkit

import (
	"log/slog"
	"testing"
)

// A goroutine of the code under test may log after its test ended; t.Log would panic then.
func TestLoggerDropsLinesAfterTheTest(t *testing.T) {
	var log *slog.Logger
	t.Run("inner", func(t *testing.T) {
		log = Logger(t, slog.LevelInfo)
		log.Info("during the test")
	})
	log.Info("after the test")
}
