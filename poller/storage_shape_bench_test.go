package poller

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/cputime"
)

// BenchmarkStorageShape measures what JetStream alone costs this process per delivered canister
// message (the embedded server, the publishing client's PubAcks and a live subscriber receiving
// every message), for the burst of BenchmarkPollPublish stored in three shapes:
//
//   - message: one stream message per canister message (its frame and the five icws headers, on
//     the client's subject), re-published to its live subject, as ICWS_OUT was first laid out;
//   - client: a client's frames of one reply as one stream message (bus.AppendOutFrame records,
//     one frame alone as itself), what the poller stores when each reply ends a run. The burst
//     here interleaves its 20 clients, so a reply of 50 messages holds 2-3 of each;
//   - run: a client's frames of a run of replies (ICWS_POLL_RUN_ANSWERS at its default, 4) as one
//     stream message, what the poller stores while it drains a backlog: 10 of each client;
//   - poll: one stream message per ws_get_messages reply (its certificate, tree and every message
//     once), re-published to one live subject per canister. Nothing in icws stores a poll this way;
//     the figure is what the NATS side of a delivered message would cost if it did
//     (docs/BENCHMARKS.md, "What storing a poll once would buy").
//
// The poller's own work (decoding a reply, cutting each message's witness) is not counted, nor,
// for "poll", the work an edge would then do per message.
func BenchmarkStorageShape(b *testing.B) {
	const clients, messages = 20, 1000
	runAnswers := DefaultConfig().RunAnswers
	rec := recordBurst(b, clients, messages)
	_, nc, js := testkit.StartBroker(b, bus.DefaultTopology())
	ctx := context.Background()

	// The frames and headers the poller stores for this burst, read back from ICWS_OUT.
	p, err := New(Config{ID: "bench"}, Deps{NC: nc, JS: js, IC: rec})
	if err != nil {
		b.Fatal(err)
	}
	if p.h, err = bus.Open(ctx, js); err != nil {
		b.Fatal(err)
	}
	var polls [][]byte
	canister := testCanister.Encode()
	// storeBurst publishes the burst as the poller does, in runs of answers replies, and reads
	// back what ICWS_OUT then holds.
	storeBurst := func(answers int) []*jetstream.RawStreamMsg {
		if err := p.h.Out.Purge(ctx); err != nil {
			b.Fatal(err)
		}
		first := uint64(1)
		if info, err := p.h.Out.Info(ctx); err == nil {
			first = info.State.LastSeq + 1
		}
		var run []answer
		for nonce := uint64(0); nonce < messages; {
			res, err := p.fetch(ctx, testCanister, nonce)
			if err != nil {
				b.Fatal(err)
			}
			if answers == 1 {
				polls = append(polls, rec.replies[nonce])
			}
			nonce += uint64(len(res.Messages))
			if run = append(run, answer{res: res, msgs: res.Messages}); len(run) == answers || nonce >= messages {
				if _, _, err := p.publish(ctx, canister, 0, run); err != nil {
					b.Fatal(err)
				}
				run = nil
			}
		}
		info, err := p.h.Out.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		var stored []*jetstream.RawStreamMsg
		for seq := first; seq <= info.State.LastSeq; seq++ {
			m, err := p.h.Out.GetMsg(ctx, seq)
			if err != nil {
				b.Fatalf("read back message %d: %v", seq, err)
			}
			stored = append(stored, m)
		}
		return stored
	}
	inRuns := storeBurst(runAnswers)
	stored := storeBurst(1)
	var frames []*jetstream.RawStreamMsg
	for _, m := range stored {
		split, err := bus.DecodeOutFrames(nil, m.Header, m.Data)
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range split {
			h := nats.Header{}
			for k, v := range m.Header {
				h[k] = slices.Clone(v)
			}
			h.Del(bus.HeaderFrames)
			h.Set(bus.HeaderSeq, strconv.FormatUint(f.Seq, 10))
			h.Set(bus.HeaderMsgID, fmt.Sprintf("%s.%d", canister, len(frames)))
			frames = append(frames, &jetstream.RawStreamMsg{Subject: m.Subject, Header: h, Data: f.Frame})
		}
	}
	if len(frames) != messages {
		b.Fatalf("%d frames stored, want %d", len(frames), messages)
	}
	if err := p.h.Out.Purge(ctx); err != nil {
		b.Fatal(err)
	}
	perPoll := messages / len(polls)

	pollStream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        "BENCH_POLLS",
		Subjects:    []string{"bench.poll.>"},
		Storage:     jetstream.FileStorage,
		MaxAge:      10 * time.Minute,
		Duplicates:  2 * time.Minute,
		MaxBytes:    512 << 20,
		Discard:     jetstream.DiscardNew,
		AllowDirect: true,
		RePublish:   &jetstream.RePublish{Source: "bench.poll.>", Destination: "bench.polllive.>"},
	})
	if err != nil {
		b.Fatal(err)
	}

	var roundsSoFar int
	for _, shape := range []struct {
		name      string
		live      string
		stream    jetstream.Stream
		perRound  int // live messages per burst
		roundMsgs func(round int) []*nats.Msg
	}{
		{
			name: "message", live: "icws.live.>", stream: p.h.Out, perRound: messages,
			roundMsgs: func(round int) []*nats.Msg { return forRound(frames, round) },
		},
		{
			name: "client", live: "icws.live.>", stream: p.h.Out, perRound: len(stored),
			roundMsgs: func(round int) []*nats.Msg { return forRound(stored, round) },
		},
		{
			name: "run", live: "icws.live.>", stream: p.h.Out, perRound: len(inRuns),
			roundMsgs: func(round int) []*nats.Msg { return forRound(inRuns, round) },
		},
		{
			name: "poll", live: "bench.polllive.>", stream: pollStream, perRound: len(polls),
			roundMsgs: func(round int) []*nats.Msg {
				out := make([]*nats.Msg, len(polls))
				for i, reply := range polls {
					out[i] = &nats.Msg{
						Subject: "bench.poll." + canister,
						Header:  nats.Header{bus.HeaderMsgID: {fmt.Sprintf("%s.%d.%d", canister, round, i)}},
						Data:    reply,
					}
				}
				return out
			},
		},
	} {
		b.Run(shape.name, func(b *testing.B) {
			delivered := make(chan struct{}, 1)
			var received int
			sub, err := nc.Subscribe(shape.live, func(*nats.Msg) {
				if received++; received%shape.perRound == 0 {
					delivered <- struct{}{}
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Unsubscribe()
			// The benchmark function runs several times: each round's Nats-Msg-Ids are new to the
			// stream, or it would take them for duplicates.
			rounds := make([][]*nats.Msg, b.N)
			for i := range rounds {
				rounds[i] = shape.roundMsgs(roundsSoFar + i)
			}
			roundsSoFar += b.N
			b.ResetTimer()
			meter := cputime.Start()
			for i := range b.N {
				// The poller's rhythm: a poll's messages published asynchronously, then its acks.
				msgs := rounds[i]
				step := perPoll // stream messages of one reply
				switch shape.name {
				case "client":
					step = (len(msgs) + len(polls) - 1) / len(polls)
				case "run":
					runs := (len(polls) + runAnswers - 1) / runAnswers
					step = (len(msgs) + runs - 1) / runs
				case "poll":
					step = 1
				}
				for start := 0; start < len(msgs); start += step {
					batch := msgs[start:min(start+step, len(msgs))]
					futures := make([]jetstream.PubAckFuture, len(batch))
					for j, m := range batch {
						if futures[j], err = js.PublishMsgAsync(m); err != nil {
							b.Fatal(err)
						}
					}
					for _, f := range futures {
						select {
						case ack := <-f.Ok():
							if ack.Duplicate {
								b.Fatalf("round %d: JetStream took a message for a duplicate", i)
							}
						case err := <-f.Err():
							b.Fatal(err)
						}
					}
				}
				select {
				case <-delivered:
				case <-time.After(time.Minute):
					b.Fatalf("round %d: %d live messages received", i, received)
				}
				if (i+1)%20 == 0 {
					b.StopTimer()
					meter.Stop()
					if err := shape.stream.Purge(ctx); err != nil {
						b.Fatal(err)
					}
					meter.Start()
					b.StartTimer()
				}
			}
			b.StopTimer()
			meter.Report(b, messages, "msg")
		})
	}
}

// forRound copies msgs with Nats-Msg-Ids of their own for round: the benchmark function runs
// several times, and the stream would take messages it stored before for duplicates.
func forRound(msgs []*jetstream.RawStreamMsg, round int) []*nats.Msg {
	out := make([]*nats.Msg, len(msgs))
	suffix := "." + strconv.Itoa(round)
	for i, m := range msgs {
		h := nats.Header{}
		for k, v := range m.Header {
			h[k] = slices.Clone(v)
		}
		h.Set(bus.HeaderMsgID, h.Get(bus.HeaderMsgID)+suffix)
		out[i] = &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}
	}
	return out
}
