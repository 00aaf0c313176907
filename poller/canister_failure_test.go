package poller

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/testkit"
)

// stoppedReject is what the IC answers a query to a stopped canister.
func stoppedReject() error {
	return &icclient.RejectError{Code: icclient.RejectCanisterError, ErrorCode: "IC0508", Message: "Canister " + testCanister.Encode() + " is stopped"}
}

// failureNotices collects the canister failure notices edges would get.
type failureNotices struct {
	mu  sync.Mutex
	got []failureNotice
}

type failureNotice struct {
	canister string
	at       time.Time
	reason   string
	received time.Time
}

func (e *env) watchFailures(t *testing.T) *failureNotices {
	t.Helper()
	n := &failureNotices{}
	sub, err := e.nc.Subscribe(bus.SubjectCanisterFailedAll, func(m *nats.Msg) {
		canister, at, reason, err := bus.ParseCanisterFailed(m)
		if err != nil {
			t.Errorf("failure notice: %v", err)
			return
		}
		n.mu.Lock()
		n.got = append(n.got, failureNotice{canister: canister, at: at, reason: reason, received: time.Now()})
		n.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *failureNotices) list() []failureNotice {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]failureNotice(nil), n.got...)
}

func (e *env) putSession(t *testing.T, client int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec := bus.SessionRecord{State: bus.SessionOpen, Canister: testCanister.Encode(), Client: testClient(client).Token(), Confirmed: true, OpenedAt: time.Now().UTC()}
	b, _ := json.Marshal(rec)
	if _, err := e.h.Sessions.Put(ctx, rec.Key(), b); err != nil {
		t.Fatal(err)
	}
}

// After FailClose of nothing but permanent errors the active poller declares the canister failed:
// one notice to the edges (repeated while sessions remain), counted, and no more polls until a
// session is newly confirmed; a transient error or a usable answer in between starts the clock
// again.
func TestPermanentErrorsCloseTheCanistersSessions(t *testing.T) {
	const failClose = 600 * time.Millisecond
	for _, tc := range []struct {
		name string
		// interruption answers the query made about halfway through FailClose instead of the
		// stopped canister (nil: no interruption).
		interruption error
		answer       bool // the interruption is a usable answer
	}{
		{name: "permanent only"},
		{name: "transient error in between", interruption: &icclient.TransportError{Err: errors.New("connection reset by peer")}},
		{name: "answer in between", answer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t)
			c := newFakeCanister(testGateway)
			var mu sync.Mutex
			var stoppedAt, interruptedAt time.Time
			stopped := true
			c.fail = func(uint64) error {
				mu.Lock()
				defer mu.Unlock()
				if !stopped {
					return nil
				}
				now := time.Now()
				if stoppedAt.IsZero() {
					stoppedAt = now
				}
				if (tc.interruption != nil || tc.answer) && interruptedAt.IsZero() && now.Sub(stoppedAt) >= failClose/2 {
					interruptedAt = now
					return tc.interruption // nil: the answer of a running canister
				}
				return stoppedReject()
			}
			ic := newIC(c)
			notices := e.watchFailures(t)
			cfg := fastConfig()
			cfg.FailClose = failClose
			rp := e.startPoller("p", cfg, ic, false)
			e.putSession(t, 1)

			testkit.WaitFor(t, 10*time.Second, "failure notice", func() bool { return len(notices.list()) > 0 })
			first := notices.list()[0]
			mu.Lock()
			since := stoppedAt
			if !interruptedAt.IsZero() {
				since = interruptedAt
			}
			mu.Unlock()
			if tc.interruption != nil || tc.answer {
				if interruptedAt.IsZero() {
					t.Fatal("the canister was declared failed before the interruption")
				}
			}
			if d := first.at.Sub(since); d < failClose {
				t.Fatalf("declared failed %s after the last clock start, want at least %s", d, failClose)
			}
			wantReason := "icws: canister " + testCanister.Encode() + " stopped answering ws_get_messages: canister stopped (IC0508)"
			if first.canister != testCanister.Encode() || first.reason != wantReason {
				t.Fatalf("notice %+v, want canister %s, reason %q", first, testCanister.Encode(), wantReason)
			}
			if v := testkit.MetricValue(t, rp.p.m.failures.WithLabelValues("stopped")); v != 1 {
				t.Fatalf("icws_poller_canister_failures_total{cause=stopped} = %v, want 1", v)
			}
			// The session is still there (no edge in this test): the notice is repeated, same
			// declaration, and the canister is not polled meanwhile.
			polls := ic.queriesOf(testCanister.Encode())
			testkit.WaitFor(t, 10*time.Second, "a repeated notice", func() bool { return len(notices.list()) >= 2 })
			for _, n := range notices.list() {
				if !n.at.Equal(first.at) {
					t.Fatalf("repeated notice declares %s, the first %s", n.at, first.at)
				}
			}
			if got := ic.queriesOf(testCanister.Encode()); got != polls {
				t.Fatalf("%d polls of the failed canister after the declaration", got-polls)
			}
			if err := rp.p.Ready(context.Background()); err != nil {
				t.Fatalf("a failed canister made the poller unready: %v", err)
			}

			// The canister runs again and a new session is confirmed: polling resumes.
			mu.Lock()
			stopped = false
			mu.Unlock()
			c.push(3, testClient(2))
			e.putSession(t, 2)
			testkit.WaitFor(t, 10*time.Second, "messages after the restart", func() bool { return e.outCount() == 3 })
			checkStream(t, e, snapshot(c), zeroEpoch)
			if v := testkit.MetricValue(t, rp.p.m.failures.WithLabelValues("stopped")); v != 1 {
				t.Fatalf("icws_poller_canister_failures_total{cause=stopped} = %v after the restart, want 1", v)
			}
		})
	}
}

