package submitter

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/icws/icws/icclient"
)

func TestICHealthCountsUnansweredCallsOnly(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms     int
		op     string // begin, answer, fail (end without an answer), probe-ok, probe-fail
		call   int    // index of the call, for answer and fail
		probed bool   // probe: whether probeDue should have said so
	}
	tests := []struct {
		name         string
		steps        []step
		at           int
		doubt, unrea bool
	}{
		{"no calls", nil, 10_000, false, false},
		{"a quick answer", []step{{ms: 0, op: "begin"}, {ms: 100, op: "answer"}}, 10_000, false, false},
		{"a call hung for half the bound", []step{{ms: 0, op: "begin"}}, 1_000, true, false},
		{"a call hung for the bound", []step{{ms: 0, op: "begin"}}, 2_000, true, true},
		{"a call failed in transport, nothing since", []step{{ms: 0, op: "begin"}, {ms: 50, op: "fail"}}, 2_000, true, true},
		{"a failure, then another call answered", []step{
			{ms: 0, op: "begin"}, {ms: 50, op: "fail"},
			{ms: 100, op: "begin"}, {ms: 1_900, op: "answer", call: 1},
		}, 2_100, false, false},
		{"a hung call outlived by another's answer counts from that answer", []step{
			{ms: 0, op: "begin"}, {ms: 10, op: "begin"}, {ms: 1_500, op: "answer", call: 1},
		}, 3_000, true, false},
		{"a slow call while probes answer", []step{
			{ms: 0, op: "begin"}, {ms: 1_000, op: "probe-ok", probed: true}, {ms: 2_000, op: "probe-ok", probed: true},
		}, 2_500, false, false},
		{"a hung call while probes fail", []step{
			{ms: 0, op: "begin"}, {ms: 1_000, op: "probe-fail", probed: true},
		}, 2_000, true, true},
		{"no probe before half the bound", []step{{ms: 0, op: "begin"}, {ms: 900, op: "probe-fail", probed: false}}, 950, false, false},
		{"unreachable stays so without calls until a probe answers", []step{
			{ms: 0, op: "begin"}, {ms: 2_500, op: "fail"}, {ms: 5_000, op: "probe-fail", probed: true},
		}, 9_000, true, true},
		{"a probe answer ends it", []step{
			{ms: 0, op: "begin"}, {ms: 2_500, op: "fail"}, {ms: 5_000, op: "probe-ok", probed: true},
		}, 9_000, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newICHealth(2 * time.Second)
			var ids []uint64
			for _, s := range tt.steps {
				now := at(s.ms)
				switch s.op {
				case "begin":
					ids = append(ids, h.begin(now))
				case "answer":
					h.end(ids[s.call], now, true)
				case "fail":
					h.end(ids[s.call], now, false)
				case "probe-ok", "probe-fail":
					if due := h.probeDue(now); due != s.probed {
						t.Fatalf("at %d ms: probeDue %v, want %v", s.ms, due, s.probed)
					}
					if s.probed {
						h.probeDone(now, s.op == "probe-ok")
					}
				}
			}
			if got := h.doubtful(at(tt.at)); got != tt.doubt {
				t.Errorf("doubtful at %d ms: %v, want %v", tt.at, got, tt.doubt)
			}
			if got := h.unreachable(at(tt.at)); got != tt.unrea {
				t.Errorf("unreachable at %d ms: %v, want %v", tt.at, got, tt.unrea)
			}
		})
	}
}

func TestICHealthDisabledByZero(t *testing.T) {
	h := newICHealth(0)
	h.begin(time.Now().Add(-time.Hour))
	if h.unreachable(time.Now()) || h.doubtful(time.Now()) || h.probeDue(time.Now()) {
		t.Fatal("a zero bound must never declare the IC unreachable")
	}
}

func TestICAnsweredTellsAnswersFromSilence(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, true},
		{&icclient.HTTPError{StatusCode: 503}, true},
		{&icclient.RejectError{Code: 5}, true},
		{&icclient.VerificationError{Err: errors.New("bad signature")}, true},
		{&icclient.TransportError{Err: errors.New("connection refused")}, false},
		{fmt.Errorf("POST call: %w", context.DeadlineExceeded), false},
		{context.Canceled, false},
	}
	for _, tt := range tests {
		if got := icAnswered(tt.err); got != tt.want {
			t.Errorf("icAnswered(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
