package submitter

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/natstest"
)

// A consumer's waiting pull requests live on its leader only: a request that reaches a consumer
// without a leader (right after the consumer was created on a cluster, or while its leader moves
// after a NATS node failed) is gone, and nothing arrives until the submitter asks again. It asks
// after two missed heartbeats (ICWS_SUBMIT_PULL_HEARTBEAT) instead of nats.go's default 30 s.
func TestPartitionAsksAgainAfterItsPullRequestWasLost(t *testing.T) {
	e := newEnv(t, 1)
	lossy := &natstest.LossyDialer{Prefix: "$JS.API.CONSUMER.MSG.NEXT."}
	lossy.Drop.Store(true)
	e.connOpts = []nats.Option{nats.SetCustomDialer(lossy)}
	store := newFakeStore()
	cfg := testConfig("a")
	cfg.PullHeartbeat = 500 * time.Millisecond
	e.start(t, cfg, store.as("a"))
	testkit.WaitFor(t, 10*time.Second, "the partition's pull request lost", func() bool { return lossy.Dropped.Load() > 0 })
	lossy.Drop.Store(false)

	// nats.go's default would leave this envelope waiting 30 s for the lost request; two
	// heartbeats are 1 s. The bound leaves a loaded machine room and still fails the default.
	pub := e.publisher(t)
	client := newTestClient(1)
	pub.async(pub.burst(client, 1, 3))
	testkit.WaitFor(t, 15*time.Second, "envelopes executed", func() bool { return store.executedCount() == 3 })
	store.checkOrder(t, map[string]uint64{client.token: 3})
}

// Deleting the previous owner's consumer waits a lease's lifetime per attempt, like reading it: a
// delete that reaches a consumer whose leader is being elected goes unanswered, and waiting
// ICWS_SUBMIT_CALL_TIMEOUT (30 s) for it left the partition without a consumer that long.
func TestPartitionRetriesAnUnansweredConsumerDelete(t *testing.T) {
	e := newEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateOrUpdateConsumer(ctx, bus.StreamIn, jetstream.ConsumerConfig{
		Durable: consumerPrefix(0) + "1", FilterSubject: bus.InPartitionFilter(0), AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatalf("the previous owner's consumer: %v", err)
	}
	lossy := &natstest.LossyDialer{Prefix: "$JS.API.CONSUMER.DELETE."}
	lossy.Drop.Store(true)
	e.connOpts = []nats.Option{nats.SetCustomDialer(lossy)}
	store := newFakeStore()
	cfg := testConfig("a")
	cfg.CallTimeout = time.Minute
	e.start(t, cfg, store.as("a"))
	testkit.WaitFor(t, 10*time.Second, "the delete of the previous consumer lost", func() bool { return lossy.Dropped.Load() > 0 })
	lossy.Drop.Store(false)

	// Waiting ICWS_SUBMIT_CALL_TIMEOUT would hold these for a minute; a lease's lifetime is 2 s.
	pub := e.publisher(t)
	client := newTestClient(1)
	pub.async(pub.burst(client, 1, 3))
	testkit.WaitFor(t, 15*time.Second, "envelopes executed", func() bool { return store.executedCount() == 3 })
	store.checkOrder(t, map[string]uint64{client.token: 3})
}
