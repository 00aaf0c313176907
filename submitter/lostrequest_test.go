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
	cfg := testConfig("a")
	cfg.PullHeartbeat = 500 * time.Millisecond
	store := startLosingRequests(t, e, "$JS.API.CONSUMER.MSG.NEXT.", cfg)
	// nats.go's default would leave these waiting 30 s for the lost request; two heartbeats are
	// 1 s. The bound leaves a loaded machine room and still fails the default.
	expectRelayed(t, e, store, 15*time.Second)
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
	cfg := testConfig("a")
	cfg.CallTimeout = time.Minute
	store := startLosingRequests(t, e, "$JS.API.CONSUMER.DELETE.", cfg)
	// Waiting ICWS_SUBMIT_CALL_TIMEOUT would hold these for a minute; a lease's lifetime is 2 s.
	expectRelayed(t, e, store, 15*time.Second)
}

// startLosingRequests starts a submitter whose connection drops what it publishes to subjects
// starting with prefix, until one such request was lost; it returns the submitter's IC.
func startLosingRequests(t *testing.T, e *env, prefix string, cfg Config) *fakeStore {
	t.Helper()
	lossy := &natstest.LossyDialer{Prefix: prefix}
	lossy.Drop.Store(true)
	e.connOpts = []nats.Option{nats.SetCustomDialer(lossy)}
	store := newFakeStore()
	e.start(t, cfg, store.as(cfg.ID))
	testkit.WaitFor(t, 10*time.Second, "a request to "+prefix+" lost", func() bool { return lossy.Dropped.Load() > 0 })
	lossy.Drop.Store(false)
	return store
}

// expectRelayed publishes three envelopes of one client and waits until the IC executed them, in
// order.
func expectRelayed(t *testing.T, e *env, store *fakeStore, within time.Duration) {
	t.Helper()
	pub := e.publisher(t)
	client := newTestClient(1)
	pub.async(pub.burst(client, 1, 3))
	testkit.WaitFor(t, within, "envelopes executed", func() bool { return store.executedCount() == 3 })
	store.checkOrder(t, map[string]uint64{client.token: 3})
}

// Creating the partition's consumer waits a lease's lifetime per attempt too: a create that reaches
// the stream while its leader or the meta leader is being elected goes unanswered, and waiting
// ICWS_SUBMIT_CALL_TIMEOUT for it left the partition without a consumer for 30 s in a NATS leader
// hang. A create carried out after all is reused by the next attempt.
func TestPartitionRetriesAnUnansweredConsumerCreate(t *testing.T) {
	e := newEnv(t, 1)
	cfg := testConfig("a")
	cfg.CallTimeout = time.Minute
	// The submitter is ready only once its partition has a consumer: drop the first create only.
	lossy := &natstest.LossyDialer{Prefix: "$JS.API.CONSUMER.CREATE." + bus.StreamIn + ".", Once: true}
	lossy.Drop.Store(true)
	e.connOpts = []nats.Option{nats.SetCustomDialer(lossy)}
	store := newFakeStore()
	e.start(t, cfg, store.as(cfg.ID))
	// Waiting ICWS_SUBMIT_CALL_TIMEOUT would hold these for a minute; a lease's lifetime is 2 s.
	expectRelayed(t, e, store, 15*time.Second)
	if n := lossy.Dropped.Load(); n != 1 {
		t.Fatalf("%d consumer creates dropped, want 1", n)
	}
}
