package submitter

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/nats-io/nats.go"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/testkit"
)

// gatedIC holds the first call of one client until the test opens the gate.
type gatedIC struct {
	*fakeIC
	client string
	gate   chan struct{}
	once   sync.Once
	held   chan struct{} // closed when the held call arrived
}

func (g *gatedIC) SubmitCall(ctx context.Context, canister principal.Principal, env []byte) (icclient.CallOutcome, error) {
	if client, _, err := parseFakeEnvelope(env); err == nil && client == g.client {
		first := false
		g.once.Do(func() { first = true })
		if first {
			close(g.held)
			select {
			case <-g.gate:
			case <-ctx.Done():
			}
		}
	}
	return g.fakeIC.SubmitCall(ctx, canister, env)
}

// sessionMsgs are n ws_message envelopes of a session, seq 1..n, with the session's Msg-Ids.
func sessionMsgs(t *testing.T, pub *publisher, c testClient, rec *bus.SessionRecord, n uint64, expiry time.Time) []*nats.Msg {
	t.Helper()
	out := make([]*nats.Msg, 0, n)
	for s := uint64(1); s <= n; s++ {
		m := pub.msg(testCanister, c, bus.KindMessage, s, fakeEnvelope(t, c.token, s, expiry))
		m.Header.Set(bus.HeaderMsgID, bus.MessageMsgID(rec.Canister, rec.Client, rec.Tag(), s))
		out = append(out, m)
	}
	return out
}

func gathered(t *testing.T, r *running, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not gathered", name)
	return 0
}

// A client whose queued envelope would expire before its turn (update latency × backlog position
// beyond its ingress_expiry) is closed at once: its edge gets a close request naming the backlog,
// its remaining envelopes are dropped (acked, counted) and its ws_close goes through. A detached
// session is closed by the submitter itself. A client within the rate is untouched.
func TestClientSendingFasterThanTheCanisterIsClosed(t *testing.T) {
	const latency = 200 * time.Millisecond
	e := newEnv(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sessions := e.sessions(ctx, t)
	store := newFakeStore()
	store.latency = latency
	quiet, chatty, away := newTestClient(1), newTestClient(2), newTestClient(3)
	ic := &gatedIC{fakeIC: store.as("a"), client: chatty.token, gate: make(chan struct{}), held: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-ic.gate:
		default:
			close(ic.gate)
		}
	})
	record := func(c testClient, state string) *bus.SessionRecord {
		t.Helper()
		rec := &bus.SessionRecord{State: state, Canister: testCanister.Encode(), Client: c.token, Edge: "e1",
			Resumable: true, OpenedAt: time.Now().UTC(), Partition: bus.Partition(testCanister.Encode(), c.token, e.partitions), Confirmed: true}
		if _, err := sessions.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	chattyRec, awayRec := record(chatty, bus.SessionOpen), record(away, bus.SessionDetached)

	closeReqs := e.listen(t, bus.SessionCloseSubject("e1"), 16)
	r := e.start(t, testConfig("a"), ic)
	pub := e.publisher(t)

	// Within the rate: 5 envelopes take about 1 s, well within their expiry. They also give the
	// submitter its latency estimate.
	pub.async(pub.burst(quiet, 1, 5))
	testkit.WaitFor(t, 10*time.Second, "the quiet client's envelopes", func() bool { return store.executedCount() == 5 })
	store.checkOrder(t, map[string]uint64{quiet.token: 5})

	// 40 envelopes at 200 ms each need 8 s; they expire in 3 s. The first one is held at the IC,
	// so the close request is seen while it is still in flight: at once, not after the backlog.
	msgs := sessionMsgs(t, pub, chatty, chattyRec, 40, time.Now().Add(3*time.Second))
	pub.async(msgs[:1])
	select {
	case <-ic.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the chatty client's first envelope did not reach the IC")
	}
	pub.async(msgs[1:])
	select {
	case m := <-closeReqs:
		key, tag, reason := bus.ParseSessionClose(m)
		if key != chattyRec.Key() || tag != chattyRec.Tag() || !strings.Contains(reason, "client sends faster than the canister executes") {
			t.Fatalf("close request %q %q %q, want the chatty session's with the backlog reason", key, tag, reason)
		}
		if len(reason) > 123 {
			t.Fatalf("reason of %d bytes does not fit a close frame: %q", len(reason), reason)
		}
		t.Logf("close reason: %s", reason)
	case <-time.After(10 * time.Second):
		t.Fatal("no close request for the chatty client")
	}
	// The close request goes out at the 16th envelope queued; the rest may still be arriving.
	testkit.WaitFor(t, 10*time.Second, "icws_submitter_client_backlog_max 40 while 39 envelopes wait behind one in flight", func() bool {
		return gathered(t, r, "icws_submitter_client_backlog_max") == 40
	})
	if got := gathered(t, r, "icws_submitter_oldest_queued_seconds"); got <= 0 {
		t.Errorf("icws_submitter_oldest_queued_seconds = %v with envelopes queued", got)
	}
	close(ic.gate)
	testkit.WaitFor(t, 10*time.Second, "the chatty client's queue dropped", func() bool {
		return testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindMessage, outcomeBacklogDropped)) == 39
	})
	store.checkOrder(t, map[string]uint64{quiet.token: 5, chatty.token: 1})
	if got := testkit.MetricValue(t, r.s.m.backlogCloses); got != 1 {
		t.Errorf("icws_submitter_backlog_closes_total = %v, want 1", got)
	}

	// The edge's teardown publishes the session's close request: it is relayed (ws_close), and a
	// later session of the key is relayed again.
	pub.async([]*nats.Msg{pub.msg(testCanister, chatty, bus.KindClose, 0, nil)})
	testkit.WaitFor(t, 10*time.Second, "ws_close of the chatty client", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		for _, c := range store.closes {
			if c.key.Equal(chatty.key) {
				return true
			}
		}
		return false
	})

	// A detached session has no socket to close: its record is marked closed, which the sweeper
	// of the edge it names finishes (close request published, record deleted) as it finishes every
	// closed session.
	pub.async(sessionMsgs(t, pub, away, awayRec, 40, time.Now().Add(3*time.Second)))
	testkit.WaitFor(t, 10*time.Second, "the detached session marked closed", func() bool {
		rec, _, err := sessions.Get(ctx, awayRec.Key())
		return err == nil && rec != nil && rec.State == bus.SessionClosed
	})
	if got := testkit.MetricValue(t, r.s.m.backlogCloses); got != 2 {
		t.Errorf("icws_submitter_backlog_closes_total = %v, want 2", got)
	}
	testkit.WaitFor(t, 10*time.Second, "every envelope acknowledged", func() bool {
		return gathered(t, r, "icws_submitter_client_backlog_max") == 0
	})
	select {
	case m := <-closeReqs:
		t.Errorf("unexpected close request for %s", m.Data)
	default:
	}
}