func TestPollErrorsAreClassified(t *testing.T) {
	for _, tc := range []struct {
		err       error
		permanent bool
		cause     string
	}{
		{&icclient.RejectError{Code: 5, ErrorCode: "IC0508"}, true, "stopped"},
		{&icclient.RejectError{Code: 3, ErrorCode: "IC0301"}, true, "not_found"},
		{&icclient.RejectError{Code: 3, ErrorCode: "IC0536"}, true, "method_missing"},
		{&icclient.RejectError{Code: 5, ErrorCode: "IC0537"}, true, "no_module"},
		{&icclient.RejectError{Code: 5, ErrorCode: "IC0503"}, true, "trapped"},
		{&icclient.RejectError{Code: 4, ErrorCode: "IC0406"}, true, "rejected"},
		{&icclient.RejectError{Code: 5}, true, "trapped"},
		{&icclient.RejectError{Code: 3}, true, "not_found"},
		{&icclient.RejectError{Code: 5, ErrorCode: "IC0522"}, false, ""},
		{&icclient.RejectError{Code: 5, ErrorCode: "IC0528"}, false, ""},
		{&icclient.RejectError{Code: 2, ErrorCode: "IC0207"}, false, ""},
		{&icclient.RejectError{Code: 1, ErrorCode: "IC0101"}, false, ""},
		{&decodeError{errors.New("bad Candid")}, true, "undecodable"},
		{&canisterError{errors.New("ws_get_messages: canister answered Err: caller is not a registered gateway")}, true, "refused"},
		{&icclient.TransportError{Err: errors.New("reset")}, false, ""},
		{&icclient.HTTPError{StatusCode: 503}, false, ""},
		{&icclient.VerificationError{Err: errors.New("bad signature")}, false, ""},
		{context.DeadlineExceeded, false, ""},
	} {
		f := classify(tc.err)
		if f.permanent != tc.permanent || f.cause != tc.cause {
			t.Errorf("%v: permanent %v cause %q, want %v %q", tc.err, f.permanent, f.cause, tc.permanent, tc.cause)
		}
		if f.permanent && f.detail == "" {
			t.Errorf("%v: permanent without a detail for the close reason", tc.err)
		}
	}
	if got := classify(&canisterError{errors.New("ws_get_messages: canister answered Err: caller is not a registered gateway")}).detail; got != "canister answered Err: caller is not a registered gateway" {
		t.Errorf("Err answer detail %q", got)
	}
	long := failureReason(testCanister.Encode(), strings.Repeat("é", 100))
	if len(long) > closeReasonLimit || !strings.HasPrefix(long, "icws: canister ") || strings.ContainsRune(long, '\uFFFD') {
		t.Errorf("long reason %q (%d bytes) does not fit a close frame", long, len(long))
	}
}
