package poller

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
)

// realIC runs the replica simulator with the demo ws canister and gives a gateway icclient.
func realIC(t *testing.T) (*icclient.Client, *wscanister.Canister, *replica.Replica) {
	t.Helper()
	r, ws := testkit.StartWSReplica(t, replica.Config{}, testCanister, wscanister.DefaultConfig())
	ic, _ := testkit.GatewayClient(t, r.URL, nil)
	return ic, ws, r.Replica
}

// openClient makes a client ws_open naming the gateway, through icclient.SubmitCall.
func openClient(t testing.TB, ic *icclient.Client, nonce uint64) protocol.ClientKey {
	t.Helper()
	cl := testkit.NewIdentity(t)
	arg, err := candid.Marshal([]any{protocol.CanisterWsOpenArguments{ClientNonce: nonce, GatewayPrincipal: ic.Principal()}})
	if err != nil {
		t.Fatal(err)
	}
	env, _, err := icclient.SignEnvelope(cl, icclient.Request{Type: icclient.RequestCall, Canister: testCanister, Method: "ws_open",
		Arg: arg, Nonce: []byte(strconv.FormatUint(nonce, 10)), IngressExpiry: time.Now().Add(3 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ic.SubmitCall(ctx, testCanister, env)
	if err != nil || out.Status != icclient.CallReplied {
		t.Fatalf("ws_open: %+v, %v", out, err)
	}
	var res protocol.CanisterWsResult
	if err := candid.Unmarshal(out.Reply, []any{&res}); err != nil || res.Err != nil {
		t.Fatalf("ws_open result: %+v, %v", res, err)
	}
	return protocol.ClientKey{ClientPrincipal: cl.Sender(), ClientNonce: nonce}
}

// verifyFrame checks a published frame as a client would (protocol.Verifier: certificate signed
// by the root key, certified_data equal to the tree's root, sha256(content) under the key in the
// tree) and returns it with its decoded content. The Verifier checks each batch's certificate
// once (BLS is slow).
func verifyFrame(t *testing.T, v *protocol.Verifier, data []byte) (protocol.CanisterToClientMessage, protocol.WebsocketMessage) {
	t.Helper()
	f, err := protocol.DecodeCanisterToClientMessage(data)
	if err != nil {
		t.Fatal(err)
	}
	wm, err := v.Verify(f, time.Now())
	if err != nil {
		t.Fatalf("frame %s: %v", f.Key, err)
	}
	return f, wm
}

func TestPollsTheDemoCanisterThroughTheReplica(t *testing.T) {
	ic, ws, r := realIC(t)
	e := startEnv(t)
	clients := []protocol.ClientKey{openClient(t, ic, 1), openClient(t, ic, 2)}
	const perClient = 120 // more than two batches of 50
	for i := 0; i < perClient; i++ {
		for _, c := range clients {
			if err := ws.Send(c, fmt.Sprintf("hello %d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := uint64(len(clients) * (perClient + 1)) // + one OpenMessage each
	cfg := fastConfig(testCanister.Encode())
	start := time.Now()
	e.startPoller("p", cfg, ic, false)
	testkit.WaitFor(t, 20*time.Second, "all messages", func() bool { return e.outCount() == want })
	t.Logf("burst: %d messages polled and published in %s (%.0f msg/s)", want, time.Since(start).Round(time.Millisecond),
		float64(want)/time.Since(start).Seconds())

	verifier := &protocol.Verifier{Canister: testCanister, RootKey: r.RootKey()}
	seqs := map[string]uint64{}
	for _, m := range e.outMsgs() {
		_, wm := verifyFrame(t, verifier, m.Data)
		tok := wm.ClientKey.Token()
		if m.Subject != bus.OutSubject(testCanister.Encode(), tok) || m.Header.Get(bus.HeaderClientKey) != tok {
			t.Fatalf("subject %s for client %s", m.Subject, tok)
		}
		seqs[tok]++
		if wm.SequenceNum != seqs[tok] || m.Seq != wm.SequenceNum {
			t.Fatalf("client %s: seq %d, want %d", tok, wm.SequenceNum, seqs[tok])
		}
	}

	// Latency of one message from the canister's send to its PubAck'd arrival in ICWS_OUT.
	sub, err := e.nc.SubscribeSync(bus.OutSubject(testCanister.Encode(), clients[0].Token()))
	if err != nil {
		t.Fatal(err)
	}
	var total time.Duration
	const rounds = 20
	for i := 0; i < rounds; i++ {
		sent := time.Now()
		if err := ws.Send(clients[0], "ping"); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		total += time.Since(sent)
	}
	t.Logf("send → ICWS_OUT latency: mean %s over %d messages (poll interval %s)", (total / rounds).Round(time.Microsecond), rounds, cfg.Interval)

	// An upgrade forgets the gateway: the poller must resynchronise and publish the new queue.
	ws.Upgrade()
	testkit.WaitFor(t, 10*time.Second, "epoch bump", func() bool { return cursorOf(t, e).Epoch == 1 })
	c3 := openClient(t, ic, 3)
	if err := ws.Send(c3, "after upgrade"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "new queue published", func() bool { return cursorOf(t, e).NextNonce == 2 })
	msgs := e.outMsgs()
	for _, m := range msgs[len(msgs)-2:] {
		verifyFrame(t, verifier, m.Data)
		if m.Header.Get(bus.HeaderEpoch) != "1" || m.Header.Get(bus.HeaderClientKey) != c3.Token() {
			t.Fatalf("after upgrade: headers %v", m.Header)
		}
	}
}

// A local replica that answers queries unsigned is polled when the gateway's icclient skips
// query signature checks (ICWS_IC_VERIFY_QUERY_SIGNATURES=false), and refused when it does not.
func TestPollsAReplicaThatDoesNotSignQueries(t *testing.T) {
	r, ws := testkit.StartWSReplica(t, replica.Config{NoQuerySignatures: true}, testCanister, wscanister.DefaultConfig())
	id := testkit.NewIdentity(t)
	newIC := func(skip bool) *icclient.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ic, err := icclient.New(ctx, icclient.Config{URL: r.URL, Identity: id, SkipQuerySignatures: skip})
		if err != nil {
			t.Fatal(err)
		}
		return ic
	}
	strict, lenient := newIC(false), newIC(true)
	client := openClient(t, strict, 1)
	for i := range 3 {
		if err := ws.Send(client, fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	e := startEnv(t)
	cfg := fastConfig(testCanister.Encode())

	refused := e.startPoller("strict", cfg, strict, false)
	testkit.WaitFor(t, 10*time.Second, "refused polls", func() bool {
		return testkit.MetricValue(t, refused.p.m.errors.WithLabelValues(errKindTransient)) >= 3
	})
	if n := e.outCount(); n != 0 {
		t.Fatalf("%d messages published from unsigned answers", n)
	}
	refused.stop(t)

	e.startPoller("lenient", cfg, lenient, false)
	testkit.WaitFor(t, 10*time.Second, "all messages", func() bool { return e.outCount() == 4 }) // + the OpenMessage
	verifier := &protocol.Verifier{Canister: testCanister, RootKey: r.RootKey()}
	for _, m := range e.outMsgs() {
		verifyFrame(t, verifier, m.Data)
	}
}
