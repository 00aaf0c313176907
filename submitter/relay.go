package submitter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/safe"
	"github.com/icws/icws/internal/stagetrace"
	"github.com/icws/icws/protocol"
)

// Outcome labels of icws_submitter_envelopes_total.
const (
	outcomeReplied        = "replied"
	outcomeRejected       = "rejected"
	outcomeAccepted       = "accepted"
	outcomeNonReplicated  = "non_replicated_rejection"
	outcomeExpired        = "expired"
	outcomeRefused        = "refused" // non-retryable HTTP error
	outcomeInvalid        = "invalid"
	outcomeCloseOK        = "ok"
	outcomeCloseErr       = "err"
	outcomeCloseGaveUp    = "gave_up"
	outcomeCloseBadAnswer = "bad_reply"
	outcomeBacklogDropped = "backlog_dropped" // dropped unrelayed: its client was closed for its backlog
)

// handle relays one ICWS_IN message and reports whether it is finished (to be acked). false means
// the partition is stopping and the message must stay unacknowledged for the next owner.
func (s *Submitter) handle(ctx context.Context, partition int, msg jetstream.Msg) (done bool) {
	// A panic while relaying one message (an IC answer no decoder expected) drops that message
	// only; the client's next envelope follows as it would after any refusal.
	defer safe.Recover(s.log, s.m.panics, "message", func() { done = true })
	kind := msg.Headers().Get(bus.HeaderKind)
	log := s.log.With("partition", partition, "kind", kind)
	_, ref, err := bus.ParseInSubject(msg.Subject())
	if err != nil {
		log.Warn("dropping message on unexpected subject", "err", err)
		s.count(kind, outcomeInvalid)
		return true
	}
	canister, client := ref.Canister, ref.Client
	log = log.With("canister", ref.CanisterText, "client", client)
	switch kind {
	case bus.KindOpen:
		done, verdict := s.relayEnvelope(ctx, log, kind, canister, msg.Data())
		if !done {
			return false
		}
		return s.settleOpen(ctx, log, ref.CanisterText, client, msg.Headers().Get(bus.HeaderSessionTag), verdict)
	case bus.KindMessage:
		stagetrace.Mark(ctx, s.log, stagetrace.SubmitterConsumed)
		if seq := msg.Headers().Get(bus.HeaderClientSeq); seq != "" {
			log = log.With("seq", seq)
		}
		done, _ := s.relayEnvelope(ctx, log, kind, canister, msg.Data())
		return done
	case bus.KindClose:
		return s.closeClient(ctx, log.With("reason", msg.Headers().Get(bus.HeaderCloseReason)), canister, client)
	default:
		log.Warn("dropping message of unknown kind")
		s.count("unknown", outcomeInvalid)
		return true
	}
}

func (s *Submitter) count(kind, outcome string) {
	s.m.envelopes.WithLabelValues(kind, outcome).Inc()
}

// callVerdict is what the IC made of a relayed envelope, as far as the gateway can tell: refused
// (with the reason a client should see) or not.
type callVerdict struct {
	refused bool
	reason  string
}

