package edge

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go/jetstream"
)

// openResumable opens a resumable session, receives seq 1, sends n client messages and waits
// until they are stored.
// startResumable starts what most resume tests begin with: a bus, a pipeline without echo, one
// edge (e1) and a resumable client with nothing sent yet.
func startResumable(t *testing.T) (*env, *pipeline, *runningEdge, *client) {
	t.Helper()
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	return v, p, e, openResumable(t, v, e.url, 0)
}

func openResumable(t *testing.T, v *env, url string, n int) *client {
	c := openedClient(t, v, url, true)
	for i := 0; i < n; i++ {
		c.send()
	}
	testkit.WaitFor(t, 5*time.Second, "client messages stored", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == n+1 })
	return c
}

func dropSocket(t *testing.T, v *env, c *client) {
	_ = c.ws.UnderlyingConn().Close()
	testkit.WaitFor(t, 5*time.Second, "detached", func() bool {
		rec := v.session(c)
		return rec != nil && rec.State == bus.SessionDetached
	})
}

func TestResumeReplaysExactlyOnceWhileLive(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openResumable(t, v, e.url, 3)
	subj := outSubjectOfClient(c)
	for s := uint64(2); s <= 10; s++ {
		p.publish(subj, s, 0)
	}
	for want := uint64(2); want <= 5; want++ {
		if got, _ := c.next(); got != want {
			t.Fatalf("got %d want %d", got, want)
		}
	}
	dropSocket(t, v, c)
	// A long history, then the pipeline keeps publishing during the resume and the replay, so live
	// messages arrive while the history is read (and some are in both).
	const stored, last = 2000, 2300
	for s := uint64(11); s <= stored; s++ {
		if _, err := v.js.PublishMsgAsync(outMsg(v.gw, subj, s, 0)); err != nil {
			t.Fatal(err)
		}
	}
	<-v.js.PublishAsyncComplete()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for s := uint64(stored + 1); s <= last; s++ {
			p.publish(subj, s, 0)
		}
	}()
	lastClient, code, reason := c.resume(e.url, 5)
	if code != 0 {
		t.Fatalf("resume closed %d %q", code, reason)
	}
	if lastClient != 3 {
		t.Fatalf("last_client_seq %d, want 3", lastClient)
	}
	for want := uint64(6); want <= last; want++ {
		if got, _ := c.next(); got != want {
			t.Fatalf("got %d want %d", got, want)
		}
	}
	wg.Wait()
	waitFilled(t, e, c)
	// Re-sent client messages are de-duplicated; new ones continue the order.
	c.seq = 3
	c.send()
	testkit.WaitFor(t, 5*time.Second, "message 4 stored", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 5 })
	c.seq = 3
	c.send()
	c.send()
	testkit.WaitFor(t, 5*time.Second, "message 5 stored", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 6 })
	in := v.inMessages(inSubjectOf(v, c))
	for i, m := range in[1:] {
		if m.clientSeq != string(rune('1'+i)) {
			t.Fatalf("ICWS_IN client seqs: %+v", in)
		}
	}
	rec := v.session(c)
	if rec.State != bus.SessionOpen || rec.Edge != "e1" || !rec.DetachedAt.IsZero() {
		t.Fatalf("record %+v", rec)
	}
	if n := counter(t, e.m.resumes.WithLabelValues("ok")); n != 1 {
		t.Fatalf("resumes ok %v", n)
	}
}

