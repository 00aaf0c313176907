package submitter

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/textlimit"
)

// settleOpen records the IC's answer to a session's ws_open. A confirmed session may relay its
// messages and its canister gets polled; a refused one is removed (the canister has no session to
// close). The session's edge is told at once; the record says the same if that message is lost.
// It returns false only when the partition is stopping before the record could be written.
func (s *Submitter) settleOpen(ctx context.Context, log *slog.Logger, canister, client, tag string, v callVerdict) bool {
	key := bus.SessionKey(canister, client)
	backoff := s.cfg.RetryMin
	var edge string
	for attempt := 1; ; attempt++ {
		rec, rev, err := s.sessions.GetSession(ctx, key, tag)
		if errors.Is(err, bus.ErrCorruptSessionRecord) {
			// Not a record this session's edge wrote (that edge wrote a valid one): the session
			// is not there to confirm; an edge's sweeper deletes the record.
			log.Warn("ws_open outcome not recorded: the session record is corrupt", "err", err)
			return true
		}
		if err == nil {
			if rec == nil || rec.Tag() != tag {
				return true // the session ended meanwhile (or the key has a newer session)
			}
			edge = rec.Edge
			switch {
			case v.refused:
				err = s.sessions.Delete(ctx, key, rev)
			case rec.Confirmed:
			default:
				rec.Confirmed = true
				_, err = s.sessions.Put(ctx, rec, rev)
			}
			if err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			return false
		}
		if !errors.Is(err, bus.ErrSessionConflict) || attempt%4 == 0 {
			log.Warn("recording the ws_open outcome failed; retrying", "attempt", attempt, "err", err)
			if !sleepCtx(ctx, jitter(backoff)) {
				return false
			}
			backoff = min(2*backoff, s.cfg.RetryMax)
		}
	}
	result := bus.OpenConfirmed
	if v.refused {
		result = bus.OpenRefused
		log.Debug("ws_open refused; session removed", "reason", v.reason)
	}
	s.m.opens.WithLabelValues(result).Inc()
	msg := nats.NewMsg(bus.OpenResultSubject(edge))
	msg.Data = []byte(key)
	msg.Header.Set(bus.HeaderSessionTag, tag)
	msg.Header.Set(bus.HeaderOpenOutcome, result)
	if v.refused {
		msg.Header.Set(bus.HeaderOpenReason, textlimit.Cut(v.reason, 200))
	}
	if err := s.nc.PublishMsg(msg); err != nil {
		log.Debug("open result not sent to the edge; it reads the session record", "err", err)
	}
	return true
}
