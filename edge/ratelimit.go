package edge

import (
	"errors"
	"time"
)

// reasonRateExceeded closes (1008) a connection that sends more than MaxClientRate messages per
// second beyond its MaxClientBurst: one client must not flood ICWS_IN.
const (
	reasonRateExceeded     = "icws: client message rate exceeded"
	reasonByteRateExceeded = "icws: client byte rate exceeded"
)

// tokenBucket limits a connection's client messages. Only the connection's reader uses it, so it
// needs no lock; the zero value starts full.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (b *tokenBucket) allow(now time.Time, rate float64, burst int) bool {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(burst), b.tokens+d.Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// errRateExceeded ends the read of a connection whose pings exceeded the message rate.
var errRateExceeded = errors.New(reasonRateExceeded)