func TestResumeRejections(t *testing.T) {
	v, p, e, c := startResumable(t)
	p.publish(outSubjectOfClient(c), 2, 0)
	c.next()
	dropSocket(t, v, c)

	good := c.token
	c.token = make([]byte, 32)
	if _, code, reason := c.resume(e.url, 2); code != CloseNotResumable || !strings.Contains(reason, "wrong token") {
		t.Fatalf("wrong token: %d %q", code, reason)
	}
	c.token = good
	if _, code, reason := c.resume(e.url, 9); code != CloseNotResumable || !strings.Contains(reason, "above the highest") {
		t.Fatalf("last_seq ahead: %d %q", code, reason)
	}
	// A failed attempt leaves the session as it was.
	if rec := v.session(c); rec == nil || rec.State != bus.SessionDetached {
		t.Fatalf("record %+v", rec)
	}
	// Unknown session.
	u := newClient(t, v.gw, c.canister)
	u.token = good
	if _, code, reason := u.resume(e.url, 0); code != CloseNotResumable || !strings.Contains(reason, "unknown session") {
		t.Fatalf("unknown: %d %q", code, reason)
	}
	// A standard session cannot be resumed.
	s := openedClient(t, v, e.url, false)
	s.token = good
	if _, code, reason := s.resume(e.url, 1); code != CloseNotResumable || !strings.Contains(reason, "opt in") {
		t.Fatalf("standard: %d %q", code, reason)
	}
	// Tokens rotate: the token of the handshake before last is no longer valid after a resume.
	c.token = good
	if _, code, _ := c.resume(e.url, 2); code != 0 {
		t.Fatalf("resume: %d", code)
	}
	_ = c.ws.UnderlyingConn().Close()
	testkit.WaitFor(t, 5*time.Second, "detached again", func() bool { return v.session(c).State == bus.SessionDetached })
	c.token = good
	if _, code, reason := c.resume(e.url, 2); code != CloseNotResumable || !strings.Contains(reason, "wrong token") {
		t.Fatalf("reused token: %d %q", code, reason)
	}
}

func TestResumeHistoryIncomplete(t *testing.T) {
	v, p, e, c := startResumable(t)
	subj := outSubjectOfClient(c)
	for s := uint64(2); s <= 6; s++ {
		p.publish(subj, s, 0)
	}
	c.next()
	testkit.WaitFor(t, 5*time.Second, "stored", func() bool {
		m, err := v.h.Out.GetLastMsgForSubject(context.Background(), subj)
		return err == nil && m.Header.Get(bus.HeaderSeq) == "6"
	})
	dropSocket(t, v, c)
	// The replay window lost 1..4: resuming from 2 would need 3.
	if err := v.h.Out.Purge(context.Background(), jetstream.WithPurgeSubject(subj), jetstream.WithPurgeKeep(2)); err != nil {
		t.Fatal(err)
	}
	if _, code, reason := c.resume(e.url, 2); code != CloseNotResumable || !strings.Contains(reason, "history") {
		t.Fatalf("incomplete: %d %q", code, reason)
	}
	testkit.WaitFor(t, 5*time.Second, "session closed and close request", func() bool {
		in := v.inMessages(inSubjectOf(v, c))
		return v.session(c) == nil && in[len(in)-1].kind == bus.KindClose
	})
}

func TestResumeGraceExpires(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.ResumeGrace = 300 * time.Millisecond
	e := v.startEdge(cfg)
	c := openResumable(t, v, e.url, 2)
	dropSocket(t, v, c)
	testkit.WaitFor(t, 5*time.Second, "close request after grace", func() bool {
		in := v.inMessages(inSubjectOf(v, c))
		return in[len(in)-1].kind == bus.KindClose && strings.Contains(in[len(in)-1].reason, "grace")
	})
	testkit.WaitFor(t, 5*time.Second, "session deleted", func() bool { return v.session(c) == nil })
	if _, code, reason := c.resume(e.url, 1); code != CloseNotResumable || !strings.HasPrefix(reason, "icws: not resumable: ") {
		t.Fatalf("expired: %d %q", code, reason)
	}
	if n := len(v.inMessages(inSubjectOf(v, c))); n != 4 {
		t.Fatalf("ICWS_IN holds %d messages, want open, 2 messages, one close", n)
	}
}

