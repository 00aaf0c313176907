package edge

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
)

// A session record no edge of any version writes (here another client's fields under a client's
// key) is not acted on: a resume of it is refused as of an unknown session, a new session of its
// key replaces it, and the sweeper deletes one that nothing replaces, so its key does not stay
// unusable.
func TestCorruptSessionRecordsAreNotActedOn(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	ctx := context.Background()
	corrupt := func(key string) uint64 {
		t.Helper()
		value := `{"state":"detached","canister":"` + strings.Split(key, ".")[0] + `","client":"2vxsx-fae_9","resumable":true,"opened_at":"2026-01-02T03:04:05Z"}`
		rev, err := v.h.Sessions.Put(ctx, key, []byte(value))
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}

	// No sweeps on the first edge: what it does must not depend on the sweeper's timing.
	cfg := testConfig("e1")
	cfg.SweepInterval = time.Hour
	e := v.startEdge(cfg)
	c := openResumable(t, v, e.url, 1)
	dropSocket(t, v, c)
	key := bus.SessionKey(c.canister.Encode(), c.key().Token())
	corrupt(key)
	if _, code, reason := c.resume(e.url, 1); code != CloseNotResumable || !strings.Contains(reason, "unknown session") {
		t.Fatalf("resume of a corrupt record closed %d %q, want %d and unknown session", code, reason, CloseNotResumable)
	}

	c.dial(e.url, false)
	c.open()
	testkit.WaitFor(t, 10*time.Second, "a new session over the corrupt record", func() bool {
		ent, err := v.h.Sessions.Get(ctx, key)
		if err != nil {
			return false
		}
		rec, err := bus.DecodeSessionRecord(key, ent.Value())
		return err == nil && rec.State == bus.SessionOpen && rec.Edge == "e1"
	})

	other := newClient(t, v.gw, randomCanister(t))
	otherKey := bus.SessionKey(other.canister.Encode(), other.key().Token())
	corrupt(otherKey)
	v.startEdge(testConfig("e2"))
	testkit.WaitFor(t, 10*time.Second, "the sweeper deleted the corrupt record", func() bool {
		_, err := v.h.Sessions.Get(ctx, otherKey)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if rec := v.session(c); rec == nil || rec.State != bus.SessionOpen {
		t.Fatalf("the valid session next to it: %+v", rec)
	}
}
