package poller

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

func TestCheckAnswer(t *testing.T) {
	key := func(nonce uint64) string { return protocol.MessageKey(testGateway, nonce) }
	msgs := func(keys ...string) []protocol.CanisterOutputMessage {
		out := make([]protocol.CanisterOutputMessage, len(keys))
		for i, k := range keys {
			out[i] = protocol.CanisterOutputMessage{Key: k}
		}
		return out
	}
	p := &Poller{cfg: DefaultConfig()}
	for _, tc := range []struct {
		name string
		res  protocol.CanisterOutputCertifiedMessages
		want string // "" for accepted
	}{
		{"consecutive", protocol.CanisterOutputCertifiedMessages{Cert: make([]byte, 4096), Messages: msgs(key(7), key(8), key(9))}, ""},
		{"a gap", protocol.CanisterOutputCertifiedMessages{Messages: msgs(key(7), key(9))}, ""},
		{"empty", protocol.CanisterOutputCertifiedMessages{}, ""},
		{"certificate at the limit", protocol.CanisterOutputCertifiedMessages{Cert: make([]byte, 64<<10)}, ""},
		{"certificate above the limit", protocol.CanisterOutputCertifiedMessages{Cert: make([]byte, 64<<10+1)}, "ICWS_POLL_MAX_CERT_BYTES"},
		{"a key without a nonce", protocol.CanisterOutputCertifiedMessages{Messages: msgs(key(1), "no-nonce")}, "missing '_'"},
		{"a key too long", protocol.CanisterOutputCertifiedMessages{Messages: msgs(strings.Repeat("a", 200) + "_1")}, "a key of 202 bytes"},
		{"the last nonce there is", protocol.CanisterOutputCertifiedMessages{Messages: msgs(key(math.MaxUint64))}, "leaves no next nonce"},
		{"a nonce going back", protocol.CanisterOutputCertifiedMessages{Messages: msgs(key(5), key(4))}, "nonce 4 after 5"},
		{"a nonce repeated", protocol.CanisterOutputCertifiedMessages{Messages: msgs(key(5), key(5))}, "nonce 5 after 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.checkAnswer(tc.res)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// Every frame of an answer carries its certificate: one above ICWS_POLL_MAX_CERT_BYTES fails the
// poll and nothing of it is published, and frames adding up to more than
// ICWS_POLL_PUBLISH_BATCH_BYTES are published in parts, all of them and in order.
func TestAnswersStayWithinTheirByteLimits(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	c.certPad = 70 << 10
	c.push(30, testClient(1), testClient(2))
	ic := newIC(c)
	cfg := fastConfig(testCanister.Encode())
	cfg.PublishBatchBytes = 64 << 10
	e.startPoller("p1", cfg, ic, false)
	testkit.WaitFor(t, 10*time.Second, "polls refused", func() bool { return ic.queries.Load() >= 3 })
	if n := e.outCount(); n != 0 {
		t.Fatalf("%d messages published from answers with an oversized certificate", n)
	}

	c.mu.Lock()
	c.certPad = 10 << 10 // frames of about 20 KiB: three to a part
	c.mu.Unlock()
	testkit.WaitFor(t, 10*time.Second, "30 messages published", func() bool { return e.outCount() == 30 })
	checkStream(t, e, snapshot(c), zeroEpoch)
}