func TestResumeOnSecondEdge(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	a := v.startEdge(testConfig("edgeA"))
	b := v.startEdge(testConfig("edgeB"))
	c := openResumable(t, v, a.url, 2)
	subj := outSubjectOfClient(c)
	p.publish(subj, 2, 0)
	c.next()
	oldWS := c.ws
	// The client thinks its connection is dead (it is not, for edge A) and resumes on edge B.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for s := uint64(3); s <= 100 && !stop.Load(); s++ {
			p.publish(subj, s, 0)
		}
	}()
	lastClient, code, reason := c.resume(b.url, 2)
	if code != 0 || lastClient != 2 {
		t.Fatalf("resume on B: %d %q last_client_seq %d", code, reason, lastClient)
	}
	code, reason = expectClose(t, oldWS)
	if code != CloseResumedElsewhere || reason != reasonResumedElsewhere {
		t.Fatalf("old socket closed with %d %q", code, reason)
	}
	for want := uint64(3); want <= 100; want++ {
		if got, _ := c.next(); got != want {
			t.Fatalf("got %d want %d", got, want)
		}
	}
	wg.Wait()
	waitFilled(t, b, c)
	rec := v.session(c)
	if rec.Edge != "edgeB" || rec.State != bus.SessionOpen {
		t.Fatalf("record %+v", rec)
	}
	// Edge A's socket end did not detach or close the moved session.
	time.Sleep(100 * time.Millisecond)
	if rec := v.session(c); rec.Edge != "edgeB" || rec.State != bus.SessionOpen {
		t.Fatalf("record after old socket end %+v", rec)
	}
	c.send()
	testkit.WaitFor(t, 5*time.Second, "message 3 via B", func() bool {
		in := v.inMessages(inSubjectOf(v, c))
		return len(in) == 4 && in[3].clientSeq == "3"
	})
}

func TestDeadEdgeSessionsDetachedAndExpired(t *testing.T) {
	v := newEnv(t)
	cfg := testConfig("e1")
	cfg.ResumeGrace = 300 * time.Millisecond
	v.startEdge(cfg)
	c := newClient(t, v.gw, randomCanister(t))
	ct, cl := c.canister.Encode(), c.key().Token()
	part := bus.Partition(ct, cl, v.h.Partitions)
	rec := bus.SessionRecord{State: bus.SessionOpen, Canister: ct, Client: cl, Edge: "ghost", Resumable: true,
		TokenHash: "x", OpenedAt: time.Now(), Partition: part}
	val, _ := json.Marshal(rec)
	if _, err := v.h.Sessions.Create(context.Background(), bus.SessionKey(ct, cl), val); err != nil {
		t.Fatal(err)
	}
	// A standard session of the dead edge is closed at once.
	s := newClient(t, v.gw, c.canister)
	sk := s.key().Token()
	srec := bus.SessionRecord{State: bus.SessionOpen, Canister: ct, Client: sk, Edge: "ghost",
		OpenedAt: time.Now(), Partition: bus.Partition(ct, sk, v.h.Partitions)}
	val, _ = json.Marshal(srec)
	if _, err := v.h.Sessions.Create(context.Background(), bus.SessionKey(ct, sk), val); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "resumable session detached", func() bool {
		r := v.session(c)
		return r == nil || r.State == bus.SessionDetached
	})
	testkit.WaitFor(t, 5*time.Second, "both closed", func() bool {
		return v.session(c) == nil && v.session(s) == nil &&
			len(v.inMessages(bus.InSubject(part, ct, cl))) == 1 && len(v.inMessages(inSubjectOf(v, s))) == 1
	})
}