// relayEnvelope posts the client's envelope until it has an outcome or its ingress expiry passes.
// done is false when the partition is stopping and the envelope must stay unacknowledged.
func (s *Submitter) relayEnvelope(ctx context.Context, log *slog.Logger, kind string, canister principal.Principal, body []byte) (done bool, v callVerdict) {
	expiry, err := ingressExpiry(body)
	if err != nil {
		s.clientWarnings.Warn(log, outcomeInvalid, "dropping invalid envelope", "err", err)
		s.count(kind, outcomeInvalid)
		return true, callVerdict{refused: true, reason: "invalid envelope"}
	}
	backoff := s.cfg.RetryMin
	for attempt := 0; ; attempt++ {
		if !time.Now().Before(expiry) {
			s.clientWarnings.Warn(log, outcomeExpired, "envelope expired before the IC executed it", "ingress_expiry", expiry, "attempts", attempt)
			s.m.expired.Inc()
			s.count(kind, outcomeExpired)
			return true, callVerdict{refused: true, reason: "the envelope expired before the IC could be reached"}
		}
		callCtx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		start := time.Now()
		kicked := false
		var out callOutcome
		if h, ok := s.ic.(hintingIC); ok {
			// A kick on an answer that then fails verification costs the canister one poll.
			out, err = h.SubmitCallHinted(callCtx, canister, body, func() {
				kicked = true
				s.kickPoller(log, canister)
				// The kick waits in the connection's buffer for its flusher goroutine, which a
				// busy machine may not run before this one has verified the certificate (a
				// millisecond of CPU): yield, so the kick leaves first.
				runtime.Gosched()
			})
		} else {
			out, err = s.ic.SubmitCall(callCtx, canister, body)
		}
		cancel()
		s.m.latency.WithLabelValues(kind).Observe(time.Since(start).Seconds())
		if ctx.Err() != nil {
			return false, callVerdict{}
		}
		if err == nil {
			took := time.Since(start)
			if out.Status == statusAccepted {
				took += s.cfg.SettleDelay
			}
			s.pace.observe(canister.Encode(), took, time.Now())
			return s.recordOutcome(ctx, log, kind, canister, out, kicked), verdictOf(out)
		}
		if !isRetryable(err) && !errors.Is(err, context.DeadlineExceeded) {
			s.clientWarnings.Warn(log, outcomeRefused, "envelope refused by the IC", "err", err)
			s.count(kind, outcomeRefused)
			return true, callVerdict{refused: true, reason: "the IC refused the envelope: " + err.Error()}
		}
		s.m.retries.WithLabelValues(kind).Inc()
		wait := min(jitter(backoff), time.Until(expiry))
		// A network blip is routine; an answer that does not verify or decode (a wrong root key,
		// something between the gateway and the IC) or a call failing on and on is for the
		// operator to see, once and then every 8th attempt.
		lvl := slog.LevelDebug
		if (attempt == 0 && !errors.As(err, new(*icclient.TransportError))) || attempt%8 == 7 {
			lvl = slog.LevelWarn
		}
		log.Log(ctx, lvl, "retrying envelope", "attempt", attempt+1, "wait", wait, "err", err)
		if wait > 0 && !sleepCtx(ctx, wait) {
			return false, callVerdict{}
		}
		backoff = min(2*backoff, s.cfg.RetryMax)
	}
}

// verdictOf reads a call's outcome: a certified reply whose Candid value is Err, a reject before
// or during execution. A 202 (accepted, outcome unknown) and "done" (executed, answer pruned) are
// not refusals: the IC validated and took the call.
func verdictOf(out callOutcome) callVerdict {
	switch out.Status {
	case statusReplied:
		res, err := protocol.DecodeWsResult(out.Reply)
		switch {
		case err != nil:
			return callVerdict{refused: true, reason: "undecodable reply: " + err.Error()}
		case res.Err != nil:
			return callVerdict{refused: true, reason: *res.Err}
		}
	case statusRejected, statusNonReplicatedRejection:
		return callVerdict{refused: true, reason: fmt.Sprintf("reject code %d: %s", out.RejectCode, out.RejectMessage)}
	}
	return callVerdict{}
}

// recordOutcome counts and logs a call's outcome and kicks the canister's poller after an executed
// call, unless kicked says it was kicked when the answer arrived.
func (s *Submitter) recordOutcome(ctx context.Context, log *slog.Logger, kind string, canister principal.Principal, out callOutcome, kicked bool) bool {
	if !kicked && (out.Status == statusReplied || out.Status == statusRejected) {
		s.kickPoller(log, canister)
	}
	switch out.Status {
	case statusReplied:
		log.Debug("envelope executed", "request_id", fmt.Sprintf("%x", out.RequestID[:]))
		s.count(kind, outcomeReplied)
	case statusRejected:
		log.Debug("envelope rejected", "reject_code", out.RejectCode, "reject_message", out.RejectMessage,
			"error_code", out.ErrorCode)
		s.count(kind, outcomeRejected)
		s.m.rejects.WithLabelValues(kind, strconv.FormatUint(out.RejectCode, 10)).Inc()
	case statusNonReplicatedRejection:
		s.clientWarnings.Warn(log, outcomeNonReplicated, "envelope rejected before execution", "reject_code", out.RejectCode,
			"reject_message", out.RejectMessage, "error_code", out.ErrorCode)
		s.count(kind, outcomeNonReplicated)
		s.m.rejects.WithLabelValues(kind, strconv.FormatUint(out.RejectCode, 10)).Inc()
	case statusDone:
		// Executed earlier (for example by a previous owner); the answer is no longer kept.
		log.Debug("envelope already executed")
		s.count(kind, "done")
	case statusAccepted:
		// Not certified in time. The gateway cannot ask for the status of a call the client
		// signed, so it gives the IC time to execute it before the client's next envelope. The
		// message is acked only after that, so a successor re-sends it first.
		log.Debug("envelope accepted, not yet certified; settling", "settle", s.cfg.SettleDelay)
		s.count(kind, outcomeAccepted)
		if !sleepCtx(ctx, s.cfg.SettleDelay) {
			return false
		}
	default:
		log.Warn("unknown call outcome", "status", out.Status)
		s.count(kind, "unknown")
	}
	return true
}

