package submitter

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/nats-io/nats.go"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/testkit/natstest"
)

// Every executed envelope kicks the canister's poller, so replies are polled at once.
func TestExecutedEnvelopesKickThePoller(t *testing.T) {
	e := newEnv(t, 2)
	kicks := e.listen(t, bus.SubjectKickAll, 64)
	store := newFakeStore()
	e.start(t, testConfig("a"), store.as("a"))
	pub := e.publisher(t)
	pub.async(pub.burst(newTestClient(1), 1, 3))
	for i := range 3 {
		select {
		case m := <-kicks:
			if got, err := bus.ParseKickSubject(m.Subject); err != nil || got != testCanister.Encode() {
				t.Fatalf("kick %d on %q, want canister %s", i, m.Subject, testCanister.Encode())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("kick %d of 3 not seen", i)
		}
	}
}

// hintingFakeIC answers like fakeIC and, like icclient, hints each answer before returning it.
type hintingFakeIC struct {
	*fakeIC
	hints atomic.Int64
}

func (h *hintingFakeIC) SubmitCallHinted(ctx context.Context, canister principal.Principal, env []byte, answered func()) (icclient.CallOutcome, error) {
	out, err := h.SubmitCall(ctx, canister, env)
	if err == nil && out.Status == icclient.CallReplied {
		h.hints.Add(1)
		answered()
	}
	return out, err
}

// With an IC client that hints answers, the kick goes out on the hint, once per envelope.
func TestAnsweredCallsKickThePollerOnTheHint(t *testing.T) {
	e := newEnv(t, 2)
	nc, _ := natstest.Connect(t, e.url)
	kicks := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(bus.SubjectKickAll, kicks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ic := &hintingFakeIC{fakeIC: newFakeStore().as("a")}
	e.start(t, testConfig("a"), ic)
	pub := e.publisher(t)
	pub.async(pub.burst(newTestClient(1), 1, 3))
	for i := range 3 {
		select {
		case <-kicks:
		case <-time.After(10 * time.Second):
			t.Fatalf("kick %d of 3 not seen", i)
		}
	}
	if n := ic.hints.Load(); n < 3 {
		t.Fatalf("%d hints for 3 kicks: the kicks did not come from the hints", n)
	}
}
