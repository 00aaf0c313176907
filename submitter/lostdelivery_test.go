package submitter

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit/natstest"
)

// deliveredMsg is a consumer delivery with the given sequences; embedding the interface leaves
// every method but the ones onMsg uses unimplemented.
type deliveredMsg struct {
	jetstream.Msg
	subject          string
	stream, consumer uint64
}

func (m deliveredMsg) Subject() string { return m.subject }
func (m deliveredMsg) Headers() nats.Header {
	return nats.Header{bus.HeaderKind: []string{bus.KindMessage}}
}
func (m deliveredMsg) Data() []byte { return nil }
func (m deliveredMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.stream, Consumer: m.consumer}}, nil
}

// heldLease is partition 0's lease, acquired: a relay worker that finds its lease invalid stops
// the partition, which must happen here only for the lost delivery.
func heldLease(t *testing.T, js jetstream.JetStream) *bus.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := bus.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	l := bus.NewLease(h.Leases, bus.LeaseConfig{Key: bus.SubmitterLeaseKey(0), Holder: "a", TTL: time.Minute})
	if err := l.TryAcquire(ctx); err != nil {
		t.Fatal(err)
	}
	return l
}

// A delivery lost in flight (a jump in the consumer sequence) stops the partition instead of
// letting the client's next envelope overtake the lost one; the next owner restarts from the ack
// floor.
func TestLostDeliveryStopsThePartition(t *testing.T) {
	e := newEnv(t, 1)
	nc, js := natstest.Connect(t, e.url)
	s, err := New(testConfig("a"), Deps{NC: nc, JS: js, IC: newFakeStore().as("a")})
	if err != nil {
		t.Fatal(err)
	}
	p := newPartition(s, nil, 0, heldLease(t, js))
	subject := bus.InSubject(0, testCanister.Encode(), newTestClient(1).token)
	// Hold every in-flight slot, so the relay workers queue but never call the IC: only the
	// queueing decision is under test. Deliveries 1 and 2 arrive; 3 is lost; 4 must not be queued.
	for range cap(s.sem) {
		s.sem <- struct{}{}
	}
	p.onMsg(deliveredMsg{subject: subject, stream: 10, consumer: 1})
	p.onMsg(deliveredMsg{subject: subject, stream: 11, consumer: 2})
	p.onMsg(deliveredMsg{subject: subject, stream: 13, consumer: 4})
	select {
	case <-p.ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("partition still running after a lost delivery")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, queued := p.pending[13]; queued {
		t.Fatal("the delivery after the lost one was queued")
	}
	if _, queued := p.pending[11]; !queued {
		t.Fatal("the delivery before the loss was not queued")
	}
}

// A new owner's consumer starts at delivery 1; if that one is lost, the next must not overtake it.
func TestLostFirstDeliveryStopsThePartition(t *testing.T) {
	e := newEnv(t, 1)
	nc, js := natstest.Connect(t, e.url)
	s, err := New(testConfig("a"), Deps{NC: nc, JS: js, IC: newFakeStore().as("a")})
	if err != nil {
		t.Fatal(err)
	}
	p := newPartition(s, nil, 0, heldLease(t, js))
	for range cap(s.sem) {
		s.sem <- struct{}{}
	}
	p.onMsg(deliveredMsg{subject: bus.InSubject(0, testCanister.Encode(), newTestClient(1).token), stream: 11, consumer: 2})
	select {
	case <-p.ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("partition still running after its first delivery was lost")
	}
}