// A record that claims this edge but has no socket here (a teardown that could not reach NATS)
// is treated as dropped after a while.
func TestOrphanedOwnSessionIsDetached(t *testing.T) {
	v := newEnv(t)
	cfg := testConfig("e1")
	cfg.WriteTimeout = 200 * time.Millisecond
	v.startEdge(cfg)
	c := newClient(t, v.gw, randomCanister(t))
	ct, cl := c.canister.Encode(), c.key().Token()
	rec := bus.SessionRecord{State: bus.SessionOpen, Canister: ct, Client: cl, Edge: "e1", Resumable: true,
		TokenHash: "x", OpenedAt: time.Now(), Partition: bus.Partition(ct, cl, v.h.Partitions)}
	val, _ := json.Marshal(rec)
	if _, err := v.h.Sessions.Create(context.Background(), bus.SessionKey(ct, cl), val); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "orphan detached", func() bool {
		r := v.session(c)
		return r != nil && r.State == bus.SessionDetached
	})
}

// waitFilled waits until the connection's replay has finished with nothing left buffered (well
// before GapTimeout would close it).
func waitFilled(t *testing.T, e *runningEdge, c *client) {
	t.Helper()
	testkit.WaitFor(t, 2*time.Second, "replay finished", func() bool {
		e.mu.RLock()
		cn := e.byKey[bus.SessionKey(c.canister.Encode(), c.key().Token())]
		e.mu.RUnlock()
		if cn == nil {
			return false
		}
		cn.dmu.Lock()
		defer cn.dmu.Unlock()
		return !cn.filling && len(cn.pending) == 0
	})
}

// A resume whose compare-and-set of the session record landed but whose answer was lost (a slow
// or electing KV leader) sees its own write on the retry and completes; it must not mistake its
// own new token for a wrong one.
func TestResumeSurvivesLostRecordWriteAnswer(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openResumable(t, v, e.url, 2)
	subj := outSubjectOfClient(c)
	dropSocket(t, v, c)
	p.publish(subj, 2, 0)
	var lost atomic.Bool
	lose := func() bool { return lost.CompareAndSwap(false, true) }
	e.testLosePutAnswer.Store(&lose)
	lastClient, code, reason := c.resume(e.url, 1)
	if code != 0 {
		t.Fatalf("resume closed %d %q", code, reason)
	}
	if !lost.Load() {
		t.Fatal("no record write answer was lost")
	}
	if lastClient != 2 {
		t.Fatalf("last_client_seq %d, want 2", lastClient)
	}
	if got, _ := c.next(); got != 2 {
		t.Fatalf("replay: got %d, want 2", got)
	}
}

// staleReplica answers reads of the sessions bucket with an entry set by the test (a replica that
// has not applied the latest writes), and like the bucket when none is set.
type staleReplica struct {
	jetstream.KeyValue
	entry atomic.Pointer[jetstream.KeyValueEntry]
}

func (r *staleReplica) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if e := r.entry.Load(); e != nil && (*e).Key() == key {
		return *e, nil
	}
	return r.KeyValue.Get(ctx, key)
}

// A replica that still holds the session record as it was before the client's last resume (its
// previous token) does not get the next resume refused with "wrong token": a refusal is checked
// with the bucket's leader.
func TestResumeIsNotRefusedByALaggingReplica(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	replica := &staleReplica{}
	e := v.startEdgeWith(testConfig("e1"), func(e *Edge) {
		e.testSessionReplica = func(kv jetstream.KeyValue) jetstream.KeyValue {
			replica.KeyValue = kv
			return replica
		}
	})
	c := openResumable(t, v, e.url, 1)
	before, err := v.h.Sessions.Get(context.Background(), bus.SessionKey(c.canister.Encode(), c.key().Token()))
	if err != nil {
		t.Fatal(err)
	}
	dropSocket(t, v, c)
	if _, code, reason := c.resume(e.url, 1); code != 0 {
		t.Fatalf("first resume closed %d %q", code, reason)
	}
	replica.entry.Store(&before) // the record with the token the first resume replaced
	dropSocket(t, v, c)
	if _, code, reason := c.resume(e.url, 1); code != 0 {
		t.Fatalf("resume refused on a lagging replica's record: %d %q", code, reason)
	}
}

