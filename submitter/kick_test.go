package submitter

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit/natstest"
)

// Every executed envelope kicks the canister's poller, so replies are polled at once.
func TestExecutedEnvelopesKickThePoller(t *testing.T) {
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