func TestFirstDoomed(t *testing.T) {
	now := time.Now()
	msg := func(expiresIn time.Duration) queued {
		return queued{kind: bus.KindMessage, expiry: now.Add(expiresIn)}
	}
	const pace = time.Second
	for _, tc := range []struct {
		name     string
		msgs     []queued
		inFlight bool
		ahead    time.Duration
		want     int // index of the first doomed envelope, -1 for none
	}{
		{"within the rate", []queued{msg(time.Minute), msg(time.Minute), msg(time.Minute)}, true, pace, -1},
		{"tail too late", []queued{msg(time.Minute), msg(time.Minute), msg(2500 * time.Millisecond)}, true, pace, 2},
		{"in flight ahead counts", []queued{msg(800 * time.Millisecond)}, true, pace, 0},
		{"nothing ahead is not a backlog", []queued{msg(-time.Second), msg(time.Minute)}, false, 0, -1},
		{"behind an expired head", []queued{msg(-time.Second), msg(500 * time.Millisecond)}, false, 0, 1},
		{"close requests are not dropped", []queued{msg(time.Minute), {kind: bus.KindClose}}, true, pace, -1},
		{"unreadable expiry", []queued{msg(time.Minute), {kind: bus.KindMessage}}, true, pace, -1},
	} {
		d, ok := firstDoomed(tc.msgs, 0, now, tc.inFlight, tc.ahead, pace)
		switch {
		case tc.want < 0 && ok:
			t.Errorf("%s: doomed %+v, want none", tc.name, d)
		case tc.want >= 0 && !ok:
			t.Errorf("%s: none doomed, want index %d", tc.name, tc.want)
		case tc.want >= 0:
			wait := tc.ahead + time.Duration(tc.want)*pace
			if d.start != wait {
				t.Errorf("%s: predicted wait %s, want %s (index %d)", tc.name, d.start, wait, tc.want)
			}
		}
	}
}

// The calls of every client queued behind an outage end together once the IC answers again; they
// must not make the canister look slow (every client queued behind the outage would be closed),
// while a canister that really slowed down is seen within seconds.
func TestPaceEstimateIgnoresAnOutage(t *testing.T) {
	const can = "rrkah-fqaaa-aaaaa-aaaaq-cai"
	now := time.Now()
	e := newPaceEstimator()
	for range 20 { // 20 clients, each answered in 400 ms
		now = now.Add(20 * time.Millisecond)
		e.observe(can, 400*time.Millisecond, now)
	}
	now = now.Add(15 * time.Second) // nothing answered for 15 s, then every call in flight at once
	for range 20 {
		e.observe(can, 15*time.Second, now)
		now = now.Add(time.Millisecond)
	}
	if p, _ := e.pace(can); p > 2*time.Second {
		t.Fatalf("pace after a 15 s outage: %s, want under 2s", p)
	}
	for range 200 {
		now = now.Add(20 * time.Millisecond)
		e.observe(can, 400*time.Millisecond, now)
	}
	start := now
	for p, _ := e.pace(can); p < 5*time.Second; p, _ = e.pace(can) {
		now = now.Add(500 * time.Millisecond) // 20 clients, each answered in 10 s
		e.observe(can, 10*time.Second, now)
		if now.Sub(start) > 30*time.Second {
			t.Fatalf("pace %s after %s of 10 s calls: a real slow-down is not seen", p, now.Sub(start))
		}
	}
	t.Logf("a slow-down from 400ms to 10s per call is seen (pace ≥ 5s) after %s", now.Sub(start))
}
