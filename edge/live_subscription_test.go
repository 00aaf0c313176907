package edge

import (
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

func (e *runningEdge) liveSubscriptions() (subs, sessions int) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.liveSubs), len(e.byKey)
}

func (e *runningEdge) connOf(c *client) *conn {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.byKey[bus.SessionKey(c.canister.Encode(), c.key().Token())]
}

// Each session gets exactly its own messages, in order, whether the edge subscribes once per
// canister or once per session, with sessions of one canister on two edges; the subscriptions
// end with the last session that needs them.
func TestLiveSubscriptionModes(t *testing.T) {
	for _, tc := range []struct {
		mode string
		subs int // subscriptions of the first edge: 3 sessions, 2 of them of one canister
	}{
		{LiveByCanister, 2},
		{LiveBySession, 3},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			v := newEnv(t)
			p := v.startPipeline(false)
			cfg1, cfg2 := testConfig("e1"), testConfig("e2")
			cfg1.LiveSubscription, cfg2.LiveSubscription = tc.mode, tc.mode
			e1, e2 := v.startEdge(cfg1), v.startEdge(cfg2)
			shared, other := randomCanister(t), randomCanister(t)
			open := func(e *runningEdge, canister principal.Principal) *client {
				c := newClient(t, v.gw, canister)
				c.dial(e.url, false)
				c.open()
				if seq, _ := c.next(); seq != 1 {
					t.Fatalf("first message %d, want 1", seq)
				}
				return c
			}
			a1, a2, b1 := open(e1, shared), open(e1, shared), open(e1, other)
			a3 := open(e2, shared)
			if subs, sessions := e1.liveSubscriptions(); subs != tc.subs || sessions != 3 {
				t.Fatalf("first edge: %d subscriptions for %d sessions, want %d for 3", subs, sessions, tc.subs)
			}
			all := []*client{a1, a2, b1, a3}
			for seq := uint64(2); seq <= 4; seq++ {
				for _, c := range all {
					p.publish(outSubjectOfClient(c), seq, 0)
				}
			}
			for _, c := range all {
				for want := uint64(2); want <= 4; want++ {
					if seq, _ := c.next(); seq != want {
						t.Fatalf("got %d, want %d", seq, want)
					}
				}
			}
			// The last message of each is the one the next read sees: nothing of another
			// session was delivered in between.
			_ = a1.ws.Close()
			testkit.WaitFor(t, 5*time.Second, "first session gone", func() bool {
				_, sessions := e1.liveSubscriptions()
				return sessions == 2
			})
			p.publish(outSubjectOfClient(a2), 5, 0)
			if seq, _ := a2.next(); seq != 5 {
				t.Fatalf("after another session of its canister ended: got %d, want 5", seq)
			}
			_ = a2.ws.Close()
			_ = b1.ws.Close()
			testkit.WaitFor(t, 5*time.Second, "subscriptions of the first edge ended", func() bool {
				subs, sessions := e1.liveSubscriptions()
				return subs == 0 && sessions == 0
			})
			if subs, _ := e2.liveSubscriptions(); subs != 1 {
				t.Fatalf("second edge: %d subscriptions, want 1", subs)
			}
		})
	}
}

// A subscription that drops messages (its dispatch channel full) makes every session it carries
// read the stream, so a dropped last message still arrives, for the session that was slow and
// for the other sessions of its canister alike.
func TestDroppedLiveMessagesReachEverySessionOfTheSubscription(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.LiveSubscription = LiveByCanister
	cfg.SendQueue = 1 << 15 // the slow session gets every message at once when it is let go
	e := v.startEdge(cfg)
	canister := randomCanister(t)
	slow := newClient(t, v.gw, canister)
	slow.dial(e.url, false)
	slow.open()
	if seq, _ := slow.next(); seq != 1 {
		t.Fatal(seq)
	}
	bystander := newClient(t, v.gw, canister)
	bystander.dial(e.url, false)
	bystander.open()
	if seq, _ := bystander.next(); seq != 1 {
		t.Fatal(seq)
	}
	sc := e.connOf(slow)
	if sc == nil {
		t.Fatal("no connection for the slow session")
	}
	// Holding the slow session's delivery lock stops the dispatch goroutine of the canister's
	// subscription at its next message; the channel fills and the NATS client drops the rest.
	sc.dmu.Lock()
	last := uint64(2 + cap(e.shards[0]) + 100)
	for seq := uint64(2); seq <= last; seq++ {
		p.publish(outSubjectOfClient(slow), seq, 0)
	}
	p.publish(outSubjectOfClient(bystander), 2, 0)
	testkit.WaitFor(t, 10*time.Second, "messages dropped", func() bool {
		e.mu.RLock()
		defer e.mu.RUnlock()
		ls := e.liveSubs[bus.LiveCanisterFilter(canister.Encode())]
		d, err := ls.sub.Dropped()
		return err == nil && d > 100
	})
	sc.dmu.Unlock()
	if seq, _ := bystander.next(); seq != 2 {
		t.Fatalf("bystander got %d, want 2", seq)
	}
	for want := uint64(2); want <= last; want++ {
		if seq, _ := slow.next(); seq != want {
			t.Fatalf("slow session got %d, want %d", seq, want)
		}
	}
}

// The names a bound connection keeps share one string; each must still be what bus builds.
func TestBoundNames(t *testing.T) {
	selfAuth := testkit.NewIdentity(t).Sender()
	for _, tc := range []struct {
		name     string
		canister principal.Principal
		client   protocol.ClientKey
	}{
		{"self-authenticating client", randomCanister(t), protocol.ClientKey{ClientPrincipal: selfAuth, ClientNonce: 1<<64 - 1}},
		{"anonymous client, nonce 0", randomCanister(t), protocol.ClientKey{ClientPrincipal: principal.AnonymousID}},
		{"management canister", principal.Principal{Raw: []byte{}}, protocol.ClientKey{ClientPrincipal: selfAuth, ClientNonce: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &conn{e: &Edge{h: &bus.Handles{Partitions: 16}}}
			c.bind(tc.canister, tc.client)
			can, tok := tc.canister.Encode(), tc.client.Token()
			for _, n := range []struct{ what, got, want string }{
				{"canister", c.canText, can},
				{"client token", c.clientTok, tok},
				{"principal", c.principal, tc.client.ClientPrincipal.Encode()},
				{"session key", c.key, bus.SessionKey(can, tok)},
				{"ICWS_IN subject", c.inSubj, bus.InSubject(bus.Partition(can, tok, 16), can, tok)},
				{"ICWS_OUT subject", c.outSubject(), bus.OutSubject(can, tok)},
			} {
				if n.got != n.want {
					t.Errorf("%s = %q, want %q", n.what, n.got, n.want)
				}
			}
		})
	}
}
