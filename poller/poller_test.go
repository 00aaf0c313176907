package poller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	testGateway  = principal.Principal{Raw: []byte{9, 9, 9, 9, 9, 9, 9, 9, 9, 1}}
	testCanister = principal.MustDecode("rrkah-fqaaa-aaaaa-aaaaq-cai")
)

func fastConfig(canisters ...string) Config {
	return Config{
		Interval:   10 * time.Millisecond,
		Timeout:    2 * time.Second,
		LeaseTTL:   time.Second,
		BackoffMin: 5 * time.Millisecond,
		BackoffMax: 50 * time.Millisecond,
		Linger:     100 * time.Millisecond,
		Canisters:  canisters,
		// Runs of answers form however slowly a loaded machine runs the tests; the test of the
		// wait itself sets its own.
		RunWait: 10 * time.Second,
	}
}

func newIC(c *fakeCanister) *fakeIC {
	return &fakeIC{canisters: map[string]*fakeCanister{testCanister.Encode(): c}, gateway: testGateway}
}

// checkStream verifies that ICWS_OUT holds exactly the canister's messages want, each once, every
// client's in their order (the stream keeps a client's frames of one answer together), with the
// contract's headers and frames.
func checkStream(t *testing.T, e *env, want []protocol.CanisterOutputMessage, epochOf func(i int) uint64) {
	t.Helper()
	got := e.outMsgs()
	if len(got) != len(want) {
		t.Fatalf("ICWS_OUT holds %d messages, want %d", len(got), len(want))
	}
	cid := testCanister.Encode()
	wantOf := map[string][]int{} // indexes into want, by subject
	for i, w := range want {
		subj := bus.OutSubject(cid, w.ClientKey.Token())
		wantOf[subj] = append(wantOf[subj], i)
	}
	for _, m := range got {
		if len(wantOf[m.Subject]) == 0 {
			t.Fatalf("a message on %s beyond those wanted", m.Subject)
		}
		i := wantOf[m.Subject][0]
		wantOf[m.Subject] = wantOf[m.Subject][1:]
		w := want[i]
		frame, err := protocol.DecodeCanisterToClientMessage(m.Data)
		if err != nil {
			t.Fatalf("msg %d: %v", i, err)
		}
		if frame.Key != w.Key || string(frame.Content) != string(w.Content) {
			t.Fatalf("msg %d: key %s, want %s (content equal: %v)", i, frame.Key, w.Key, string(frame.Content) == string(w.Content))
		}
		if len(frame.Cert) == 0 || string(frame.Tree) != "tree-"+string(frame.Cert) {
			t.Fatalf("msg %d: cert/tree not the batch's: %q %q", i, frame.Cert, frame.Tree)
		}
		if m.Subject != bus.OutSubject(cid, w.ClientKey.Token()) {
			t.Fatalf("msg %d: subject %s", i, m.Subject)
		}
		wm, _ := protocol.DecodeWebsocketMessageCBOR(w.Content)
		nonce, _ := protocol.MessageKeyNonce(w.Key)
		sum := sha256.Sum256(w.Content)
		if m.Seq != wm.SequenceNum {
			t.Fatalf("msg %d: sequence number %d, want %d", i, m.Seq, wm.SequenceNum)
		}
		want := map[string]string{
			bus.HeaderClientKey: w.ClientKey.Token(),
			bus.HeaderEpoch:     strconv.FormatUint(epochOf(i), 10),
		}
		if m.Frames == 1 {
			// Several frames in one stream message carry their first frame's seq and nonce.
			want[bus.HeaderSeq] = strconv.FormatUint(wm.SequenceNum, 10)
			want[bus.HeaderNonce] = strconv.FormatUint(nonce, 10)
			want[bus.HeaderMsgID] = cid + "." + w.Key + "." + hex.EncodeToString(sum[:16])
		}
		for k, v := range want {
			if got := m.Header.Get(k); got != v {
				t.Fatalf("msg %d: header %s = %q, want %q", i, k, got, v)
			}
		}
	}
}

func snapshot(c *fakeCanister) []protocol.CanisterOutputMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]protocol.CanisterOutputMessage(nil), c.queue...)
}

