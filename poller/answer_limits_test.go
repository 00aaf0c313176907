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

// A canister that claims more is queued than it gives is polled at ICWS_POLL_INTERVAL like a
// drained one, not in a busy loop: one that answers nothing new, and one that answers its first
// messages whatever is asked (which looks like a queue reset at every poll).
func TestCanistersClaimingMoreAreNotPolledInABusyLoop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lie     func(c *fakeCanister)
		stored  uint64 // stored before the lie shows
		queries int64  // at most this many queries per poll, for four polls
	}{
		{"nothing new", func(c *fakeCanister) { c.push(5, testClient(1)); c.neverEnds = true }, 5, 1},
		// The poll, the fetch from nonce 0 after the "reset", and a run's next fetch.
		{"the same messages", func(c *fakeCanister) {
			c.push(100, testClient(1))
			first50, err := c.answer(0)
			if err != nil {
				t.Fatal(err)
			}
			c.reply = func(uint64) []byte { return first50 }
		}, 50, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t)
			c := newFakeCanister(testGateway)
			tc.lie(c)
			ic := newIC(c)
			cfg := fastConfig(testCanister.Encode())
			cfg.Interval = 50 * time.Millisecond
			e.startPoller("p", cfg, ic, false)
			testkit.WaitFor(t, 10*time.Second, "the first messages stored", func() bool { return e.outCount() == tc.stored })
			start, before := time.Now(), ic.queries.Load()
			testkit.WaitFor(t, 10*time.Second, "four more polls", func() bool { return ic.queries.Load() >= before+4*tc.queries })
			// A busy loop makes these queries within milliseconds; waiting, the fourth poll starts
			// three intervals after the first, which may have started just before the count did.
			if took := time.Since(start); took < 2*cfg.Interval {
				t.Fatalf("%d queries within %s (interval %s)", 4*tc.queries, took, cfg.Interval)
			}
		})
	}
}
