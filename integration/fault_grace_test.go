package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/client"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/replica/wscanister"
)

// TestFaultResumeGraceExpiry (docs/RESUME.md §3, the grace period): a client whose connection drops
// and which stays away longer than ICWS_RESUME_GRACE (3 s here) is closed by the gateway with
// ws_close at the canister; its session record goes, the canister messages stored for it age out of
// ICWS_OUT (ICWS_REPLAY_MAX_AGE 5 s here), and its late resume attempt is refused with 4100, so the
// client ends with ErrNotResumable. Another client on the same edge is not disturbed.
func TestFaultResumeGraceExpiry(t *testing.T) {
	const grace = 3 * time.Second
	env := map[string]string{
		"ICWS_RESUME_GRACE":        grace.String(),
		"ICWS_EDGE_SWEEP_INTERVAL": "250ms",
		"ICWS_REPLAY_MAX_AGE":      "5s",
		"ICWS_DUPLICATE_WINDOW":    "5s", // must not exceed the replay window
	}
	d := startDeployment(t, DeploymentOptions{
		NATSNodes: 1, Edges: 1, Submitters: 1, Pollers: 1,
		EdgeEnv: env, SubmitterEnv: env, PollEnv: env,
	})
	faultKeepLogs(t, d)
	run := startFaultClients(t, d, 2, faultClientOptions{ResumeTimeout: time.Minute, ReconnectMax: 500 * time.Millisecond})
	away, stayer := run.clients[0], run.clients[1]
	canister := d.Replica.CanisterID
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	nc := d.NATS.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	h, err := bus.Open(ctx, js)
	if err != nil {
		t.Fatalf("bus.Open: %v", err)
	}
	sessionKey := bus.SessionKey(canister, away.key.Token())
	outSubject := bus.OutSubject(canister, away.key.Token())
	session := func() (bus.SessionRecord, error) {
		var rec bus.SessionRecord
		e, err := h.Sessions.Get(ctx, sessionKey)
		if err != nil {
			return rec, err
		}
		return rec, json.Unmarshal(e.Value(), &rec)
	}

	for _, c := range run.clients {
		for i := 1; i <= 3; i++ {
			if err := c.send(ctx, fmt.Sprintf("c%d-m%d", c.idx, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range run.clients {
		testkit.WaitForNil(t, 30*time.Second, 20*time.Millisecond, fmt.Sprintf("client %d: echoes", c.idx), func() error {
			if _, exp, got := c.snapshot(); len(got) < len(exp) {
				return fmt.Errorf("%d of %d echoes", len(got), len(exp))
			}
			return nil
		})
	}

	// The away client loses its socket and cannot reconnect (its dialer refuses).
	away.dialer.blocked.Store(true)
	away.dialer.dropConn()
	droppedAt := time.Now()
	testkit.WaitForNil(t, 10*time.Second, 20*time.Millisecond, "session detached", func() error {
		rec, err := session()
		if err != nil {
			return err
		}
		if rec.State != bus.SessionDetached {
			return fmt.Errorf("session state %q", rec.State)
		}
		return nil
	})
	t.Logf("session detached %s after the drop", time.Since(droppedAt).Round(time.Millisecond))
	// While it is away, the canister sends it two messages: stored in ICWS_OUT, never delivered.
	for _, s := range []string{"while-away-1", "while-away-2"} {
		if err := d.Replica.Control.Send(ctx, away.key, s); err != nil {
			t.Fatalf("control send: %v", err)
		}
	}
	testkit.WaitForNil(t, 10*time.Second, 20*time.Millisecond, "messages for the away client stored", func() error {
		m, err := h.Out.GetLastMsgForSubject(ctx, outSubject)
		if err != nil {
			return err
		}
		if seq := m.Header.Get(bus.HeaderSeq); seq == "" {
			return errors.New("stored message without " + bus.HeaderSeq)
		}
		return nil
	})

	l := waitCanisterLog(t, d.Replica.Control, away.key, 30*time.Second, "ws_close at the canister", func(l wscanister.ClientLog) error {
		if l.Open || !slices.Contains(l.Closes, "ws_close") {
			return fmt.Errorf("open=%v closes=%v", l.Open, l.Closes)
		}
		return nil
	})
	closedAfter := time.Since(droppedAt)
	if closedAfter < grace {
		t.Fatalf("ws_close %s after the drop, before the grace period of %s", closedAfter, grace)
	}
	t.Logf("RECOVERY grace expiry: ws_close reached the canister %s after the drop (grace %s)", closedAfter.Round(time.Millisecond), grace)
	assertSameTexts(t, "away client: canister received", l.Texts, []string{"c0-m1", "c0-m2", "c0-m3"})
	if l.SequenceErrors != 0 || !slices.Equal(l.Closes, []string{"ws_close"}) {
		t.Fatalf("away client: canister saw %d sequence errors, closes %v", l.SequenceErrors, l.Closes)
	}

	testkit.WaitForNil(t, 20*time.Second, 50*time.Millisecond, "session record deleted", func() error {
		rec, err := session()
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		return fmt.Errorf("session still there (state %q, err %v)", rec.State, err)
	})
	testkit.WaitForNil(t, 30*time.Second, 100*time.Millisecond, "stored messages aged out of "+bus.StreamOut, func() error {
		_, err := h.Out.GetLastMsgForSubject(ctx, outSubject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		return fmt.Errorf("still stored (err %v)", err)
	})
	t.Logf("session record gone and %s empty for the client %s after the drop", bus.StreamOut, time.Since(droppedAt).Round(time.Millisecond))

	// Back too late: the resume is refused with 4100 and the client ends, having delivered nothing
	// of what was sent while it was away.
	away.dialer.blocked.Store(false)
	select {
	case <-away.conn.Done():
	case <-time.After(30 * time.Second):
		run.dumpClientLog(away)
		t.Fatal("away client still running 30 s after dialing was allowed again")
	}
	if err := away.conn.Err(); !errors.Is(err, client.ErrNotResumable) {
		run.dumpClientLog(away)
		t.Fatalf("away client ended with %v, want %v", err, client.ErrNotResumable)
	}
	t.Logf("late resume refused: %v", away.conn.Err())
	<-away.ended
	_, expected, got := away.snapshot()
	if len(got) != len(expected) {
		t.Fatalf("away client received %d messages, want the %d echoes only", len(got), len(expected))
	}

	// The other client did not notice.
	for i := 4; i <= 6; i++ {
		if err := stayer.send(ctx, fmt.Sprintf("c%d-m%d", stayer.idx, i)); err != nil {
			t.Fatal(err)
		}
	}
	(&faultRun{t: t, d: d, clients: []*faultClient{stayer}}).verify(30 * time.Second)
}
