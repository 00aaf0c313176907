package poller

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/protocol"
)

// pollFailure is what the poller makes of a failed ws_get_messages.
type pollFailure struct {
	kind string // kind of icws_poller_errors_total
	msg  string // log message
	// permanent: the canister cannot answer until someone acts on it (stopped, deleted, trapping,
	// upgraded to code without the CDK). Everything else (network, IC overload, timeouts, answers
	// that failed verification) is transient and retried for ever.
	permanent bool
	cause     string // cause of icws_poller_canister_failures_total (permanent only)
	detail    string // what clients are told (permanent only)
}

// classify sorts a ws_get_messages error into transient and permanent, from the reject codes and
// error codes of the IC interface specification and from the decoding of the answer.
func classify(err error) pollFailure {
	var de *decodeError
	var ce *canisterError
	var re *icclient.RejectError
	switch {
	case errors.As(err, &de):
		return pollFailure{kind: errKindDecode, msg: "cannot decode ws_get_messages answer; retrying",
			permanent: true, cause: "undecodable", detail: "undecodable reply"}
	case errors.As(err, &ce):
		detail := "canister answered Err"
		if _, text, ok := strings.Cut(err.Error(), protocol.ErrGetMessagesRefused.Error()); ok && strings.TrimLeft(text, ": ") != "" {
			detail += ": " + strings.TrimLeft(text, ": ")
		}
		return pollFailure{kind: errKindCanister, msg: "canister refused ws_get_messages; retrying",
			permanent: true, cause: "refused", detail: detail}
	case errors.As(err, &re) && re.Code != icclient.RejectSysTransient:
		f := pollFailure{kind: errKindReject, msg: "ws_get_messages rejected; retrying"}
		f.cause, f.detail, f.permanent = rejectCause(re)
		return f
	}
	return pollFailure{kind: errKindTransient, msg: "ws_get_messages failed; retrying"}
}

// rejectCause reads a rejected ws_get_messages: permanent for what only an operator fixes, not for
// limits a busy subnet or a large queue can hit, nor for the system's own faults (SysFatal).
func rejectCause(re *icclient.RejectError) (cause, detail string, permanent bool) {
	code := re.ErrorCode
	switch code {
	case "IC0508":
		return "stopped", "canister stopped (IC0508)", true
	case "IC0509":
		return "stopped", "canister stopping (IC0509)", true
	case "IC0301":
		return "not_found", "canister not found (IC0301)", true
	case "IC0536", "IC0513":
		return "method_missing", "ws_get_messages not exported (" + code + ")", true
	case "IC0537":
		return "no_module", "no Wasm module installed (IC0537)", true
	case "IC0502", "IC0503", "IC0504", "IC0505", "IC0506":
		return "trapped", "canister trapped (" + code + ")", true
	case "IC0507", "IC0522", "IC0524", "IC0528", "IC0529":
		// Out of memory, instruction or time limits: they depend on the load and on how much
		// the queue holds, so a later poll may pass.
		return "", "", false
	}
	if code == "" {
		code = "no error code"
	}
	switch re.Code {
	case icclient.RejectDestinationInv:
		return "not_found", "destination invalid (" + code + ")", true
	case icclient.RejectCanisterReject:
		return "rejected", "canister rejected the query (" + code + ")", true
	case icclient.RejectCanisterError:
		return "trapped", "canister error (" + code + ")", true
	}
	return "", "", false
}

// closeReasonLimit is the most a WebSocket close reason may hold (bytes).
const closeReasonLimit = 123

// failureReason is the close reason of the sessions of a failed canister, cut to what a close
// frame holds without splitting a character.
func failureReason(canister, detail string) string {
	s := "icws: canister " + canister + " stopped answering ws_get_messages: " + detail
	if len(s) <= closeReasonLimit {
		return s
	}
	s = s[:closeReasonLimit]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// noticeEvery is how often the failure notice is repeated while the canister still has sessions:
// often enough that an edge that missed one closes its sockets soon, rarely enough to cost nothing.
func (p *Poller) noticeEvery() time.Duration {
	return min(max(p.cfg.FailClose/2, 100*time.Millisecond), 5*time.Second)
}

// sitOutFailure declares canister id failed: it counts and logs it once, tells every edge to close
// the canister's sessions, and then polls nothing — keeping the lease, so no standby starts the
// same wait over — until a session of the canister is newly confirmed (the IC executed its
// ws_open, so the canister runs again) or ctx ends. It reports whether to poll again.
func (p *Poller) sitOutFailure(ctx context.Context, id string, w *workerHandle, f pollFailure, err error, since time.Time) bool {
	at := time.Now()
	reason := failureReason(id, f.detail)
	p.m.failures.WithLabelValues(f.cause).Inc()
	p.log.Error("canister failed: closing its sessions; polling resumes when a new session is confirmed",
		"canister", id, "cause", f.detail, "failing_for", at.Sub(since).Round(time.Millisecond), "err", err)
	// A confirmation that came before the declaration belongs to a session the notice closes.
	select {
	case <-w.revive:
	default:
	}
	t := time.NewTicker(p.noticeEvery())
	defer t.Stop()
	for first := true; ; first = false {
		if first || w.hasSessions.Load() {
			if err := p.deps.NC.PublishMsg(bus.CanisterFailedMsg(id, at, reason)); err != nil {
				p.log.Warn("canister failure notice not sent; it is repeated", "canister", id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-w.revive:
			p.log.Info("a session of the failed canister was confirmed: polling again", "canister", id)
			return true
		case <-t.C:
		}
	}
}
