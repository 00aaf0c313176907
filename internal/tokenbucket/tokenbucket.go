// Package tokenbucket is the rate limiter the roles share: a bucket of tokens that refills at a
// steady rate up to a burst, spent by what it limits (client messages, client bytes, polls).
package tokenbucket

import "time"

// Bucket is not safe for concurrent use: each one belongs to a single goroutine (a connection's
// reader, a canister's poll loop). The zero value starts full at its first use.
type Bucket struct {
	tokens float64
	last   time.Time
}

// Take spends n tokens if the bucket holds them at now, after refilling it at rate tokens per
// second up to burst; it reports whether it did. A clock that goes back refills
// nothing and is not counted twice when it catches up.
func (b *Bucket) Take(now time.Time, n, rate, burst float64) bool {
	b.refill(now, rate, burst)
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

// Reserve spends n tokens at now even if the bucket holds fewer, going into debt, and returns
// how long the caller must wait for them (0: they were there). Waiting that long before acting
// keeps the caller at rate on average, with bursts of at most burst.
func (b *Bucket) Reserve(now time.Time, n, rate, burst float64) time.Duration {
	b.refill(now, rate, burst)
	b.tokens -= n
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / rate * float64(time.Second))
}

func (b *Bucket) refill(now time.Time, rate, burst float64) {
	if b.last.IsZero() {
		b.tokens, b.last = burst, now
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens, b.last = min(burst, b.tokens+d.Seconds()*rate), now
	}
}
