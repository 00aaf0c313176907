package poller

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/cputime"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
)

// recordedIC answers ws_get_messages with replies recorded from the demo canister, a fresh copy
// each time as an HTTP client would return.
type recordedIC struct {
	gateway principal.Principal
	replies map[uint64][]byte
}

func (ic *recordedIC) Principal() principal.Principal { return ic.gateway }

func (ic *recordedIC) Query(_ context.Context, _ principal.Principal, _ string, arg []byte) ([]byte, error) {
	a, err := protocol.DecodeWsGetMessagesArgs(arg)
	if err != nil {
		return nil, err
	}
	r, ok := ic.replies[a.Nonce]
	if !ok {
		return nil, fmt.Errorf("no recorded reply for nonce %d", a.Nonce)
	}
	return bytes.Clone(r), nil
}

// recordBurst queues messages for clients in the demo canister of the replica simulator the way
// the bench's burst does (short texts, round-robin) and records the canister's ws_get_messages
// replies (50 messages each, with their real certificate and witness).
func recordBurst(b *testing.B, clients, messages int) *recordedIC {
	b.Helper()
	r, ws := testkit.StartWSReplica(b, replica.Config{}, testCanister, wscanister.DefaultConfig())
	ic, _ := testkit.GatewayClient(b, r.URL, nil)
	keys := make([]protocol.ClientKey, clients)
	for i := range keys {
		keys[i] = openClient(b, ic, uint64(i+1))
	}
	for i := range messages - clients { // each client got its OpenMessage already
		if err := ws.Send(keys[i%clients], fmt.Sprintf("burst message %d of %d", i, messages)); err != nil {
			b.Fatal(err)
		}
	}
	rec := &recordedIC{gateway: ic.Principal(), replies: map[uint64][]byte{}}
	ctx := context.Background()
	for nonce := uint64(0); nonce < uint64(messages); {
		arg, _ := protocol.EncodeWsGetMessagesArgs(protocol.CanisterWsGetMessagesArguments{Nonce: nonce})
		reply, err := ic.Query(ctx, testCanister, "ws_get_messages", arg)
		if err != nil {
			b.Fatal(err)
		}
		res, err := protocol.DecodeGetMessagesResult(reply)
		if err != nil || len(res.Messages) == 0 {
			b.Fatalf("nonce %d: %d messages, %v", nonce, len(res.Messages), err)
		}
		rec.replies[nonce] = reply
		nonce += uint64(len(res.Messages))
	}
	return rec
}

// BenchmarkPollPublish is the poller's per-message path for a burst of 1,000 messages to 20
// clients: each ws_get_messages reply (recorded from the demo canister, 50 messages with their
// certificate and witness) is decoded, turned into ICWS_OUT frames and published, waiting for the
// PubAcks, into a nats-server running in this process (its CPU counts: JetStream's storage is part
// of the gateway's cost in `icws all`). cpu-ns/msg is the process's CPU time per message.
func BenchmarkPollPublish(b *testing.B) {
	const clients, messages = 20, 1000
	rec := recordBurst(b, clients, messages)
	_, nc, js := testkit.StartBroker(b, bus.DefaultTopology())
	p, err := New(Config{ID: "bench"}, Deps{NC: nc, JS: js, IC: rec})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if p.h, err = bus.Open(ctx, js); err != nil {
		b.Fatal(err)
	}
	var published int
	var storedBytes, storedMsgs uint64
	stored := func() {
		info, err := p.h.Out.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		storedBytes += info.State.Bytes
		storedMsgs += info.State.Msgs
	}
	b.ResetTimer()
	meter := cputime.Start()
	for i := range b.N {
		// Another canister id each round, so JetStream stores the round instead of dropping it
		// as a duplicate of the last.
		var raw [10]byte
		binary.BigEndian.PutUint64(raw[2:], uint64(i))
		canister := principal.Principal{Raw: raw[:]}.Encode()
		for nonce := uint64(0); nonce < messages; {
			res, err := p.fetch(ctx, testCanister, nonce)
			if err != nil {
				b.Fatal(err)
			}
			n, _, err := p.publish(ctx, canister, 0, []answer{{res: res, msgs: res.Messages}})
			if err != nil || n != len(res.Messages) {
				b.Fatalf("published %d of %d: %v", n, len(res.Messages), err)
			}
			published += n
			nonce += uint64(len(res.Messages))
		}
		if (i+1)%20 == 0 {
			b.StopTimer()
			meter.Stop()
			stored()
			if err := p.h.Out.Purge(ctx); err != nil {
				b.Fatal(err)
			}
			meter.Start()
			b.StartTimer()
		}
	}
	b.StopTimer()
	meter.Report(b, messages, "msg")
	stored()
	if storedMsgs > 0 {
		// A client's frames of one reply share a stream message.
		b.ReportMetric(float64(storedBytes)/float64(published), "stored-B/msg")
		b.ReportMetric(float64(published)/float64(storedMsgs), "msg/stored")
	}
}
