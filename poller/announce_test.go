package poller

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

// ICWS_OUT re-publishes a message on its live subject only when it stores it. Messages published
// again (here: a poller that lost the cursor of the one before it polls the queue from its start)
// are acknowledged as duplicates, and the poller announces them on their live subjects itself: an
// earlier copy may have been stored by a leader that lost office before re-publishing it.
func TestDuplicatesAreAnnouncedLive(t *testing.T) {
	e := startEnv(t)
	c := newFakeCanister(testGateway)
	clients := []protocol.ClientKey{testClient(1), testClient(2)}
	c.push(20, clients...)
	a := e.startPoller("a", fastConfig(testCanister.Encode()), newIC(c), false)
	testkit.WaitFor(t, 10*time.Second, "20 messages stored", func() bool { return cursorOf(t, e).NextNonce == 20 })
	a.stop(t)

	var mu sync.Mutex
	live := map[string]int{} // canister messages by client
	sub, err := e.nc.Subscribe(bus.LiveCanisterFilter(testCanister.Encode()), func(m *nats.Msg) {
		ref, err := bus.ParseLiveSubject(m.Subject)
		if err != nil {
			t.Errorf("live message on %s: %v", m.Subject, err)
			return
		}
		frames, err := bus.DecodeOutFrames(nil, m.Header, m.Data)
		if err != nil {
			t.Errorf("live message on %s: %v", m.Subject, err)
			return
		}
		mu.Lock()
		live[ref.Client] += len(frames)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.h.Cursors.Delete(ctx, testCanister.Encode()); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	b := e.startPollerWith("b", fastConfig(testCanister.Encode()), newIC(c), false, reg)
	testkit.WaitFor(t, 10*time.Second, "20 duplicates announced", func() bool {
		return testkit.MetricValue(t, b.p.m.announced) == 20
	})
	testkit.WaitFor(t, 10*time.Second, "every message on its live subject", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return live[clients[0].Token()] == 10 && live[clients[1].Token()] == 10
	})
	checkStream(t, e, snapshot(c), zeroEpoch) // stored once each
}
