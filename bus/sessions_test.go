package bus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// laggingReplica answers direct gets like a replica that has not applied the latest writes: it
// holds no record at all, or an old version of one.
type laggingReplica struct {
	jetstream.KeyValue
	old map[string]jetstream.KeyValueEntry
}

func (r *laggingReplica) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if e, ok := r.old[key]; ok {
		return e, nil
	}
	return nil, jetstream.ErrKeyNotFound
}

// A record a lagging replica does not hold (yet), or holds as an earlier session's, is read from
// the bucket's leader; a record the leader does not hold, or holds deleted, is missing.
func TestSessionReadsDoNotTrustALaggingReplica(t *testing.T) {
	ctx := ctxT(t)
	_, _, js := startEmbedded(t, testServerConfig(t.TempDir()))
	if err := Ensure(ctx, js, DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	h, err := Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	current := NewSessions(h.Sessions, js)
	earlier := &SessionRecord{State: SessionClosed, Canister: "c", Client: "a", OpenedAt: time.Unix(1, 0).UTC()}
	if _, err := current.Create(ctx, earlier); err != nil {
		t.Fatal(err)
	}
	oldEntry, err := h.Sessions.Get(ctx, earlier.Key())
	if err != nil {
		t.Fatal(err)
	}
	now := &SessionRecord{State: SessionOpen, Canister: "c", Client: "a", OpenedAt: time.Unix(2, 0).UTC()}
	rev, err := current.Put(ctx, now, oldEntry.Revision())
	if err != nil {
		t.Fatal(err)
	}
	gone := &SessionRecord{State: SessionOpen, Canister: "c", Client: "gone", OpenedAt: time.Unix(3, 0).UTC()}
	goneRev, err := current.Create(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	if err := current.Delete(ctx, gone.Key(), goneRev); err != nil {
		t.Fatal(err)
	}
	lagging := NewSessions(&laggingReplica{KeyValue: h.Sessions, old: map[string]jetstream.KeyValueEntry{now.Key(): oldEntry}}, js)
	blind := NewSessions(&laggingReplica{KeyValue: h.Sessions}, js)

	for _, tc := range []struct {
		name    string
		read    func() (*SessionRecord, uint64, error)
		wantTag string // "" for a missing record
		wantRev uint64
	}{
		{"a record the replica lacks", func() (*SessionRecord, uint64, error) { return blind.Get(ctx, now.Key()) }, now.Tag(), rev},
		{"a session the replica holds as an earlier one", func() (*SessionRecord, uint64, error) { return lagging.GetSession(ctx, now.Key(), now.Tag()) }, now.Tag(), rev},
		{"the earlier session asked for", func() (*SessionRecord, uint64, error) { return blind.GetSession(ctx, now.Key(), earlier.Tag()) }, now.Tag(), rev},
		{"a deleted record", func() (*SessionRecord, uint64, error) { return blind.Get(ctx, gone.Key()) }, "", 0},
		{"a record never written", func() (*SessionRecord, uint64, error) { return blind.Get(ctx, SessionKey("c", "never")) }, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, gotRev, err := tc.read()
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.wantTag == "" && rec != nil:
				t.Fatalf("got %+v, want no record", rec)
			case tc.wantTag != "" && (rec == nil || rec.Tag() != tc.wantTag || gotRev != tc.wantRev):
				t.Fatalf("got %+v at revision %d, want the session %s at revision %d", rec, gotRev, tc.wantTag, tc.wantRev)
			}
		})
	}
}
