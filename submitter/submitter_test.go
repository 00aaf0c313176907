package submitter

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/natstest"
	"github.com/icws/icws/protocol"
)

func TestOrderUnderBurstManyClientsInParallel(t *testing.T) {
	e := newEnv(t, 8)
	store := newFakeStore()
	store.latency = time.Millisecond
	r := e.start(t, testConfig("a"), store.as("a"))
	pub := e.publisher(t)

	big := newTestClient(0)
	want := map[string]uint64{big.token: 500}
	bursts := [][]*nats.Msg{pub.burst(big, 1, 500)}
	for i := 1; i <= 20; i++ {
		c := newTestClient(i)
		want[c.token] = 30
		bursts = append(bursts, pub.burst(c, 1, 30))
	}
	pub.async(interleave(bursts...))

	testkit.WaitFor(t, 30*time.Second, "all envelopes executed", func() bool { return store.executedCount() == 500+20*30 })
	store.checkOrder(t, want)
	store.mu.Lock()
	maxClients := store.maxClients
	store.mu.Unlock()
	if maxClients < 2 {
		t.Errorf("at most %d clients were relayed at once; want parallelism", maxClients)
	}
	testkit.WaitFor(t, 10*time.Second, "replied metric", func() bool {
		return testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindMessage, outcomeReplied)) >= 1100
	})
	t.Logf("max clients in flight: %d", maxClients)
	r.stop(t)
}

func TestSettleDelayAfterAccepted(t *testing.T) {
	e := newEnv(t, 2)
	store := newFakeStore()
	store.script = func(_ string, seq uint64, _ int) (icclient.CallStatus, error) {
		if seq == 2 {
			return icclient.CallAccepted, nil
		}
		return icclient.CallReplied, nil
	}
	cfg := testConfig("a")
	r := e.start(t, cfg, store.as("a"))
	pub := e.publisher(t)
	c := newTestClient(1)
	pub.async(pub.burst(c, 1, 4))
	testkit.WaitFor(t, 10*time.Second, "4 envelopes executed", func() bool { return store.executedCount() == 4 })
	testkit.WaitFor(t, 10*time.Second, "accepted metric", func() bool {
		return testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindMessage, outcomeAccepted)) == 1
	})
	store.checkOrder(t, map[string]uint64{c.token: 4})
	store.mu.Lock()
	defer store.mu.Unlock()
	var acceptedEnd, nextStart time.Time
	for _, call := range store.calls {
		switch call.seq {
		case 2:
			acceptedEnd = call.end
		case 3:
			nextStart = call.start
		}
	}
	if gap := nextStart.Sub(acceptedEnd); gap < cfg.SettleDelay {
		t.Errorf("next envelope sent %s after a 202, want ≥ %s", gap, cfg.SettleDelay)
	}
}

func TestRetryableErrorsResendSameBytes(t *testing.T) {
	e := newEnv(t, 2)
	store := newFakeStore()
	store.script = func(_ string, seq uint64, attempt int) (icclient.CallStatus, error) {
		if seq == 2 && attempt <= 3 {
			if attempt == 2 {
				return 0, &icclient.TransportError{Err: fmt.Errorf("connection reset")}
			}
			return 0, &icclient.HTTPError{StatusCode: 503, Body: "overloaded"}
		}
		return icclient.CallReplied, nil
	}
	r := e.start(t, testConfig("a"), store.as("a"))
	pub := e.publisher(t)
	c := newTestClient(1)
	pub.async(pub.burst(c, 1, 3))
	testkit.WaitFor(t, 10*time.Second, "3 envelopes executed", func() bool { return store.executedCount() == 3 })
	store.checkOrder(t, map[string]uint64{c.token: 3}) // also checks that re-sends carried the same bytes
	store.mu.Lock()
	attempts := 0
	for _, call := range store.calls {
		if call.seq == 2 {
			attempts++
		}
	}
	store.mu.Unlock()
	if attempts != 4 {
		t.Errorf("seq 2 sent %d times, want 4", attempts)
	}
	if got := testkit.MetricValue(t, r.s.m.retries.WithLabelValues(bus.KindMessage)); got != 3 {
		t.Errorf("retries metric = %v, want 3", got)
	}
}

