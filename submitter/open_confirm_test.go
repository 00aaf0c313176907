package submitter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/testkit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// blindReplica answers every read of the sessions bucket like a replica that has not applied the
// latest writes: no record.
type blindReplica struct{ jetstream.KeyValue }

func (blindReplica) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}

// A session whose record a replica does not hold yet (the edge created it a moment before) is
// confirmed all the same: the record is read from the bucket's leader before the session counts
// as ended. Otherwise its edge would hold the client's messages until ICWS_OPEN_CONFIRM_TIMEOUT.
func TestOpenIsConfirmedThoughAReplicaLacksItsRecord(t *testing.T) {
	e := newEnv(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sessions := e.sessions(ctx, t)
	c := newTestClient(1)
	rec := &bus.SessionRecord{State: bus.SessionOpen, Canister: testCanister.Encode(), Client: c.token, Edge: "e1",
		Resumable: true, OpenedAt: time.Now().UTC(), Partition: bus.Partition(testCanister.Encode(), c.token, e.partitions)}
	if _, err := sessions.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	results := e.listen(t, bus.OpenResultSubject("e1"), 4)
	store := newFakeStore()
	// The IC takes the ws_open (a 202: executed, no refusal).
	store.script = func(string, uint64, int) (icclient.CallStatus, error) { return icclient.CallAccepted, nil }
	e.startWith(t, testConfig("a"), store.as("a"), func(s *Submitter) {
		s.testSessionReplica = func(kv jetstream.KeyValue) jetstream.KeyValue { return blindReplica{kv} }
	})
	pub := e.publisher(t)
	open := pub.msg(testCanister, c, bus.KindOpen, 0, fakeEnvelope(t, c.token, 0, time.Now().Add(time.Minute)))
	open.Header.Set(bus.HeaderSessionTag, rec.Tag())
	pub.async([]*nats.Msg{open})

	select {
	case m := <-results:
		if got := m.Header.Get(bus.HeaderOpenOutcome); got != bus.OpenConfirmed {
			t.Fatalf("open outcome %q, want %q", got, bus.OpenConfirmed)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the edge was never told the open was confirmed")
	}
	testkit.WaitForNil(t, 5*time.Second, 50*time.Millisecond, "the record confirmed", func() error {
		got, _, err := sessions.Get(ctx, rec.Key())
		switch {
		case err != nil:
			return err
		case got == nil || !got.Confirmed:
			return fmt.Errorf("record %+v", got)
		}
		return nil
	})
}

// A session record no edge of any version writes (another client's fields under this client's key)
// is not there to confirm: the ws_open is settled and its envelope acknowledged, instead of a
// retry without end holding one of the process's call slots, which with one slot stops every
// other client.
func TestOpenOfACorruptRecordIsSettled(t *testing.T) {
	e := newEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := bus.Open(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	corrupt, other := newTestClient(1), newTestClient(2)
	value := `{"state":"open","canister":"` + testCanister.Encode() + `","client":"` + other.token + `","opened_at":"2026-01-02T03:04:05Z"}`
	if _, err := h.Sessions.Put(ctx, bus.SessionKey(testCanister.Encode(), corrupt.token), []byte(value)); err != nil {
		t.Fatal(err)
	}
	store := newFakeStore()
	cfg := testConfig("a")
	cfg.MaxInFlight = 1
	e.start(t, cfg, store.as("a"))
	pub := e.publisher(t)
	open := pub.msg(testCanister, corrupt, bus.KindOpen, 0, fakeEnvelope(t, corrupt.token, 0, time.Now().Add(time.Minute)))
	open.Header.Set(bus.HeaderSessionTag, "1767323045000000000")
	pub.async([]*nats.Msg{open})
	pub.async(pub.burst(other, 1, 3))
	testkit.WaitFor(t, 20*time.Second, "the open and the other client's three envelopes executed", func() bool {
		return store.executedCount() == 4
	})
	store.checkOrder(t, map[string]uint64{other.token: 3})
}
