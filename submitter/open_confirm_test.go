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