func TestNonRetryableAndExpiredAreSkipped(t *testing.T) {
	e := newEnv(t, 2)
	store := newFakeStore()
	past, stale, refused := newTestClient(1), newTestClient(2), newTestClient(3)
	store.script = func(client string, seq uint64, _ int) (icclient.CallStatus, error) {
		switch {
		case client == stale.token && seq == 1:
			return 0, &icclient.HTTPError{StatusCode: 503, Body: "down"}
		case client == refused.token && seq == 1:
			return 0, &icclient.HTTPError{StatusCode: 400, Body: "invalid signature"}
		}
		return icclient.CallReplied, nil
	}
	r := e.start(t, testConfig("a"), store.as("a"))
	pub := e.publisher(t)
	exp := time.Now().Add(4 * time.Minute)
	pub.async([]*nats.Msg{
		// Already expired: never sent.
		pub.msg(testCanister, past, bus.KindMessage, 1, fakeEnvelope(t, past.token, 1, time.Now().Add(-time.Second))),
		pub.msg(testCanister, past, bus.KindMessage, 2, fakeEnvelope(t, past.token, 2, exp)),
		// Expires while the IC is unavailable.
		pub.msg(testCanister, stale, bus.KindMessage, 1, fakeEnvelope(t, stale.token, 1, time.Now().Add(400*time.Millisecond))),
		pub.msg(testCanister, stale, bus.KindMessage, 2, fakeEnvelope(t, stale.token, 2, exp)),
		// Refused (4xx): logged and skipped.
		pub.msg(testCanister, refused, bus.KindMessage, 1, fakeEnvelope(t, refused.token, 1, exp)),
		pub.msg(testCanister, refused, bus.KindMessage, 2, fakeEnvelope(t, refused.token, 2, exp)),
		// Garbage: dropped.
		pub.msg(testCanister, refused, bus.KindMessage, 3, []byte("not cbor")),
	})
	testkit.WaitFor(t, 10*time.Second, "the three second envelopes executed", func() bool { return store.executedCount() == 3 })
	testkit.WaitFor(t, 10*time.Second, "metrics", func() bool {
		return testkit.MetricValue(t, r.s.m.expired) == 2 &&
			testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindMessage, outcomeRefused)) == 1 &&
			testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindMessage, outcomeInvalid)) == 1
	})
	store.mu.Lock()
	defer store.mu.Unlock()
	for _, c := range []testClient{past, stale, refused} {
		if got := store.order[c.token]; len(got) != 1 || got[0] != 2 {
			t.Errorf("client %d executions = %v, want [2]", c.key.ClientNonce, got)
		}
	}
	for _, call := range store.calls {
		if call.client == past.token && call.seq == 1 {
			t.Error("an expired envelope was sent")
		}
	}
}

func TestCloseCallsWsCloseAfterEarlierEnvelopes(t *testing.T) {
	e := newEnv(t, 2)
	store := newFakeStore()
	store.latency = 2 * time.Millisecond
	r := e.start(t, testConfig("a"), store.as("a"))
	pub := e.publisher(t)
	c := newTestClient(1)
	msgs := pub.burst(c, 1, 10)
	msgs = append(msgs, pub.msg(testCanister, c, bus.KindClose, 0, nil))
	pub.async(msgs)
	testkit.WaitFor(t, 10*time.Second, "ws_close", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return len(store.closes) == 1
	})
	store.checkOrder(t, map[string]uint64{c.token: 10})
	store.mu.Lock()
	cl := store.closes[0]
	store.mu.Unlock()
	if !cl.key.Equal(c.key) {
		t.Errorf("ws_close for %v, want %v", cl.key, c.key)
	}
	if cl.execsSoFar != 10 {
		t.Errorf("ws_close came after %d of the client's envelopes, want 10", cl.execsSoFar)
	}
	testkit.WaitFor(t, 5*time.Second, "close metric", func() bool {
		return testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindClose, outcomeCloseOK)) == 1
	})
}