func cursorOf(t *testing.T, e *env) bus.CursorRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, _, err := loadCursor(ctx, e.nc, testCanister.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func zeroEpoch(int) uint64 { return 0 }

func TestPublishesInOrderWithHeaders(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	clients := []protocol.ClientKey{testClient(1), testClient(2), testClient(3)}
	c.push(120, clients...)
	e.startPoller("p1", fastConfig(testCanister.Encode()), newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "120 messages", func() bool { return e.outCount() >= 120 })
	c.push(7, clients...)
	testkit.WaitFor(t, 10*time.Second, "127 messages", func() bool { return e.outCount() >= 127 })
	testkit.WaitFor(t, 5*time.Second, "cursor at 127", func() bool { return cursorOf(t, e).NextNonce == 127 })
	checkStream(t, e, snapshot(c), zeroEpoch)
	cur := cursorOf(t, e)
	if cur.LastKey != protocol.MessageKey(testGateway, 126) || cur.Epoch != 0 {
		t.Fatalf("cursor %+v", cur)
	}
}

func TestCursorPersistsAcrossPollers(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(30, testClient(1), testClient(2))
	a := e.startPoller("a", fastConfig(testCanister.Encode()), newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "30 messages", func() bool { return cursorOf(t, e).NextNonce == 30 })
	a.stop(t)
	c.push(20, testClient(1), testClient(2))
	c.mu.Lock()
	c.queried = nil
	c.mu.Unlock()
	e.startPoller("b", fastConfig(testCanister.Encode()), newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "50 messages", func() bool { return cursorOf(t, e).NextNonce == 50 })
	checkStream(t, e, snapshot(c), zeroEpoch)
	c.mu.Lock()
	first := c.queried[0]
	c.mu.Unlock()
	if first != 29 {
		t.Fatalf("second poller's first poll asked for nonce %d, want 29 (the cursor minus the overlap)", first)
	}
}

func activeAndStandby(t *testing.T, a, b *runningPoller) (*runningPoller, *runningPoller) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "someone polling", func() bool { return a.ic.queries.Load()+b.ic.queries.Load() >= 30 })
	qa, qb := a.ic.queries.Load(), b.ic.queries.Load()
	switch {
	case qa > 0 && qb == 0:
		return a, b
	case qb > 0 && qa == 0:
		return b, a
	}
	t.Fatalf("both pollers polled: %d and %d queries", qa, qb)
	return nil, nil
}

func TestOnlyOnePollerPolls(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(10, testClient(1))
	a := e.startPoller("a", fastConfig(testCanister.Encode()), newIC(c), false)
	b := e.startPoller("b", fastConfig(testCanister.Encode()), newIC(c), false)
	active, standby := activeAndStandby(t, a, b)
	// Keep watching for several lease periods: the standby must stay silent.
	deadline := time.Now().Add(2500 * time.Millisecond)
	testkit.WaitFor(t, 5*time.Second, "lease periods", func() bool { return time.Now().After(deadline) })
	if n := standby.ic.queries.Load(); n != 0 {
		t.Fatalf("standby made %d queries", n)
	}
	// A graceful stop hands over at once: the stopped poller's lease is gone, not left to expire.
	stopAt := time.Now()
	active.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ent, err := e.h.Leases.Get(ctx, bus.PollerLeaseKey(testCanister.Encode()))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		t.Fatal(err)
	default:
		var rec bus.LeaseRecord
		if err := json.Unmarshal(ent.Value(), &rec); err != nil || rec.Holder == active.p.cfg.ID {
			t.Fatalf("after a graceful stop the lease still holds %s (%v)", ent.Value(), err)
		}
	}
	testkit.WaitFor(t, 3*time.Second, "standby takes over", func() bool { return standby.ic.queries.Load() > 0 })
	t.Logf("graceful handover took %s", time.Since(stopAt).Round(time.Millisecond))
	checkStream(t, e, snapshot(c), zeroEpoch)
}

func TestCrashedPollerIsReplacedWithoutLossOrDuplicates(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	clients := []protocol.ClientKey{testClient(1), testClient(2)}
	c.push(10, clients...)
	cfg := fastConfig(testCanister.Encode())
	a := e.startPoller("a", cfg, newIC(c), true)
	b := e.startPoller("b", cfg, newIC(c), true)
	active, standby := activeAndStandby(t, a, b)
	testkit.WaitFor(t, 10*time.Second, "first 10", func() bool { return e.outCount() == 10 })

	// Messages keep arriving while the active poller dies without releasing its lease.
	stopPush := make(chan struct{})
	pushDone := make(chan struct{})
	go func() {
		defer close(pushDone)
		for {
			select {
			case <-stopPush:
				return
			case <-time.After(5 * time.Millisecond):
				c.push(1, clients...)
			}
		}
	}()
	killedAt := time.Now()
	active.cancel()
	<-active.done
	active.done <- nil
	testkit.WaitFor(t, 5*time.Second, "standby takes over", func() bool { return standby.ic.queries.Load() > 0 })
	takeover := time.Since(killedAt)
	t.Logf("takeover after crash: %s (lease TTL %s)", takeover.Round(time.Millisecond), cfg.LeaseTTL)
	close(stopPush)
	<-pushDone
	total := len(snapshot(c))
	testkit.WaitFor(t, 10*time.Second, "all messages", func() bool { return cursorOf(t, e).NextNonce == uint64(total) })
	checkStream(t, e, snapshot(c), zeroEpoch)
}

