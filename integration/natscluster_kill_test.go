package integration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSClusterSurvivesNodeKill: with streams and buckets at 3 replicas, SIGKILLing the node that
// leads ICWS_OUT costs a leader election, not data; the node catches up after a restart.
func TestNATSClusterSurvivesNodeKill(t *testing.T) {
	c := startNATSCluster(t, 3)
	nc := c.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	top := bus.DefaultTopology()
	top.Replicas = 3
	testkit.WaitForNil(t, 30*time.Second, 100*time.Millisecond, "bus.Ensure (R3)", func() error {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		return bus.Ensure(cctx, js, top)
	})
	h, err := bus.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if r := h.Out.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("ICWS_OUT replicas = %d, want 3", r)
	}

	const canister = "bkyz2-fmaaa-aaaaa-qaaaq-cai"
	const client = "test-client_1"
	subject := bus.OutSubject(canister, client)
	seq := 0 // last Icws-Seq published
	publish := func(ctx context.Context) error {
		msg := nats.NewMsg(subject)
		n := seq + 1
		msg.Data = []byte(fmt.Sprintf("certified message %d", n))
		msg.Header.Set(bus.HeaderSeq, strconv.Itoa(n))
		msg.Header.Set(bus.HeaderClientKey, client)
		msg.Header.Set(bus.HeaderMsgID, fmt.Sprintf("%s.k%d", canister, n))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return err
		}
		seq = n
		return nil
	}
	kvPuts := 0
	putSession := func(ctx context.Context) error {
		rec := fmt.Sprintf(`{"state":"open","canister":%q,"client":"c%d"}`, canister, kvPuts)
		if _, err := h.Sessions.Put(ctx, bus.SessionKey(canister, "c"+strconv.Itoa(kvPuts)), []byte(rec)); err != nil {
			return err
		}
		kvPuts++
		return nil
	}

	for range 200 {
		if err := publish(ctx); err != nil {
			t.Fatalf("publish %d before kill: %v", seq+1, err)
		}
	}
	for range 20 {
		if err := putSession(ctx); err != nil {
			t.Fatalf("kv put before kill: %v", err)
		}
	}

	info, err := h.Out.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("ICWS_OUT has no cluster leader: %+v", info.Cluster)
	}
	victim := c.Index(info.Cluster.Leader)
	if victim < 0 {
		t.Fatalf("ICWS_OUT leader %q is not a harness node", info.Cluster.Leader)
	}
	t.Logf("killing %s (ICWS_OUT leader; client connected to %s)", info.Cluster.Leader, nc.ConnectedServerName())
	killed := time.Now()
	c.Kill(victim)

	// The first publish after the kill: retried with short attempts, as a role would. A retry
	// after a lost ack is safe because of Nats-Msg-Id.
	attempts := 0
	testkit.WaitForNil(t, 30*time.Second, 10*time.Millisecond, "first publish after the kill", func() error {
		attempts++
		actx, acancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer acancel()
		return publish(actx)
	})
	recovery := time.Since(killed)
	t.Logf("first successful publish %s after SIGKILL of the stream leader (%d attempts)", recovery.Round(time.Millisecond), attempts)

	kvStart := time.Now()
	testkit.WaitForNil(t, 30*time.Second, 10*time.Millisecond, "first KV put after the kill", func() error {
		actx, acancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer acancel()
		return putSession(actx)
	})
	t.Logf("first successful KV put %s after the first publish", time.Since(kvStart).Round(time.Millisecond))

	for range 200 {
		if err := retry(ctx, publish); err != nil {
			t.Fatalf("publish %d after kill: %v", seq+1, err)
		}
	}
	for range 20 {
		if err := retry(ctx, putSession); err != nil {
			t.Fatalf("kv put after kill: %v", err)
		}
	}

	// Reading continues on the two survivors: every message once, in order, and every KV key.
	checkStream := func(want int) {
		t.Helper()
		readAllInOrder(t, ctx, js, subject, want)
		for i := range kvPuts {
			if _, err := h.Sessions.Get(ctx, bus.SessionKey(canister, "c"+strconv.Itoa(i))); err != nil {
				t.Fatalf("kv get c%d: %v", i, err)
			}
		}
	}
	checkStream(seq)

	// A re-publish of an already stored message is recognised as a duplicate.
	dup := nats.NewMsg(subject)
	dup.Data = []byte("again")
	dup.Header.Set(bus.HeaderMsgID, fmt.Sprintf("%s.k%d", canister, seq))
	ack, err := js.PublishMsg(ctx, dup)
	if err != nil || !ack.Duplicate {
		t.Fatalf("re-publish of k%d: ack %+v err %v, want duplicate", seq, ack, err)
	}

	restarted := time.Now()
	c.Restart(victim)
	for range 50 {
		if err := retry(ctx, publish); err != nil {
			t.Fatalf("publish %d after restart: %v", seq+1, err)
		}
	}
	kvStream := "KV_" + bus.BucketSessions
	testkit.WaitForNil(t, 60*time.Second, 100*time.Millisecond, c.Nodes[victim].Name+" catching up", func() error {
		for _, s := range []struct {
			name string
			want int
		}{{bus.StreamOut, seq}, {kvStream, kvPuts}} {
			got, err := c.StreamMsgs(victim, s.name)
			if err != nil {
				return err
			}
			if got != uint64(s.want) {
				return fmt.Errorf("%s holds %d messages of %s, want %d", c.Nodes[victim].Name, got, s.name, s.want)
			}
		}
		return nil
	})
	t.Logf("%s caught up %s after restart (%d messages in %s, %d keys)", c.Nodes[victim].Name,
		time.Since(restarted).Round(time.Millisecond), seq, bus.StreamOut, kvPuts)
	checkStream(seq)
}

// retry runs op with 1 s attempts until it succeeds or ctx ends.
func retry(ctx context.Context, op func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readAllInOrder reads subject from ICWS_OUT with an ordered consumer and checks Icws-Seq 1..want.
func readAllInOrder(t *testing.T, ctx context.Context, js jetstream.JetStream, subject string, want int) {
	t.Helper()
	testkit.WaitForNil(t, 30*time.Second, 100*time.Millisecond, "ordered read of "+subject, func() error {
		return readOnce(ctx, js, subject, want)
	})
}

func readOnce(ctx context.Context, js jetstream.JetStream, subject string, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, bus.StreamOut, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	for next := 1; next <= want; {
		batch, err := cons.Fetch(want-next+1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			s, err := strconv.Atoi(m.Headers().Get(bus.HeaderSeq))
			if err != nil || s != next {
				return fmt.Errorf("message %d has Icws-Seq %q", next, m.Headers().Get(bus.HeaderSeq))
			}
			next++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("fetch after %d: %w", next-1, err)
		}
		if got == 0 {
			return fmt.Errorf("read %d of %d messages", next-1, want)
		}
	}
	return nil
}
