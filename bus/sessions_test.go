package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	js, h := openBus(t)
	current := NewSessions(h.Sessions, js)
	earlier := &SessionRecord{State: SessionClosed, Canister: testCanisterText, Client: testClientToken, OpenedAt: time.Unix(1, 0).UTC()}
	if _, err := current.Create(ctx, earlier); err != nil {
		t.Fatal(err)
	}
	oldEntry, err := h.Sessions.Get(ctx, earlier.Key())
	if err != nil {
		t.Fatal(err)
	}
	now := &SessionRecord{State: SessionOpen, Canister: testCanisterText, Client: testClientToken, OpenedAt: time.Unix(2, 0).UTC()}
	rev, err := current.Put(ctx, now, oldEntry.Revision())
	if err != nil {
		t.Fatal(err)
	}
	gone := &SessionRecord{State: SessionOpen, Canister: testCanisterText, Client: "2vxsx-fae_43", OpenedAt: time.Unix(3, 0).UTC()}
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
		{"a record never written", func() (*SessionRecord, uint64, error) {
			return blind.Get(ctx, SessionKey(testCanisterText, "2vxsx-fae_44"))
		}, "", 0},
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

func TestDecodeSessionRecordRefusesWhatNoRoleWrites(t *testing.T) {
	key := SessionKey(testCanisterText, testClientToken)
	valid := `{"state":"open","canister":"` + testCanisterText + `","client":"` + testClientToken + `","opened_at":"2026-01-02T03:04:05Z","partition":3}`
	for _, tc := range []struct {
		name, key, value string
		ok               bool
	}{
		{"valid", key, valid, true},
		{"fields a newer version may add", key, strings.Replace(valid, `{`, `{"future":[1,2],`, 1), true},
		{"not JSON", key, `{"state":`, false},
		{"not an object", key, `[1]`, false},
		{"another client", key, strings.Replace(valid, testClientToken, "2vxsx-fae_7", 1), false},
		{"another canister", key, strings.Replace(valid, testCanisterText, "aaaaa-aa", 1), false},
		{"no state", key, strings.Replace(valid, `"state":"open"`, `"state":""`, 1), false},
		{"no opening time", key, strings.Replace(valid, `"opened_at":"2026-01-02T03:04:05Z",`, ``, 1), false},
		{"negative partition", key, strings.Replace(valid, `"partition":3`, `"partition":-1`, 1), false},
		{"partition not a number", key, strings.Replace(valid, `"partition":3`, `"partition":"3"`, 1), false},
		{"a key that is not a session key", "nonsense", valid, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := DecodeSessionRecord(tc.key, []byte(tc.value))
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.ok && rec.Key() != tc.key:
				t.Fatalf("record of %s decoded from %s", rec.Key(), tc.key)
			case !tc.ok && !errors.Is(err, ErrCorruptSessionRecord):
				t.Fatalf("got %+v, %v; want ErrCorruptSessionRecord", rec, err)
			}
		})
	}
}

// A read of a corrupt record says so with its revision, from a replica and from the leader, so
// a caller can replace or delete it at that revision.
func TestSessionReadsReportACorruptRecordWithItsRevision(t *testing.T) {
	ctx := ctxT(t)
	js, h := openBus(t)
	key := SessionKey(testCanisterText, testClientToken)
	rev, err := h.Sessions.Put(ctx, key, []byte(`{"state":"open","canister":"`+testCanisterText+`","client":"2vxsx-fae_1","opened_at":"2026-01-02T03:04:05Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	sessions := NewSessions(h.Sessions, js)
	for name, read := range map[string]func() (*SessionRecord, uint64, error){
		"Get":        func() (*SessionRecord, uint64, error) { return sessions.Get(ctx, key) },
		"GetSession": func() (*SessionRecord, uint64, error) { return sessions.GetSession(ctx, key, "1") },
		"GetLatest":  func() (*SessionRecord, uint64, error) { return sessions.GetLatest(ctx, key) },
	} {
		rec, gotRev, err := read()
		if rec != nil || gotRev != rev || !errors.Is(err, ErrCorruptSessionRecord) {
			t.Errorf("%s: %+v, revision %d, %v; want nil, %d, ErrCorruptSessionRecord", name, rec, gotRev, err, rev)
		}
	}
	if err := sessions.Delete(ctx, key, rev); err != nil {
		t.Fatalf("delete at the reported revision: %v", err)
	}
}

func FuzzDecodeSessionRecord(f *testing.F) {
	f.Add(SessionKey(testCanisterText, testClientToken), []byte(`{"state":"open","canister":"`+testCanisterText+`","client":"`+testClientToken+`","opened_at":"2026-01-02T03:04:05Z","partition":3}`))
	f.Add("x.y", []byte(`{"state":"open","canister":"x","client":"y","opened_at":"2026-01-02T03:04:05Z"}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		rec, err := DecodeSessionRecord(key, value)
		if err != nil {
			if !errors.Is(err, ErrCorruptSessionRecord) {
				t.Fatalf("error %v is not ErrCorruptSessionRecord", err)
			}
			return
		}
		if rec.Key() != key || rec.Partition < 0 || rec.State == "" || rec.OpenedAt.IsZero() {
			t.Fatalf("accepted %+v at %q", rec, key)
		}
	})
}

// openBus starts an embedded server with the streams and buckets.
func openBus(t *testing.T) (jetstream.JetStream, *Handles) {
	t.Helper()
	ctx := ctxT(t)
	_, _, js := startEmbedded(t, testServerConfig(t.TempDir()))
	if err := Ensure(ctx, js, DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	h, err := Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return js, h
}

// Session keys are never reused: an ended session's marker must not stay in the bucket for good.
// A bucket created before markers expired is updated in place.
func TestEndedSessionsLeaveNoMarkerBehind(t *testing.T) {
	ctx := ctxT(t)
	_, _, js := startEmbedded(t, testServerConfig(t.TempDir()))
	before := DefaultTopology()
	before.SessionTombstoneTTL = 0
	if _, err := js.CreateKeyValue(ctx, bucketConfigs(before)[0]); err != nil {
		t.Fatal(err)
	}
	topo := DefaultTopology()
	topo.SessionTombstoneTTL = time.Second
	if err := Ensure(ctx, js, topo); err != nil {
		t.Fatalf("ensure over a bucket without marker expiry: %v", err)
	}
	h, err := Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := h.Sessions.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Stop() }()
	s := NewSessions(h.Sessions, js)
	for i := range 20 {
		rec := &SessionRecord{State: SessionOpen, Canister: testCanisterText, Client: fmt.Sprintf("2vxsx-fae_%d", i), OpenedAt: time.Unix(1, 0).UTC()}
		rev, err := s.Create(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, rec.Key(), rev+1); !errors.Is(err, ErrSessionConflict) {
			t.Fatalf("delete at a wrong revision: %v, want a conflict", err)
		}
		if err := s.Delete(ctx, rec.Key(), rev); err != nil {
			t.Fatal(err)
		}
	}
	ends := 0
	for ends < 20 {
		select {
		case e := <-watch.Updates():
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				ends++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a watcher saw %d of 20 sessions end", ends)
		}
	}
	stream, err := js.Stream(ctx, "KV_"+BucketSessions)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := stream.Info(ctx)
		if err == nil && info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("markers still in the bucket: %+v, %v", info.State, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
