package icclient

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/icws/icws/replica"
)

// BenchmarkQueryLargeReply is a small query with a reply the size of a full ws_get_messages
// answer (50 messages of about 1.7 KB with their certificate and tree): the poller's per-poll
// cost on the gateway side is reading, decoding and checking the node signature of that answer.
// B/op includes the in-process replica's own allocations.
func BenchmarkQueryLargeReply(b *testing.B) {
	e := startReplica(b, replica.Config{})
	c := newTestClient(b, e)
	const size = 96 << 10
	arg := binary.BigEndian.AppendUint32(nil, size)
	ctx := context.Background()
	if _, err := c.Query(ctx, testCanisterID, "fill", arg); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		got, err := c.Query(ctx, testCanisterID, "fill", arg)
		if err != nil || len(got) != size {
			b.Fatalf("query: %d bytes, %v", len(got), err)
		}
	}
}