// failReads makes the next n reads of ICWS_OUT fail as a NATS timeout would (n < 0: all of them).
func failReads(e *runningEdge, n int64) *atomic.Int64 {
	var calls atomic.Int64
	f := func() error {
		k := calls.Add(1)
		if n < 0 || k <= n {
			return errors.New("injected: nats: timeout")
		}
		return nil
	}
	e.testReadErr.Store(&f)
	return &calls
}

// expectResumed reads the frame after the handshake and requires it to be {icws_resumed}.
func expectResumed(t *testing.T, c *client) {
	t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, fr, err := c.ws.ReadMessage()
	if err != nil {
		t.Fatalf("no {icws_resumed} after the handshake: %v", err)
	}
	if _, err := protocol.DecodeResumed(fr); err != nil {
		t.Fatalf("first frame after the handshake is not {icws_resumed}: %x", fr)
	}
}

func sendResume(t *testing.T, c *client, url string, lastSeq uint64) {
	t.Helper()
	old := c.token
	c.dial(url, true)
	if err := c.ws.WriteMessage(websocket.BinaryMessage, c.resumeFrame(c.canister, old, lastSeq)); err != nil {
		t.Fatal(err)
	}
}

// One transient read error during the replay must not lose the resume answer, and a live
// message arriving afterwards must come after it.
func TestResumeSurvivesTransientReadError(t *testing.T) {
	v, p, e, c := startResumable(t)
	subj := outSubjectOfClient(c)
	for s := uint64(2); s <= 3; s++ {
		p.publish(subj, s, 0)
		c.next()
	}
	dropSocket(t, v, c)
	calls := failReads(e, 1)
	sendResume(t, c, e.url, 3)
	testkit.WaitFor(t, 5*time.Second, "the failed read retried", func() bool { return calls.Load() >= 2 })
	p.publish(subj, 4, 0)
	expectResumed(t, c)
	if s, _ := c.next(); s != 4 {
		t.Fatalf("after the resume answer got seq %d, want 4", s)
	}
}

// Read errors before the replay delay it; the replay that follows is complete.
func TestResumeReplayAfterTransientReadErrors(t *testing.T) {
	v, p, e, c := startResumable(t)
	subj := outSubjectOfClient(c)
	dropSocket(t, v, c)
	for s := uint64(2); s <= 5; s++ {
		p.publish(subj, s, 0)
	}
	failReads(e, 3)
	sendResume(t, c, e.url, 1)
	expectResumed(t, c)
	for want := uint64(2); want <= 5; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("replay: got %d, want %d", s, want)
		}
	}
}

// A client's messages stored out of sequence order (2, 4, 3, 5) are a complete history: the
// resume succeeds and delivers 3, 4, 5 in order.
func TestResumeOutOfOrderStream(t *testing.T) {
	v, p, e, c := startResumable(t)
	subj := outSubjectOfClient(c)
	p.publish(subj, 2, 0)
	if s, _ := c.next(); s != 2 {
		t.Fatal(s)
	}
	dropSocket(t, v, c)
	for _, s := range []uint64{4, 3, 5} {
		p.publish(subj, s, 0)
	}
	if _, code, reason := c.resume(e.url, 2); code != 0 {
		t.Fatalf("resume refused with %d %q although 3, 4, 5 are stored", code, reason)
	}
	for want := uint64(3); want <= 5; want++ {
		if s, _ := c.next(); s != want {
			t.Fatalf("got %d, want %d", s, want)
		}
	}
	p.publish(subj, 6, 0)
	if s, _ := c.next(); s != 6 {
		t.Fatalf("live: got %d, want 6", s)
	}
}

