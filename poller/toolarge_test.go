package poller

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

// A message larger than ICWS_OUT accepts is skipped (and counted) instead of stalling the canister.
func TestTooLargeMessageIsSkipped(t *testing.T) {
	e := startEnv(t)
	// A small stream limit keeps the oversized message small enough for a quick test.
	const limit = 64 << 10
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := e.h.Out.CachedInfo().Config
	cfg.MaxMsgSize = limit
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	c := newFakeCanister(testGateway)
	c.push(2, testClient(1))
	c.mu.Lock()
	huge, err := protocol.EncodeWebsocketMessageCBOR(protocol.WebsocketMessage{
		ClientKey: testClient(2), SequenceNum: 1, Timestamp: uint64(time.Now().UnixNano()),
		Content: bytes.Repeat([]byte{'x'}, limit),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.seqs[testClient(2).Token()] = 1
	c.queue = append(c.queue, protocol.CanisterOutputMessage{ClientKey: testClient(2), Key: protocol.MessageKey(testGateway, 2), Content: huge})
	c.mu.Unlock()
	c.push(2, testClient(1))

	rp := e.startPoller("p1", fastConfig(testCanister.Encode()), newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "the 4 small messages", func() bool { return e.outCount() >= 4 })
	testkit.WaitFor(t, 5*time.Second, "cursor past the large message", func() bool { return cursorOf(t, e).NextNonce == 5 })
	want := snapshot(c)
	checkStream(t, e, append(want[:2:2], want[3:]...), zeroEpoch)
	if got := testkit.MetricValue(t, rp.p.m.errors.WithLabelValues(errKindTooLarge)); got != 1 {
		t.Fatalf("too_large errors = %v, want 1", got)
	}
}