func TestQueueResetIsResynchronised(t *testing.T) {
	for _, tc := range []struct {
		name      string
		afterSize int // messages in the new queue
	}{
		{"new queue shorter than cursor", 3},
		{"new queue already past cursor", 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t)
			c := newFakeCanister(testGateway)
			c.push(8, testClient(1))
			e.startPoller("p", fastConfig(testCanister.Encode()), newIC(c), false)
			testkit.WaitFor(t, 10*time.Second, "first 8", func() bool { return cursorOf(t, e).NextNonce == 8 })
			old := snapshot(c)
			// The upgrade and the new messages land between two polls.
			c.mu.Lock()
			c.queue, c.first, c.seqs = nil, 0, map[string]uint64{}
			c.gen++
			c.mu.Unlock()
			c.push(tc.afterSize, testClient(2))
			expectResynced(t, e, c, old, uint64(tc.afterSize))
		})
	}
}

// expectResynced waits until the poller polls the canister's new queue (epoch 1) up to next, and
// checks that ICWS_OUT holds old, of the queue before (epoch 0), then the new queue.
func expectResynced(t *testing.T, e *env, c *fakeCanister, old []protocol.CanisterOutputMessage, next uint64) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "resync", func() bool {
		cur := cursorOf(t, e)
		return cur.Epoch == 1 && cur.NextNonce == next
	})
	want := append(old, snapshot(c)...)
	checkStream(t, e, want, func(i int) uint64 {
		if i < len(old) {
			return 0
		}
		return 1
	})
}

func TestQueueEmptiedByGatewayRemoval(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(5, testClient(1))
	e.startPoller("p", fastConfig(testCanister.Encode()), newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "first 5", func() bool { return cursorOf(t, e).NextNonce == 5 })
	old := snapshot(c)
	c.reset()
	testkit.WaitFor(t, 10*time.Second, "epoch bump", func() bool { cur := cursorOf(t, e); return cur.Epoch == 1 && cur.NextNonce == 0 })
	c.push(4, testClient(3))
	testkit.WaitFor(t, 10*time.Second, "new messages", func() bool { return cursorOf(t, e).NextNonce == 4 })
	checkStream(t, e, append(old, snapshot(c)...), func(i int) uint64 {
		if i < len(old) {
			return 0
		}
		return 1
	})
	if cur := cursorOf(t, e); cur.Epoch != 1 {
		t.Fatalf("epoch bumped more than once: %+v", cur)
	}
}

