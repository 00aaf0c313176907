package testkit

import (
	"testing"
	"time"
)

// waitPoll is how often WaitFor looks at its condition.
const waitPoll = 5 * time.Millisecond

// WaitFor polls cond until it holds; when timeout passes first, it fails the test naming what it
// waited for. Tests wait for a condition this way, never for a fixed time.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(waitPoll)
	}
}

// WaitForNil polls cond every interval until it returns nil; when timeout passes first, it fails
// the test naming what it waited for and cond's last error. It suits conditions that cost a
// request each (HTTP, NATS), hence the caller's interval.
func WaitForNil(t testing.TB, timeout, interval time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %s: %v", what, timeout, err)
		}
		time.Sleep(interval)
	}
}
