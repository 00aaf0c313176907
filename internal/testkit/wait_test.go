package testkit

import (
	"errors"
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
