package poller

import (
	"testing"

	"github.com/aviate-labs/agent-go/candid"

	"github.com/icws/icws/protocol"
)

func candidMarshal(v any) ([]byte, error) { return candid.Marshal([]any{v}) }

func BenchmarkDecodeGetMessages50(b *testing.B) {
	c := newFakeCanister(testGateway)
	c.push(50, testClient(1), testClient(2))
	reply, err := c.answer(0)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := protocol.DecodeGetMessagesResult(reply); err != nil {
			b.Fatal(err)
		}
	}
}