// With nothing stored for the client, a claimed last_seq above 0 is not resumable.
func TestResumeNothingStoredRejectsLastSeq(t *testing.T) {
	v := newEnv(t)
	e := v.startEdge(testConfig("e1"))
	// No pipeline: not even the OpenMessage is stored.
	c := newClient(t, v.gw, randomCanister(t))
	c.dial(e.url, true)
	c.open()
	testkit.WaitFor(t, 5*time.Second, "session open", func() bool { r := v.session(c); return r != nil && r.State == bus.SessionOpen })
	dropSocket(t, v, c)
	_, code, reason := c.resume(e.url, 7)
	if code != CloseNotResumable || !strings.Contains(reason, "above the highest stored sequence number 0") {
		t.Fatalf("close %d %q, want 4100 (last_seq above what was stored)", code, reason)
	}
}

// An edge whose lease lapsed once gets its live sessions detached by another edge; it takes them
// back instead of closing them after the grace period.
func TestLeaseLapseReclaimsLiveSession(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg1 := testConfig("e1")
	cfg1.ResumeGrace = 300 * time.Millisecond
	e1 := v.startEdge(cfg1)
	cfg2 := testConfig("e2")
	cfg2.ResumeGrace = 300 * time.Millisecond
	cfg2.LeaseSkew = 0
	v.startEdge(cfg2)
	c := openResumable(t, v, e1.url, 1)

	// e1 misses its renewals for a while (as during a NATS leader election).
	stop := make(chan struct{})
	lapsed := make(chan struct{})
	go func() {
		defer close(lapsed)
		val, _ := json.Marshal(bus.LeaseRecord{Holder: "e1", ExpiresAt: time.Now().Add(-5 * time.Second)})
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = v.h.Leases.Put(context.Background(), bus.EdgeLeaseKey("e1"), val)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	testkit.WaitFor(t, 5*time.Second, "detached by e2", func() bool {
		r := v.session(c)
		return r != nil && r.State == bus.SessionDetached
	})
	close(stop)
	<-lapsed
	testkit.WaitFor(t, 5*time.Second, "reclaimed by e1", func() bool {
		r := v.session(c)
		return r != nil && r.State == bus.SessionOpen && r.Edge == "e1" &&
			counter(t, e1.m.sweeps.WithLabelValues("reclaimed")) > 0
	})
	// Past the grace period the session is still open and relays; no close request went out.
	deadline := time.Now().Add(3 * cfg1.ResumeGrace)
	for time.Now().Before(deadline) {
		if r := v.session(c); r == nil || r.State == bus.SessionClosed {
			t.Fatalf("session closed while its socket is live: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n := len(v.inMessages(inSubjectOf(v, c)))
	c.send()
	testkit.WaitFor(t, 5*time.Second, "relayed", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == n+1 })
	for _, m := range v.inMessages(inSubjectOf(v, c)) {
		if m.kind == bus.KindClose {
			t.Fatalf("close request published for a live session: %+v", m)
		}
	}
}

// A resume asks the session's previous edge to let go and waits for its answer, unless that edge
// has missed a lease renewal: then nobody would answer, and the wait would only lengthen the
// silence of a client that left a hung edge.
func TestEdgeThatMissedItsRenewalIsNotWaitedFor(t *testing.T) {
	v := newEnv(t)
	cfg := testConfig("e1")
	cfg.LeaseTTL = 3 * time.Second // renewed every second: stale after two seconds without one
	e := v.startEdge(cfg)
	testkit.WaitFor(t, 10*time.Second, "e1's lease written", func() bool {
		_, err := v.h.Leases.Get(context.Background(), bus.EdgeLeaseKey("e1"))
		return err == nil
	})
	if e.edgeMissedRenewal(context.Background(), "e1") {
		t.Fatal("an edge that renews its lease looks stale")
	}
	if !e.edgeMissedRenewal(context.Background(), "e-unknown") {
		t.Fatal("an edge without a lease looks alive")
	}
	val, err := json.Marshal(bus.LeaseRecord{Holder: "e9", ExpiresAt: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.h.Leases.Put(context.Background(), bus.EdgeLeaseKey("e9"), val); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "e9's unrenewed lease seen as stale", func() bool { return e.edgeMissedRenewal(context.Background(), "e9") })
}
