package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/icws/icws/client"
	"github.com/icws/icws/replica/wscanister"
)

// TestAllInOne drives `icws dev` (replica, embedded NATS and every role in one process) with the
// Go client: open, 1,000 messages each way in order, client close → ws_close at the canister,
// canister close → CloseMessage ClosedByApplication at the client.
func TestAllInOne(t *testing.T) {
	allInOne(t, startDev(t, ReplicaOptions{}))
}

func allInOne(t *testing.T, dev *Dev) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 1000

	c := dialClient(t, dev.GatewayURL, dev.URL, dev.CanisterID, dialOptions{})
	start := time.Now()
	c.sendTexts(numbered("m", n))
	echoes := c.receiveTexts(n, 2*time.Minute)
	echoTime := time.Since(start)
	assertSameTexts(t, "echoes", echoes, numbered("m", n))
	l := waitCanisterLog(t, dev.Control, c.Key, 10*time.Second, "canister log", func(l wscanister.ClientLog) error {
		if l.Received < n {
			return fmt.Errorf("canister received %d of %d", l.Received, n)
		}
		return nil
	})
	assertSameTexts(t, "canister received", l.Texts, numbered("m", n))
	if l.SequenceErrors != 0 {
		t.Fatalf("canister saw %d sequence errors", l.SequenceErrors)
	}
	t.Logf("%d client messages echoed in %s (%.0f msg/s round trip)", n, echoTime.Round(time.Millisecond), n/echoTime.Seconds())

	start = time.Now()
	for _, s := range numbered("c", n) {
		if err := dev.Control.Send(ctx, c.Key, s); err != nil {
			t.Fatalf("control send %s: %v", s, err)
		}
	}
	pushed := c.receiveTexts(n, 2*time.Minute)
	pushTime := time.Since(start)
	assertSameTexts(t, "canister-initiated", pushed, numbered("c", n))
	t.Logf("%d canister messages delivered in %s (%.0f msg/s)", n, pushTime.Round(time.Millisecond), n/pushTime.Seconds())

	// Client close: the gateway calls ws_close as itself.
	closed := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	waitCanisterLog(t, dev.Control, c.Key, 20*time.Second, "ws_close at the canister", func(l wscanister.ClientLog) error {
		if l.Open || !slices.Contains(l.Closes, "ws_close") {
			return fmt.Errorf("open=%v closes=%v", l.Open, l.Closes)
		}
		return nil
	})
	t.Logf("ws_close reached the canister %s after the client closed", time.Since(closed).Round(time.Millisecond))

	// Canister close: the client ends with ClosedByApplication.
	c2 := dialClient(t, dev.GatewayURL, dev.URL, dev.CanisterID, dialOptions{})
	if err := dev.Control.CloseClient(ctx, c2.Key); err != nil {
		t.Fatalf("control close: %v", err)
	}
	if err := c2.waitEnded(20 * time.Second); !errors.Is(err, client.ErrClosedByApplication) {
		t.Fatalf("client ended with %v, want %v", err, client.ErrClosedByApplication)
	}

	// Graceful, bounded shutdown: SIGTERM → exit status 0.
	stopped := time.Now()
	if err := dev.Proc.StopTimeout(15 * time.Second); err != nil {
		t.Fatalf("icws dev after SIGTERM: %v", err)
	}
	t.Logf("icws dev exited %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))
}

// TestBurstOrdered: messages sent back to back reach the canister once each and in order (the
// Rust gateway relays fire-and-forget, so bursts can arrive out of order there).
func TestBurstOrdered(t *testing.T) {
	t.Run("dev", func(t *testing.T) {
		dev := startDev(t, ReplicaOptions{})
		burstOrdered(t, dev.GatewayURL, dev.URL, dev.CanisterID, dev.Control, 1, 500)
	})
	t.Run("roles-with-update-latency", func(t *testing.T) {
		// Separate processes: replica with 200 ms per update, 1 edge, 2 submitters, 1 poller, one
		// NATS server. A client's envelopes are relayed one at a time (each waits for its
		// certified outcome), so 500 messages of one client would take ≥ 100 s here; 4 clients
		// × 100 messages run in parallel instead and cover both submitters' partitions.
		d := startDeployment(t, DeploymentOptions{
			NATSNodes: 1, Edges: 1, Submitters: 2, Pollers: 1,
			Replica: ReplicaOptions{UpdateLatency: 200 * time.Millisecond},
		})
		burstOrdered(t, d.Edges[0].WSURL, d.Replica.URL, d.Replica.CanisterID, d.Replica.Control, 4, 100)
	})
}

