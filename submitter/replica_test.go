package submitter

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/nats-io/nats.go"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
)

var demoCanister = principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")

type demoEnv struct {
	can *wscanister.Canister
	ic  *icclient.Client
	gw  principal.Principal
}

func startDemoReplica(t testing.TB, latency time.Duration) *demoEnv {
	t.Helper()
	r, can := testkit.StartWSReplica(t, replica.Config{Logger: testkit.Logger(t, slog.LevelWarn), UpdateLatency: latency}, demoCanister, wscanister.DefaultConfig())
	ic, gw := testkit.GatewayClient(t, r.URL, testkit.Logger(t, slog.LevelWarn))
	return &demoEnv{can: can, ic: ic, gw: gw}
}

// demoClient is a client of the demo canister with its signed envelopes, as an edge publishes them.
type demoClient struct {
	id  identity.Identity
	key protocol.ClientKey
	tc  testClient
}

func newDemoClient(t testing.TB, nonce uint64) demoClient {
	id := testkit.NewIdentity(t)
	k := protocol.ClientKey{ClientPrincipal: id.Sender(), ClientNonce: nonce}
	return demoClient{id: id, key: k, tc: testClient{key: k, token: k.Token()}}
}

// session is the open envelope, n message envelopes and a close request.
func (c demoClient) session(t testing.TB, pub *publisher, gw principal.Principal, n int) []*nats.Msg {
	exp := time.Now().Add(4 * time.Minute)
	open := testkit.SignedCall(t, c.id, demoCanister, "ws_open",
		testkit.CandidArgs(t, protocol.CanisterWsOpenArguments{ClientNonce: c.key.ClientNonce, GatewayPrincipal: gw}), testkit.WithExpiry(exp))
	out := []*nats.Msg{pub.msg(demoCanister, c.tc, bus.KindOpen, 0, open)}
	for i := 1; i <= n; i++ {
		app := testkit.CandidArgs(t, protocol.AppMessage{Text: fmt.Sprintf("m%d", i), Timestamp: uint64(i)})
		arg := testkit.CandidArgs(t, protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{
			ClientKey: c.key, SequenceNum: uint64(i), Timestamp: uint64(time.Now().UnixNano()), Content: app,
		}})
		out = append(out, pub.msg(demoCanister, c.tc, bus.KindMessage, uint64(i), testkit.SignedCall(t, c.id, demoCanister, "ws_message", arg, testkit.WithExpiry(exp))))
	}
	return append(out, pub.msg(demoCanister, c.tc, bus.KindClose, 0, nil))
}

func wantTexts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%d", i+1)
	}
	return out
}

func checkDemoClient(t testing.TB, can *wscanister.Canister, c demoClient, n int) {
	t.Helper()
	l := can.Received(c.key)
	if l.SequenceErrors != 0 {
		t.Errorf("client %d: %d sequence errors", c.key.ClientNonce, l.SequenceErrors)
	}
	if !slices.Equal(l.Texts, wantTexts(n)) {
		t.Errorf("client %d: received %d texts, want m1..m%d in order (first: %v)", c.key.ClientNonce, len(l.Texts), n, l.Texts[:min(5, len(l.Texts))])
	}
	if !slices.Equal(l.Closes, []string{"ws_close"}) {
		t.Errorf("client %d: closes %v, want [ws_close]", c.key.ClientNonce, l.Closes)
	}
}

// TestRealEnvelopesThroughReplica relays signed ws_open, ws_message and a ws_close through
// icclient to the replica simulator's demo canister, which checks every sequence number.
func TestRealEnvelopesThroughReplica(t *testing.T) {
	t.Parallel()
	d := startDemoReplica(t, 0)
	e := newEnv(t, 4)
	r := e.start(t, testConfig("a"), d.ic)
	pub := e.publisher(t)
	// One long session and a short one beside it.
	clients := []demoClient{newDemoClient(t, 1), newDemoClient(t, 2)}
	counts := []int{200, 20}
	var sessions [][]*nats.Msg
	for i, c := range clients {
		sessions = append(sessions, c.session(t, pub, d.gw, counts[i]))
	}
	pub.async(interleave(sessions...))
	testkit.WaitFor(t, 60*time.Second, "every session closed", func() bool {
		for _, c := range clients {
			if l := d.can.Received(c.key); len(l.Closes) == 0 && l.SequenceErrors == 0 {
				return false
			}
		}
		return true
	})
	for i, c := range clients {
		checkDemoClient(t, d.can, c, counts[i])
	}
	// More only if a lease lapsed under load and envelopes were re-sent (same request ids).
	if got := testkit.MetricValue(t, r.s.m.envelopes.WithLabelValues(bus.KindMessage, outcomeReplied)); got < 220 {
		t.Errorf("replied ws_message envelopes = %v, want ≥ 220", got)
	}
}

// TestRealEnvelopesSurviveSubmitterCrash kills a submitter in the middle of the relay with a
// slow replica; the survivor re-sends what was unfinished (the replica answers repeated request
// ids with the first outcome) and the canister still sees every message once, in order.
func TestRealEnvelopesSurviveSubmitterCrash(t *testing.T) {
	t.Parallel()
	d := startDemoReplica(t, 10*time.Millisecond)
	e := newEnv(t, 4)
	a := e.start(t, testConfig("a"), d.ic)
	b := e.start(t, testConfig("b"), d.ic)
	testkit.WaitFor(t, 15*time.Second, "partitions shared 2/2", func() bool { return owned(t, a) == 2 && owned(t, b) == 2 })
	pub := e.publisher(t)
	const n = 50
	// One client per partition, so both submitters have work whichever partitions they hold.
	clients := make([]demoClient, e.partitions)
	for found, i := 0, 0; found < e.partitions; i++ {
		c := newDemoClient(t, uint64(10+i))
		if p := bus.Partition(demoCanister.Encode(), c.tc.token, e.partitions); clients[p].id == nil {
			clients[p] = c
			found++
		}
	}
	var sessions [][]*nats.Msg
	for _, c := range clients {
		sessions = append(sessions, c.session(t, pub, d.gw, n))
	}
	pub.async(interleave(sessions...))
	testkit.WaitFor(t, 30*time.Second, "a has relayed some envelopes", func() bool {
		return testkit.MetricValue(t, a.s.m.envelopes.WithLabelValues(bus.KindMessage, outcomeReplied)) > 10
	})
	a.kill(t)
	received := 0
	for _, c := range clients {
		received += d.can.Received(c.key).Received
	}
	if received == len(clients)*n {
		t.Fatal("every message arrived before the crash; make the burst longer")
	}
	t.Logf("%d of %d messages had arrived when a crashed", received, len(clients)*n)
	testkit.WaitFor(t, 90*time.Second, "every session closed", func() bool {
		for _, c := range clients {
			if l := d.can.Received(c.key); len(l.Closes) == 0 && l.SequenceErrors == 0 {
				return false
			}
		}
		return true
	})
	for _, c := range clients {
		checkDemoClient(t, d.can, c, n)
	}
}
