package edge

import (
	"context"
	"errors"
	"time"

	"github.com/icws/icws/bus"
)

// busAttempt bounds one JetStream request while it is retried: a request that went to a stream
// leader that then died is never answered, and waiting a whole WriteTimeout for it would keep the
// client waiting well past the election that replaces the leader.
const busAttempt = time.Second

// errConnGone ends a retry because the connection is closing.
var errConnGone = errors.New("the connection is closing")

// retryBus runs op with attempts of at most busAttempt until it succeeds, fails permanently (a full
// stream), the connection closes, or the outage has lasted busOutage. Only operations that are
// safe to repeat belong here: publishes carry a Nats-Msg-Id, reads and compare-and-set writes are
// idempotent.
func (c *conn) retryBus(what string, op func(context.Context) error) error {
	deadline := time.Now().Add(c.e.busOutage())
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), busAttempt)
		err := op(ctx)
		cancel()
		switch {
		case err == nil:
			if attempt > 1 {
				c.e.log.Debug("message bus answered after retries", "what", what, "attempts", attempt, "session", c.key)
			}
			return nil
		case bus.IsStreamFull(err), errors.Is(err, errConnGone):
			return err
		case time.Now().After(deadline):
			return err
		}
		if attempt == 1 {
			c.e.log.Debug("message bus request failed; retrying", "what", what, "session", c.key, "err", err)
		}
		select {
		case <-c.gone:
			return errConnGone
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// busOutage is how long a request is retried before the connection is given up with 1011: as long
// as the edge keeps its clients without JetStream (the bus watch sheds them after that).
func (e *Edge) busOutage() time.Duration {
	return 2 * e.cfg.JetStreamTimeout
}