func burstOrdered(t *testing.T, gatewayURL, icURL, canister string, ctl *wscanister.ControlClient, clients, n int) {
	cs := make([]*testClient, clients)
	for i := range cs {
		cs[i] = dialClient(t, gatewayURL, icURL, canister, dialOptions{})
	}
	start := time.Now()
	var wg sync.WaitGroup
	echoes := make([][]string, clients)
	errs := make([]error, clients)
	for i, c := range cs {
		// Sending is synchronous and fast; receiving runs per client in parallel.
		c.sendTexts(numbered("", n))
		wg.Go(func() { echoes[i], errs[i] = c.collectTexts(n, 3*time.Minute) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		l := waitCanisterLog(t, ctl, c.Key, 20*time.Second, "canister log", func(l wscanister.ClientLog) error {
			if l.Received < n {
				return fmt.Errorf("canister received %d of %d", l.Received, n)
			}
			return nil
		})
		assertSameTexts(t, fmt.Sprintf("client %d: canister received", i), l.Texts, numbered("", n))
		if l.SequenceErrors != 0 {
			t.Fatalf("client %d: canister saw %d sequence errors", i, l.SequenceErrors)
		}
		assertSameTexts(t, fmt.Sprintf("client %d: echoes", i), echoes[i], numbered("", n))
	}
	el := time.Since(start)
	t.Logf("%d clients × %d messages: all received in order and echoed in %s (%.0f msg/s)", clients, n, el.Round(time.Millisecond), float64(clients*n)/el.Seconds())
}

// TestKeepAliveCycle: with a 3 s ack interval and a 2 s keep-alive timeout, a session stays open
// across several ack/keep-alive cycles, which needs every keep-alive to make the whole trip
// (poll → edge → client → edge → NATS → submitter → canister) within 2 s.
func TestKeepAliveCycle(t *testing.T) {
	t.Parallel() // mostly idle waiting
	const (
		ack       = 3 * time.Second
		keepAlive = 2 * time.Second
		cycles    = 4
	)
	keepAliveCycle(t, startDev(t, ReplicaOptions{AckInterval: ack, KeepAliveTimeout: keepAlive}), ack, keepAlive, cycles)
}

func keepAliveCycle(t *testing.T, dev *Dev, ack, keepAlive time.Duration, cycles int) {
	c := dialClient(t, dev.GatewayURL, dev.URL, dev.CanisterID, dialOptions{AckInterval: ack})
	c.sendTexts([]string{"before"})
	assertSameTexts(t, "echo", c.receiveTexts(1, 20*time.Second), []string{"before"})
	start := time.Now()
	waitCanisterLog(t, dev.Control, c.Key, time.Duration(cycles+2)*ack+10*time.Second, "keep-alives", func(l wscanister.ClientLog) error {
		if !l.Open {
			t.Fatalf("canister dropped the client: closes %v", l.Closes)
		}
		if l.KeepAlives < cycles {
			return fmt.Errorf("%d of %d keep-alives", l.KeepAlives, cycles)
		}
		return nil
	})
	// Not synchronisation: the check is that nothing happens while the canister runs the
	// keep-alive check that follows the last ack round.
	time.Sleep(keepAlive + 500*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := dev.Control.Received(ctx, c.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Open || len(l.Closes) > 0 {
		t.Fatalf("canister: open=%v closes=%v", l.Open, l.Closes)
	}
	select {
	case <-c.Done():
		t.Fatalf("client ended: %v", c.Err())
	default:
	}
	c.sendTexts([]string{"after"})
	assertSameTexts(t, "echo", c.receiveTexts(1, 20*time.Second), []string{"after"})
	t.Logf("%d keep-alives in %s, session still open", l.KeepAlives, time.Since(start).Round(time.Millisecond))
}