func TestTransientErrorsAreRetried(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	n := 0
	errMsg := "queue busy"
	c.fail = func(uint64) error {
		n++
		if n%3 == 1 {
			return errors.New("connection reset by peer")
		}
		return nil
	}
	c.reply = func(uint64) []byte {
		switch n % 7 {
		case 2:
			return []byte("DIDL garbage")
		case 4:
			b, _ := candidErr(errMsg)
			return b
		}
		return nil
	}
	c.push(200, testClient(1), testClient(2), testClient(3))
	rp := e.startPoller("p", fastConfig(testCanister.Encode()), newIC(c), false)
	testkit.WaitFor(t, 20*time.Second, "200 messages", func() bool { return cursorOf(t, e).NextNonce == 200 })
	checkStream(t, e, snapshot(c), zeroEpoch)
	for _, kind := range []string{errKindTransient, errKindDecode, errKindCanister} {
		if v := testkit.MetricValue(t, rp.p.m.errors.WithLabelValues(kind)); v == 0 {
			t.Errorf("no %s errors counted", kind)
		}
	}
	if err := rp.p.Ready(context.Background()); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

// A session whose ws_open the IC has not executed yet (anyone can open one naming any canister id)
// never makes a canister polled; a confirmed one does.
func TestUnconfirmedSessionsAreNotPolled(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(3, testClient(1))
	ic := newIC(c)
	e.startPoller("p", fastConfig(), ic, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stranger := principal.NewSelfAuthenticating([]byte("a canister id nobody runs")).Encode()
	for _, rec := range []bus.SessionRecord{
		{State: bus.SessionOpen, Canister: stranger, Client: testClient(2).Token(), OpenedAt: time.Now().UTC()},
		// The watch delivers updates in order: once this one is polled, the one above was seen.
		{State: bus.SessionOpen, Canister: testCanister.Encode(), Client: testClient(1).Token(), Confirmed: true, OpenedAt: time.Now().UTC()},
	} {
		b, _ := json.Marshal(rec)
		if _, err := e.h.Sessions.Put(ctx, bus.SessionKey(rec.Canister, rec.Client), b); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "confirmed canister polled", func() bool { return e.outCount() == 3 })
	if n := ic.queriesOf(stranger); n != 0 {
		t.Fatalf("the canister of an unconfirmed session was polled %d times", n)
	}
}

func TestCanisterSetFollowsSessions(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(3, testClient(1))
	ic := newIC(c)
	e.startPoller("p", fastConfig(), ic, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Nothing to poll without sessions.
	key := bus.SessionKey(testCanister.Encode(), testClient(1).Token())
	put := func(state string) {
		b, _ := json.Marshal(bus.SessionRecord{State: state, Canister: testCanister.Encode(), Client: testClient(1).Token(), Confirmed: true, OpenedAt: time.Now().UTC()})
		if _, err := e.h.Sessions.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	if ic.queries.Load() != 0 {
		t.Fatal("polled without sessions")
	}
	put(bus.SessionOpen)
	testkit.WaitFor(t, 10*time.Second, "messages", func() bool { return e.outCount() == 3 })
	put(bus.SessionDetached)
	if err := e.h.Sessions.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	leaseKey := bus.PollerLeaseKey(testCanister.Encode())
	testkit.WaitFor(t, 10*time.Second, "lease released after linger", func() bool {
		_, err := e.h.Leases.Get(ctx, leaseKey)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	q := ic.queries.Load()
	c.push(2, testClient(1))
	deadline := time.Now().Add(300 * time.Millisecond)
	testkit.WaitFor(t, 5*time.Second, "a while", func() bool { return time.Now().After(deadline) })
	if ic.queries.Load() != q {
		t.Fatalf("still polling without sessions")
	}
	put(bus.SessionDetached)
	testkit.WaitFor(t, 10*time.Second, "polling resumes for a detached session", func() bool { return e.outCount() == 5 })
	checkStream(t, e, snapshot(c), zeroEpoch)
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{Canisters: []string{"not a principal"}},
		{LeaseTTL: time.Millisecond},
		{BackoffMin: time.Second, BackoffMax: time.Millisecond},
	} {
		if _, err := New(cfg, Deps{NC: nil}); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

func candidErr(msg string) ([]byte, error) {
	return candidMarshal(protocol.CanisterWsGetMessagesResult{Err: &msg})
}

func TestBurstThroughput(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	clients := []protocol.ClientKey{testClient(1), testClient(2), testClient(3), testClient(4)}
	const n = 2000
	c.push(n, clients...)
	start := time.Now()
	reg := prometheus.NewRegistry()
	e.startPollerWith("p", fastConfig(testCanister.Encode()), newIC(c), false, reg)
	testkit.WaitFor(t, 30*time.Second, "burst published", func() bool { return cursorOf(t, e).NextNonce == n })
	d := time.Since(start)
	t.Logf("burst: %d messages published (PubAck'd, cursor saved) in %s: %.0f msg/s", n, d.Round(time.Millisecond), n/d.Seconds())
	if got := e.outCount(); got != n {
		t.Fatalf("%d messages in ICWS_OUT, want %d", got, n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if h := mf.GetMetric()[0].GetHistogram(); h != nil {
			t.Logf("%s: %d samples, mean %.2f ms", mf.GetName(), h.GetSampleCount(), 1000*h.GetSampleSum()/float64(h.GetSampleCount()))
		}
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, name := range []string{"icws_poller_poll_duration_seconds", "icws_poller_publish_duration_seconds",
		"icws_poller_messages_total", "icws_poller_cursor", "icws_poller_lease_held"} {
		if !seen[name] {
			t.Errorf("metric %s not exported", name)
		}
	}
}