// closeClient calls ws_close(record {client_key}) as the gateway.
func (s *Submitter) closeClient(ctx context.Context, log *slog.Logger, canister principal.Principal, client string) bool {
	const kind = bus.KindClose
	key, err := protocol.ParseClientKeyToken(client)
	if err != nil {
		log.Warn("dropping close request", "err", err)
		s.count(kind, outcomeInvalid)
		return true
	}
	arg, err := protocol.EncodeWsCloseArgs(protocol.CanisterWsCloseArguments{ClientKey: key})
	if err != nil {
		log.Warn("dropping close request: encode ws_close argument", "err", err)
		s.count(kind, outcomeInvalid)
		return true
	}
	deadline := time.Now().Add(s.cfg.CloseRetryFor)
	backoff := s.cfg.RetryMin
	for attempt := 0; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		start := time.Now()
		reply, err := s.ic.Call(callCtx, canister, "ws_close", arg)
		cancel()
		s.m.latency.WithLabelValues(kind).Observe(time.Since(start).Seconds())
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			res, err := protocol.DecodeWsResult(reply)
			if err != nil {
				log.Warn("ws_close: undecodable reply", "err", err)
				s.count(kind, outcomeCloseBadAnswer)
				return true
			}
			if res.Err != nil {
				// Normal when the canister already removed the client.
				log.Debug("ws_close returned an error", "canister_error", *res.Err)
				s.count(kind, outcomeCloseErr)
				return true
			}
			log.Debug("ws_close done")
			s.count(kind, outcomeCloseOK)
			return true
		}
		if code, msg, ok := asReject(err); ok {
			log.Debug("ws_close rejected", "reject_code", code, "reject_message", msg)
			s.count(kind, outcomeRejected)
			s.m.rejects.WithLabelValues(kind, strconv.FormatUint(code, 10)).Inc()
			return true
		}
		if !isRetryable(err) && !errors.Is(err, context.DeadlineExceeded) {
			log.Warn("ws_close failed", "err", err)
			s.count(kind, outcomeRefused)
			return true
		}
		if !time.Now().Before(deadline) {
			log.Warn("ws_close: giving up after retries", "attempts", attempt+1, "err", err)
			s.count(kind, outcomeCloseGaveUp)
			return true
		}
		s.m.retries.WithLabelValues(kind).Inc()
		if !sleepCtx(ctx, min(jitter(backoff), time.Until(deadline))) {
			return false
		}
		backoff = min(2*backoff, s.cfg.RetryMax)
	}
}

// ingressExpiry reads content.ingress_expiry (nanoseconds since the epoch) from an envelope.
func ingressExpiry(envelope []byte) (time.Time, error) {
	var v struct {
		Content struct {
			RequestType   string `cbor:"request_type"`
			IngressExpiry uint64 `cbor:"ingress_expiry"`
		} `cbor:"content"`
	}
	if err := cbor.Unmarshal(protocol.StripSelfDescribe(envelope), &v); err != nil {
		return time.Time{}, fmt.Errorf("decode envelope: %w", err)
	}
	if v.Content.RequestType != "call" {
		return time.Time{}, fmt.Errorf("envelope: request_type %q, want call", v.Content.RequestType)
	}
	if v.Content.IngressExpiry == 0 || v.Content.IngressExpiry > math.MaxInt64 {
		return time.Time{}, fmt.Errorf("envelope: ingress_expiry %d out of range", v.Content.IngressExpiry)
	}
	return time.Unix(0, int64(v.Content.IngressExpiry)), nil
}

// jitter spreads a back-off over [d/2, d) so that retries of many clients do not line up.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// kickPoller tells the canister's active poller that a call was executed, so messages the call
// queued are polled at once. A lost kick only costs one poll interval.
func (s *Submitter) kickPoller(log *slog.Logger, canister principal.Principal) {
	if err := s.nc.Publish(bus.KickSubject(canister.Encode()), nil); err != nil {
		log.Debug("poll kick not sent", "err", err)
		return
	}
	stagetrace.Mark(context.Background(), log, stagetrace.SubmitterKicked)
}
