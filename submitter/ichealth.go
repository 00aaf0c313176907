package submitter

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/icclient"
)

// icHealth tells whether this process reaches the IC. A submitter cut off from the IC while it
// still reaches NATS would otherwise keep renewing its partition leases while every call hangs
// until ICWS_SUBMIT_CALL_TIMEOUT, and its clients would wait that long.
//
// The IC counts as unreachable once some call has gone unanswered (hung, timed out, failed in
// transport, or abandoned) for ICUnreachableAfter with no answer to any call or status probe
// since. Any answer counts, a refusal or reject included: the IC was reached. Calls that are only
// slow are told apart by probing the status endpoint while a call is outstanding.
type icHealth struct {
	after time.Duration // 0: never unreachable

	mu sync.Mutex
	// lastAnswer is when the IC last answered a call or a probe.
	lastAnswer time.Time
	// inflight are the start times of the calls waiting for an answer, by attempt.
	inflight map[uint64]time.Time
	nextID   uint64
	// failingSince is the start of the earliest call since lastAnswer that ended without an answer.
	failingSince time.Time
	probing      bool
}

func newICHealth(after time.Duration) *icHealth {
	return &icHealth{after: after, inflight: map[uint64]time.Time{}}
}

func (h *icHealth) begin(now time.Time) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextID++
	h.inflight[h.nextID] = now
	return h.nextID
}

// end records the end of call id at now: answered, or not (see answered).
func (h *icHealth) end(id uint64, now time.Time, answered bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	start, ok := h.inflight[id]
	delete(h.inflight, id)
	switch {
	case answered:
		h.answeredLocked(now)
	case ok && start.After(h.lastAnswer) && (h.failingSince.IsZero() || start.Before(h.failingSince)):
		h.failingSince = start
	}
}

func (h *icHealth) answeredLocked(now time.Time) {
	if now.After(h.lastAnswer) {
		h.lastAnswer = now
	}
	h.failingSince = time.Time{}
}

// suspectSince is when the IC last showed a sign of life before the calls now unanswered began;
// zero when no call is waiting or failed since the last answer.
func (h *icHealth) suspectSinceLocked() time.Time {
	since := h.failingSince
	for _, start := range h.inflight {
		s := start
		if s.Before(h.lastAnswer) {
			s = h.lastAnswer // it was reachable then
		}
		if since.IsZero() || s.Before(since) {
			since = s
		}
	}
	return since
}

// unreachable reports whether the IC has been unreachable for ICUnreachableAfter at now: this
// process should leave its partitions to one that reaches the IC.
func (h *icHealth) unreachable(now time.Time) bool { return h.unansweredFor(now, h.after) }

// doubtful reports whether calls have gone unanswered for half of ICUnreachableAfter at now:
// others should not leave their partitions to this process, which may be cut off as they are. The
// margin keeps submitters that all lost the IC at the same moment from handing their partitions
// to each other.
func (h *icHealth) doubtful(now time.Time) bool { return h.unansweredFor(now, h.after/2) }

func (h *icHealth) unansweredFor(now time.Time, d time.Duration) bool {
	if h.after <= 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	since := h.suspectSinceLocked()
	return !since.IsZero() && now.Sub(since) >= d
}

// probeDue reports whether a status probe should run now (calls unanswered for half the bound,
// or the IC unreachable) and marks one as running; probeDone ends it.
func (h *icHealth) probeDue(now time.Time) bool {
	if h.after <= 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	since := h.suspectSinceLocked()
	if h.probing || since.IsZero() || now.Sub(since) < h.after/2 {
		return false
	}
	h.probing = true
	return true
}

// probeDone records a probe sent at sent; an answer shows the IC reachable from then on.
func (h *icHealth) probeDone(sent time.Time, answered bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.probing = false
	if answered {
		h.answeredLocked(sent)
	}
}

// probe runs status probes until ctx ends, whenever probeDue says so, each bounded by half the
// bound (a slower answer is as good as none for telling whether to move partitions). It checks
// every eighth of the bound and calls changed when doubtful or unreachable turned, so the group
// acts then rather than at its next tick.
func (h *icHealth) probe(ctx context.Context, ping func(context.Context) error, changed func()) {
	if h.after <= 0 {
		return
	}
	t := time.NewTicker(max(h.after/8, 10*time.Millisecond))
	defer t.Stop()
	var wasDoubtful, wasUnreachable bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if d, u := h.doubtful(now), h.unreachable(now); d != wasDoubtful || u != wasUnreachable {
			wasDoubtful, wasUnreachable = d, u
			changed()
		}
		if !h.probeDue(now) {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, h.after/2)
		err := ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		h.probeDone(now, icAnswered(err))
	}
}

// icAnswered reports whether a call's error still shows the IC reached: anything but a transport
// failure or a timeout or cancellation of the call.
func icAnswered(err error) bool {
	if err == nil {
		return true
	}
	var te *icclient.TransportError
	return !errors.As(err, &te) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

// watchedIC is the IC with every call recorded in an icHealth.
type watchedIC struct {
	IC
	h *icHealth
}

func (w watchedIC) SubmitCall(ctx context.Context, canister principal.Principal, envelope []byte) (icclient.CallOutcome, error) {
	id := w.h.begin(time.Now())
	out, err := w.IC.SubmitCall(ctx, canister, envelope)
	w.h.end(id, time.Now(), icAnswered(err))
	return out, err
}

// SubmitCallHinted passes the IC client's answer hint through (hintingIC) when it gives one.
func (w watchedIC) SubmitCallHinted(ctx context.Context, canister principal.Principal, envelope []byte, answered func()) (icclient.CallOutcome, error) {
	id := w.h.begin(time.Now())
	var out icclient.CallOutcome
	var err error
	if h, ok := w.IC.(hintingIC); ok {
		out, err = h.SubmitCallHinted(ctx, canister, envelope, answered)
	} else {
		out, err = w.IC.SubmitCall(ctx, canister, envelope)
	}
	w.h.end(id, time.Now(), icAnswered(err))
	return out, err
}

func (w watchedIC) Call(ctx context.Context, canister principal.Principal, method string, arg []byte) ([]byte, error) {
	id := w.h.begin(time.Now())
	reply, err := w.IC.Call(ctx, canister, method, arg)
	w.h.end(id, time.Now(), icAnswered(err))
	return reply, err
}
