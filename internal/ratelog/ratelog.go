// Package ratelog keeps the log lines that outsiders can cause to a bounded rate. A client with a
// fresh key, or a canister, can make a gateway refuse hundreds of requests a second; each refusal is
// counted in a metric, and a line per refusal would only let them fill the operator's disks. A
// Limiter lets one line of a kind through per interval and tells how many it held back meanwhile.
package ratelog

import (
	"log/slog"
	"sync"
	"time"
)

// Limiter decides which lines of each kind are logged. Kinds are a fixed set the caller names (not
// client or canister ids), so what it remembers stays small. Safe for concurrent use.
type Limiter struct {
	every time.Duration
	mu    sync.Mutex
	kinds map[string]*kindState
}

type kindState struct {
	last    time.Time
	skipped int
}

// New returns a Limiter letting one line of each kind through per every.
func New(every time.Duration) *Limiter {
	return &Limiter{every: every, kinds: map[string]*kindState{}}
}

// Allow reports whether a line of kind may be logged at now, and if so how many lines of that kind
// were held back since the previous one.
func (l *Limiter) Allow(kind string, now time.Time) (ok bool, skipped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.kinds[kind]
	if st == nil {
		l.kinds[kind] = &kindState{last: now}
		return true, 0
	}
	if now.Sub(st.last) < l.every {
		st.skipped++
		return false, 0
	}
	skipped = st.skipped
	st.last, st.skipped = now, 0
	return true, skipped
}

// Warn logs msg as a warning if a line of kind may be logged now (with how many were held back
// since the previous one), and as a debug line otherwise.
func (l *Limiter) Warn(log *slog.Logger, kind, msg string, args ...any) {
	ok, skipped := l.Allow(kind, time.Now())
	if !ok {
		log.Debug(msg, args...)
		return
	}
	if skipped > 0 {
		args = append(args, "similar_since_last_warning", skipped)
	}
	log.Warn(msg, args...)
}
