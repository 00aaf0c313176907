package poller

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
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

// Through a running poller: 60 messages for three clients become one stream message per client
// and answer, each client's frames in order.
func TestStreamHoldsOneMessagePerClientAndAnswer(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	clients := []protocol.ClientKey{testClient(1), testClient(2), testClient(3)}
	c.push(60, clients...) // answers of 50 and 10 messages
	e.startPoller("p", fastConfig(testCanister.Encode()), newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "60 messages", func() bool { return e.outCount() == 60 })
	checkStream(t, e, snapshot(c), zeroEpoch)
	stored := map[uint64]bool{}
	for _, m := range e.outMsgs() {
		stored[uint64(m.Frames)] = true
	}
	info, err := e.h.Out.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 6 {
		t.Fatalf("ICWS_OUT holds %d stream messages for 3 clients and 2 answers, want 6 (frames per message: %v)", info.State.Msgs, stored)
	}
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
