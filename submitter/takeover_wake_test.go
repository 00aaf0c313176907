package submitter

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
)

func TestLeaseChangesThatMovePartitions(t *testing.T) {
	live := func(degraded bool) leaseEntry {
		return leaseEntry{rec: LeaseRecord{Holder: "x", ExpiresAt: time.Now().Add(time.Minute), Degraded: degraded}}
	}
	part, liveKey := bus.SubmitterLeaseKey(3), bus.SubmitterLiveKey("x")
	tests := []struct {
		name            string
		key             string
		prev            leaseEntry
		existed, exists bool
		now             leaseEntry
		want            bool
	}{
		{"partition lease renewed", part, live(false), true, true, live(false), false},
		{"partition lease taken", part, leaseEntry{}, false, true, live(false), false},
		{"partition lease released", part, live(false), true, false, leaseEntry{}, true},
		{"submitter arrives", liveKey, leaseEntry{}, false, true, live(false), true},
		{"submitter leaves", liveKey, live(false), true, false, leaseEntry{}, true},
		{"submitter renews", liveKey, live(false), true, true, live(false), false},
		{"submitter loses the IC", liveKey, live(false), true, true, live(true), true},
		{"submitter reaches the IC again", liveKey, live(true), true, true, live(false), true},
		{"another role's lease", bus.PollerLeaseKey("aaaaa-aa"), live(false), true, false, leaseEntry{}, false},
	}
	for _, tt := range tests {
		if got := movesPartitions(tt.key, tt.prev, tt.existed, tt.now, tt.exists); got != tt.want {
			t.Errorf("%s: movesPartitions = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// The group wakes when the earliest lease of another holder runs out, not at its next tick: a
// dead submitter's partitions move as soon as they are free.
func TestGroupWakesAtTheEarliestForeignExpiry(t *testing.T) {
	now := time.Now()
	g := &group{
		s:      &Submitter{cfg: Config{ID: "me"}},
		expiry: time.NewTimer(time.Hour),
		view: map[string]leaseEntry{
			bus.SubmitterLeaseKey(0):    {rec: LeaseRecord{Holder: "me", ExpiresAt: now.Add(10 * time.Millisecond)}},
			bus.SubmitterLeaseKey(1):    {rec: LeaseRecord{Holder: "other", ExpiresAt: now.Add(time.Hour)}},
			bus.SubmitterLeaseKey(2):    {rec: LeaseRecord{Holder: "other", ExpiresAt: now.Add(-time.Second)}},
			bus.SubmitterLiveKey("old"): {rec: LeaseRecord{Holder: "old", ExpiresAt: now.Add(50 * time.Millisecond)}},
		},
	}
	defer g.expiry.Stop()
	g.armExpiry(now)
	select {
	case <-g.expiry.C:
	case <-time.After(30 * time.Second):
		t.Fatal("the expiry timer did not fire for the liveness lease running out")
	}
}

func TestConsumerFloorNeverGoesBelowTheStartPoint(t *testing.T) {
	tests := []struct {
		name string
		info jetstream.ConsumerInfo
		want uint64
	}{
		{"first consumer, nothing acked", jetstream.ConsumerInfo{Config: jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}}, 0},
		{"first consumer, acked up to 40", jetstream.ConsumerInfo{
			Config: jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}, AckFloor: jetstream.SequenceInfo{Stream: 40}}, 40},
		{"successor that acked nothing reports 0", jetstream.ConsumerInfo{
			Config: jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: 401}}, 400},
		{"successor that acked past its start", jetstream.ConsumerInfo{
			Config:   jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: 401},
			AckFloor: jetstream.SequenceInfo{Stream: 450}}, 450},
	}
	for _, tt := range tests {
		if got := consumerFloor(&tt.info); got != tt.want {
			t.Errorf("%s: floor %d, want %d", tt.name, got, tt.want)
		}
	}
}
