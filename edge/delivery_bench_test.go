package edge

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit/cputime"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// frameCounter counts the WebSocket frames the edge writes to one client, reading the raw socket
// (server frames are unmasked) so the client side costs a read per many frames and nothing more.
func frameCounter(conn net.Conn, frames *atomic.Int64) {
	r := bufio.NewReaderSize(conn, 64<<10)
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:2]); err != nil {
			return
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(r, hdr[:2]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(r, hdr[:8]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(hdr[:8])
		}
		if _, err := r.Discard(int(n)); err != nil {
			return
		}
		frames.Add(1)
	}
}

// BenchmarkLiveDelivery is the edge's per-message delivery path for 20 sessions, 50 messages each
// per round, frames of 1,800 bytes (a witness frame of the demo canister):
//   - live: messages published with core NATS on the sessions' live subjects with the headers a
//     RePublish adds: the nats-server routing, the edge's subscription, ordering, send queue and
//     WebSocket write;
//   - stored: the same published to ICWS_OUT asynchronously as the poller does (PubAcks awaited),
//     so JetStream stores each and re-publishes it: the whole path from the poller's publish to
//     the client's socket.
//
// cpu-ns/msg is the CPU time of this process (nats-server, edge, the publisher and the raw socket
// readers) per delivered message.
func BenchmarkLiveDelivery(b *testing.B) {
	for _, stored := range []bool{false, true} {
		name := "live"
		if stored {
			name = "stored"
		}
		b.Run(name, func(b *testing.B) { liveDelivery(b, stored) })
	}
}

func liveDelivery(b *testing.B, stored bool) {
	const sessions, perRound, frameBytes = 20, 50, 1800
	v := newEnv(b)
	v.startPipeline(false)
	e := v.startEdge(testConfig("delivery"))
	clients := make([]*client, sessions)
	var frames atomic.Int64
	for i := range clients {
		clients[i] = openedClient(b, v, e.url, false)
		conn := clients[i].ws.UnderlyingConn()
		_ = conn.SetReadDeadline(time.Time{}) // the harness's 10 s read deadline
		go frameCounter(conn, &frames)
	}
	// What the publisher needs is made once: the driver should cost little next to the edge.
	type target struct{ out, live, msgID string }
	targets := make([]target, len(clients))
	for i, c := range clients {
		out := outSubjectOfClient(c)
		targets[i] = target{out: out, live: bus.LiveSubject(c.canister.Encode(), c.key().Token()), msgID: out + "."}
	}
	frame := outMsg(v.gw, targets[0].out, 2, frameBytes).Data
	seq := uint64(1)
	ctx := context.Background()
	var futures []jetstream.PubAckFuture
	round := func() {
		for range perRound {
			seq++
			seqText := strconv.FormatUint(seq, 10)
			for _, t := range targets {
				m := &nats.Msg{Subject: t.out, Data: frame, Header: nats.Header{
					bus.HeaderSeq:   {seqText},
					bus.HeaderNonce: {seqText},
					bus.HeaderMsgID: {t.msgID + seqText},
				}}
				if stored {
					f, err := v.js.PublishMsgAsync(m)
					if err != nil {
						b.Fatal(err)
					}
					futures = append(futures, f)
					continue
				}
				m.Subject = t.live
				m.Header["Nats-Stream"] = []string{bus.StreamOut}
				m.Header["Nats-Subject"] = []string{t.out}
				m.Header["Nats-Sequence"] = []string{seqText}
				m.Header["Nats-Time-Stamp"] = []string{"2026-11-29T22:12:19.0191622Z"}
				m.Header["Nats-Last-Sequence"] = []string{seqText}
				if err := v.nc.PublishMsg(m); err != nil {
					b.Fatal(err)
				}
			}
		}
		if stored {
			select {
			case <-v.js.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				b.Fatal("PubAcks not received")
			}
			for _, f := range futures {
				select {
				case err := <-f.Err():
					b.Fatalf("publish %s: %v", f.Msg().Header.Get(bus.HeaderMsgID), err)
				default:
				}
			}
			futures = futures[:0]
		}
		want := int64((seq - 1) * sessions)
		deadline := time.Now().Add(30 * time.Second)
		for frames.Load() < want {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d frames delivered (slow-client closes %v, gap fills %v, messages read from the stream %v)", frames.Load(), want,
					counter(b, e.m.overflows), counter(b, e.m.gapFills), counter(b, e.m.replayed))
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	round() // warm-up: buffers, writer goroutines, the stream's first block
	_ = ctx
	b.ResetTimer()
	meter := cputime.Start()
	for range b.N {
		round()
	}
	meter.Report(b, sessions*perRound, "msg")
	if stored {
		info, err := v.h.Out.Info(ctx)
		if err == nil && info.State.Msgs > 0 {
			b.ReportMetric(float64(info.State.Bytes)/float64(info.State.Msgs), "stored-B/msg")
		}
	}
	b.ReportMetric(float64(counter(b, e.m.bytesOut))/float64(counter(b, e.m.framesOut)), "B/frame")

}
