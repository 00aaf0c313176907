package poller

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A client's frames of one ws_get_messages answer are stored as one ICWS_OUT message, in the
// order of each client's first frame; the answer published again yields the same Nats-Msg-Ids.
func TestFramesOfOneClientAreGroupedPerAnswer(t *testing.T) {
	frame := func(client string, seq uint64) []byte {
		return bytes.Repeat([]byte(client), 42)[:40+int(seq)%3]
	}
	// A1 B1 A2 B2 A3 C1, then A4 A5 A6 with a limit that fits two frames of A per message.
	type in struct {
		client string
		seq    uint64
	}
	answer := []in{{"a", 1}, {"b", 1}, {"a", 2}, {"b", 2}, {"a", 3}, {"c", 1}, {"a", 4}, {"a", 5}}
	build := func(limit int) []string {
		part := outPart{canister: "cid", epoch: "0", limit: limit}
		for i, m := range answer {
			id := clientKeyID{principal: m.client}
			start := len(part.arena)
			part.arena = append(part.arena, frame(m.client, m.seq)...)
			part.add(id, m.client, outEntry{seq: m.seq, nonce: uint64(i), key: "gw_" + strconv.Itoa(i)}, start)
		}
		if part.frames != len(answer) {
			t.Fatalf("part counts %d frames, want %d", part.frames, len(answer))
		}
		var got []string
		for _, msg := range part.messages() {
			frames, err := bus.DecodeOutFrames(nil, msg.Header, msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			seqs := []string{}
			for _, f := range frames {
				client := msg.Header.Get(bus.HeaderClientKey)
				if !bytes.Equal(f.Frame, frame(client, f.Seq)) {
					t.Fatalf("%s %d: frame %q", client, f.Seq, f.Frame)
				}
				seqs = append(seqs, strconv.FormatUint(f.Seq, 10))
			}
			if msg.Subject != bus.OutSubject("cid", msg.Header.Get(bus.HeaderClientKey)) {
				t.Fatalf("subject %s for client %s", msg.Subject, msg.Header.Get(bus.HeaderClientKey))
			}
			got = append(got, msg.Header.Get(bus.HeaderClientKey)+":"+strings.Join(seqs, ",")+" "+msg.Header.Get(bus.HeaderMsgID))
		}
		return got
	}
	for _, tc := range []struct {
		limit int
		want  []string // client:seqs, then the message's first nonce in its Nats-Msg-Id
	}{
		{limit: 1 << 20, want: []string{"a:1,2,3,4,5 cid.gw_0.7.", "b:1,2 cid.gw_1.3.", "c:1 cid.gw_5."}},
		{limit: 130, want: []string{"a:1,2 cid.gw_0.2.", "b:1,2 cid.gw_1.3.", "a:3,4 cid.gw_4.6.", "c:1 cid.gw_5.", "a:5 cid.gw_7."}},
	} {
		got := build(tc.limit)
		if len(got) != len(tc.want) {
			t.Fatalf("limit %d: %d messages %q, want %d", tc.limit, len(got), got, len(tc.want))
		}
		for i := range got {
			if !strings.HasPrefix(got[i], tc.want[i]) {
				t.Fatalf("limit %d: message %d is %q, want it to start with %q", tc.limit, i, got[i], tc.want[i])
			}
		}
		if again := build(tc.limit); strings.Join(again, "|") != strings.Join(got, "|") {
			t.Fatalf("limit %d: the same answer built %q, then %q", tc.limit, got, again)
		}
	}
}

// Through a running poller: 160 messages for three clients (answers of 50, 49, 49 and 12 new
// messages, each asking for the previous answer's last again) become one stream message per
// client and run of answers, each client's frames in order.
func TestStreamHoldsOneMessagePerClientAndRunOfAnswers(t *testing.T) {
	for _, tc := range []struct {
		runAnswers int
		want       uint64 // stream messages
	}{
		{runAnswers: 1, want: 12}, // each answer on its own: 3 clients × 4 answers
		{runAnswers: 2, want: 6},
		{runAnswers: 4, want: 3},
		{runAnswers: 8, want: 3}, // the queue ends first
	} {
		t.Run("run of "+strconv.Itoa(tc.runAnswers), func(t *testing.T) {
			e := startEnv(t)
			c := newFakeCanister(testGateway)
			clients := []protocol.ClientKey{testClient(1), testClient(2), testClient(3)}
			c.push(160, clients...)
			cfg := fastConfig(testCanister.Encode())
			cfg.RunAnswers = tc.runAnswers
			ic := newIC(c)
			e.startPoller("p", cfg, ic, false)
			testkit.WaitFor(t, 10*time.Second, "160 messages", func() bool { return cursorOf(t, e).NextNonce == 160 })
			checkStream(t, e, snapshot(c), zeroEpoch)
			info, err := e.h.Out.Info(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != tc.want {
				t.Fatalf("ICWS_OUT holds %d stream messages, want %d", info.State.Msgs, tc.want)
			}
			if q := ic.queriesOf(testCanister.Encode()); q < 4 {
				t.Fatalf("%d queries for 160 messages in answers of at most 50", q)
			}
		})
	}
}

// A run stops at an answer that does not go on from the one before; what the run held is stored,
// and the next poll finds what happened from the cursor: here the canister was reset (upgraded)
// between the first answer and the next.
func TestRunStopsWhereTheQueueWasReset(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(80, testClient(1), testClient(2))
	old := snapshot(c)[:50]
	var once sync.Once
	c.fail = func(nonce uint64) error {
		if nonce == 49 { // the run's second fetch: the upgrade lands just before it (c.mu is held)
			once.Do(func() {
				c.queue, c.first, c.seqs = nil, 0, map[string]uint64{}
				c.gen++
				c.mu.Unlock()
				c.push(7, testClient(3))
				c.mu.Lock()
			})
		}
		return nil
	}
	e.startPoller("p", fastConfig(testCanister.Encode()), newIC(c), false)
	expectResynced(t, e, c, old, 7)
}

// A failed fetch ends a run without losing it: the answers before it are stored, and the next poll
// asks again from the cursor.
func TestRunStopsAtAFailedFetch(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(120, testClient(1), testClient(2))
	failures := 0
	c.fail = func(nonce uint64) error {
		if nonce == 98 && failures < 2 { // the third answer of the first run, twice
			failures++
			return errors.New("replica unavailable")
		}
		return nil
	}
	e.startPoller("p", fastConfig(testCanister.Encode()), newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "120 messages", func() bool { return cursorOf(t, e).NextNonce == 120 })
	checkStream(t, e, snapshot(c), zeroEpoch)
	c.mu.Lock()
	defer c.mu.Unlock()
	if failures != 2 {
		t.Fatalf("%d failed fetches, want 2", failures)
	}
}

// A run whose publish failed is published again as the same run, capped at its last message
// however the queue grew meanwhile, so JetStream drops what it stored already: every message is
// stored once.
func TestARetriedRunIsStoredOnce(t *testing.T) {
	for _, runAnswers := range []int{1, 4} {
		t.Run("run of "+strconv.Itoa(runAnswers), func(t *testing.T) {
			e := startEnv(t)
			c := newFakeCanister(testGateway)
			clients := []protocol.ClientKey{testClient(1), testClient(2), testClient(3)}
			c.push(120, clients...) // answers of 50, 49 and 21 new messages
			cfg := fastConfig(testCanister.Encode())
			cfg.RunAnswers = runAnswers
			// The first publish stores two stream messages, then fails; the queue grows before
			// the retry.
			js := &failingPublishes{after: 2, onFail: func() { c.push(40, clients...) }}
			e.startPollerThrough("p", cfg, newIC(c), js.wrap)
			testkit.WaitFor(t, 10*time.Second, "160 messages", func() bool { return cursorOf(t, e).NextNonce == 160 })
			checkStream(t, e, snapshot(c), zeroEpoch)
		})
	}
}

// A poller that loses its lease while fetching a run publishes nothing of it.
func TestNothingIsPublishedOnceTheLeaseIsLostMidRun(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(80, testClient(1), testClient(2))
	var lost atomic.Bool
	var rp *runningPoller
	started := make(chan struct{})
	c.fail = func(nonce uint64) error {
		if nonce == 49 { // the run's second fetch
			<-started
			lost.Store(true)
			rp.cancel() // as when the lease is lost
			return context.Canceled
		}
		return nil
	}
	js := &failingPublishes{after: -1, lost: &lost}
	rp = e.startPollerThrough("p", fastConfig(testCanister.Encode()), newIC(c), js.wrap)
	close(started)
	testkit.WaitFor(t, 10*time.Second, "the lease lost", lost.Load)
	rp.stop(t)
	if n := js.late.Load(); n != 0 {
		t.Fatalf("%d stream messages published after the lease was lost", n)
	}
	if n := e.outCount(); n != 0 {
		t.Fatalf("%d messages stored from a run fetched while the lease was lost", n)
	}
}

// The messages of a run's first answer wait for the fetches after it at most ICWS_POLL_RUN_WAIT:
// a fetch that hangs is abandoned, and asked again by the next poll.
func TestMessagesInHandWaitAtMostTheRunWait(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.push(80, testClient(1), testClient(2))
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	c.fail = func(nonce uint64) error {
		if nonce == 49 {
			<-release // the IC does not answer this query until the first answer's messages are stored
		}
		return nil
	}
	cfg := fastConfig(testCanister.Encode())
	cfg.RunWait = 50 * time.Millisecond
	cfg.Timeout = time.Minute // the run's wait, not the query's timeout, ends the hanging fetch
	e.startPoller("p", cfg, newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "the first answer's messages stored while the next fetch hangs", func() bool { return e.outCount() >= 50 })
	free()
	testkit.WaitFor(t, 10*time.Second, "80 messages", func() bool { return cursorOf(t, e).NextNonce == 80 })
	checkStream(t, e, snapshot(c), zeroEpoch)
}

// failingPublishes lets the first after asynchronous publishes through, then fails one and the
// synchronous re-publish after it (after < 0: never); it counts publishes once lost is set.
type failingPublishes struct {
	jetstream.JetStream
	mu      sync.Mutex
	after   int
	failing bool
	onFail  func()
	lost    *atomic.Bool
	late    atomic.Int64
}

func (f *failingPublishes) wrap(js jetstream.JetStream) jetstream.JetStream {
	f.JetStream = js
	return f
}

func (f *failingPublishes) fail() bool {
	if f.lost != nil && f.lost.Load() {
		f.late.Add(1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.after < 0:
		return false
	case f.after > 0:
		f.after--
		return false
	}
	f.after, f.failing = -1, true
	if f.onFail != nil {
		f.onFail()
	}
	return true
}

func (f *failingPublishes) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if f.fail() {
		return nil, errors.New("publish failed (test)")
	}
	return f.JetStream.PublishMsgAsync(m, opts...)
}

func (f *failingPublishes) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if f.lost != nil && f.lost.Load() {
		f.late.Add(1)
	}
	f.mu.Lock()
	failing := f.failing
	f.failing = false
	f.mu.Unlock()
	if failing {
		return nil, errors.New("publish failed (test)")
	}
	return f.JetStream.PublishMsg(ctx, m, opts...)
}

// A canister whose sequence numbers for one client do not rise within an answer (a key reopened,
// a repeated or zero number) gets a new group at each break, so only the frames that break the
// order are refused by edges, not the ones stored beside them.
func TestGroupsBreakWhereSequenceNumbersDoNotRise(t *testing.T) {
	for _, tc := range []struct {
		seqs []uint64
		want string // decodable groups' sequence numbers; x: a message edges refuse
	}{
		{seqs: []uint64{5, 6, 1, 2}, want: "5,6|1,2"},
		{seqs: []uint64{0, 1, 2}, want: "x|1,2"},
		{seqs: []uint64{3, 3, 4}, want: "3|3,4"},
		{seqs: []uint64{1, 0, 2}, want: "1|x|2"},
	} {
		part := outPart{canister: "cid", epoch: "0", limit: 1 << 20}
		for i, s := range tc.seqs {
			start := len(part.arena)
			part.arena = append(part.arena, "frame"+strconv.Itoa(i)...)
			part.add(clientKeyID{principal: "a"}, "a", outEntry{seq: s, nonce: uint64(i), key: "gw_" + strconv.Itoa(i)}, start)
		}
		var got []string
		for _, m := range part.messages() {
			frames, err := bus.DecodeOutFrames(nil, m.Header, m.Data)
			if err != nil {
				got = append(got, "x")
				continue
			}
			var seqs []string
			for _, f := range frames {
				seqs = append(seqs, strconv.FormatUint(f.Seq, 10))
			}
			got = append(got, strings.Join(seqs, ","))
		}
		if strings.Join(got, "|") != tc.want {
			t.Errorf("sequence numbers %v stored as %q, want %q", tc.seqs, strings.Join(got, "|"), tc.want)
		}
	}
}