func TestCloseRetriesTransientErrorsAndLogsErrResult(t *testing.T) {
	e := newEnv(t, 2)
	store := newFakeStore()
	gone, rejected := newTestClient(1), newTestClient(2)
	store.closeScript = func(client string, attempt int) (protocol.CanisterWsResult, error) {
		switch {
		case client == rejected.token:
			return protocol.CanisterWsResult{}, &icclient.RejectError{Code: 5, Message: "trapped"}
		case attempt <= 2:
			return protocol.CanisterWsResult{}, &icclient.HTTPError{StatusCode: 502, Body: "bad gateway"}
		}
		return protocol.ResultErr("client not connected"), nil
	}
	r := e.start(t, testConfig("a"), store.as("a"))
	pub := e.publisher(t)
	pub.async([]*nats.Msg{
		pub.msg(testCanister, gone, bus.KindClose, 0, nil),
		pub.msg(testCanister, rejected, bus.KindClose, 0, nil),
	})
	testkit.WaitFor(t, 10*time.Second, "close outcomes", func() bool {
		return testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindClose, outcomeCloseErr)) == 1 &&
			testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindClose, outcomeRejected)) == 1
	})
	if got := testkit.MetricValue(t, r.s.m.retries.WithLabelValues(bus.KindClose)); got != 2 {
		t.Errorf("close retries = %v, want 2", got)
	}
}

func TestNonReplicatedRejectionIsCountedAndSkipped(t *testing.T) {
	e := newEnv(t, 2)
	store := newFakeStore()
	store.script = func(_ string, seq uint64, _ int) (icclient.CallStatus, error) {
		if seq == 1 {
			return icclient.CallNonReplicatedRejection, nil
		}
		return icclient.CallReplied, nil
	}
	r := e.start(t, testConfig("a"), store.as("a"))
	pub := e.publisher(t)
	c := newTestClient(1)
	pub.async(pub.burst(c, 1, 2))
	testkit.WaitFor(t, 10*time.Second, "outcomes", func() bool {
		return testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindMessage, outcomeNonReplicated)) == 1 &&
			testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindMessage, outcomeReplied)) == 1
	})
	store.mu.Lock()
	defer store.mu.Unlock()
	if got := store.order[c.token]; len(got) != 1 || got[0] != 2 {
		t.Errorf("executions %v, want [2]", got)
	}
}

func TestConfigValidation(t *testing.T) {
	c := DefaultConfig()
	if err := c.validate(); err != nil || c.ID == "" {
		t.Fatalf("default config: %v (id %q)", err, c.ID)
	}
	bad := DefaultConfig()
	bad.RetryMax = time.Millisecond
	if err := bad.validate(); err == nil {
		t.Error("RetryMax < RetryMin accepted")
	}
	bad = DefaultConfig()
	bad.ID = "a b"
	if err := bad.validate(); err == nil {
		t.Error("id with a space accepted")
	}
	for _, hb := range []time.Duration{100 * time.Millisecond, time.Minute} {
		bad = DefaultConfig()
		bad.PullHeartbeat = hb
		if err := bad.validate(); err == nil || !strings.Contains(err.Error(), "ICWS_SUBMIT_PULL_HEARTBEAT") {
			t.Errorf("pull heartbeat %s: %v, want an error naming ICWS_SUBMIT_PULL_HEARTBEAT", hb, err)
		}
	}
}

func TestRunWaitsForStreams(t *testing.T) {
	_, nc, js := natstest.StartJetStream(t)
	s, err := New(testConfig("early"), Deps{NC: nc, JS: js, IC: newFakeStore().as("early"), Logger: testkit.Logger(t, slog.LevelWarn)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	if err := s.Ready(ctx); err == nil {
		t.Error("ready before the streams exist")
	}
	ectx, ecancel := context.WithTimeout(ctx, 10*time.Second)
	defer ecancel()
	if err := bus.Ensure(ectx, js, bus.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 15*time.Second, "ready", func() bool { return s.Ready(ctx) == nil })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
}
