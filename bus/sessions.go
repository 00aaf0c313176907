package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/internal/textlimit"
)

// Session states.
const (
	SessionOpen     = "open"
	SessionDetached = "detached"
	SessionClosed   = "closed"
)

// SessionRecord is the value kept per client session in BucketSessions.
type SessionRecord struct {
	State      string    `json:"state"`
	Canister   string    `json:"canister"`
	Client     string    `json:"client"`
	Edge       string    `json:"edge,omitempty"`
	Resumable  bool      `json:"resumable"`
	TokenHash  string    `json:"token_hash,omitempty"`
	OpenedAt   time.Time `json:"opened_at"`
	DetachedAt time.Time `json:"detached_at,omitzero"`
	// Partition is the ICWS_IN partition of this client, fixed at open.
	Partition int `json:"partition"`
	// Confirmed is set by the submitter once the IC executed the client's ws_open without an
	// error (or accepted it, where the IC does not tell the outcome). Until then the session has
	// no effect beyond its own socket: pollers do not poll its canister and edges relay none of
	// its messages.
	Confirmed bool `json:"confirmed,omitempty"`
	// OutFrom is the first ICWS_OUT stream sequence that can hold this session's messages: what
	// the stream held for the same client key before the session opened belongs to an earlier
	// session and is never delivered or replayed to this one.
	OutFrom uint64 `json:"out_from,omitempty"`
}

// Tag tells apart sessions that reuse a client key: it goes into every Nats-Msg-Id published for
// the session, so JetStream's de-duplication (ICWS_DUPLICATE_WINDOW) never mistakes a new
// session's open, messages or close for the previous session's. It survives resumes (the record
// keeps OpenedAt), so re-sent messages of one session are still de-duplicated.
func (r *SessionRecord) Tag() string {
	return strconv.FormatInt(r.OpenedAt.UnixNano(), 10)
}

// Key is the record's key in BucketSessions.
func (r *SessionRecord) Key() string { return SessionKey(r.Canister, r.Client) }

// ErrSessionConflict means a compare-and-set on a session record lost: the record was created,
// changed or deleted since it was read.
var ErrSessionConflict = errors.New("session record changed concurrently")

// Sessions is the store of session records. Every change is a compare-and-set on the record's
// revision, so when edges, submitters and sweepers race on one session exactly one of them acts.
//
// Reads are direct gets, which any replica of the bucket answers, and a replica may lag
// (kvleader.go). A record it holds in an older version makes a write based on it fail (every write
// is a compare-and-set); but a record it does not hold yet, or holds as an earlier session's, would
// end a session that has just begun, so a read that finds no record, or another session's, asks
// the bucket's leader before saying so, and so does every refusal of a resume.
type Sessions struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
	// tombstoneTTL is the bucket's marker TTL (Topology.SessionTombstoneTTL), read on the first
	// delete: -1 not read yet, 0 a bucket without one (its markers stay).
	tombstoneTTL atomic.Int64
}

// NewSessions wraps the sessions bucket; close requests are published through js.
func NewSessions(kv jetstream.KeyValue, js jetstream.JetStream) *Sessions {
	s := &Sessions{kv: kv, js: js}
	s.tombstoneTTL.Store(-1)
	return s
}

// ErrCorruptSessionRecord means a session record that does not decode as one, or names another
// session than its key says (a role of another version, a bug, or a hand-made write). Reads return
// it with the record's revision, so a caller can replace or delete the record at that revision.
var ErrCorruptSessionRecord = errors.New("corrupt session record")

// Get reads a record; a missing record is (nil, 0, nil).
func (s *Sessions) Get(ctx context.Context, key string) (*SessionRecord, uint64, error) {
	rec, rev, err := s.getFromReplica(ctx, key)
	if err != nil && !errors.Is(err, ErrCorruptSessionRecord) || rec != nil {
		return rec, rev, err
	}
	return s.GetLatest(ctx, key)
}

// GetSession reads the record of the session with tag (SessionRecord.Tag). It returns the record
// whatever its tag; one that is missing or of another session comes from the bucket's leader.
func (s *Sessions) GetSession(ctx context.Context, key, tag string) (*SessionRecord, uint64, error) {
	rec, rev, err := s.getFromReplica(ctx, key)
	if err != nil && !errors.Is(err, ErrCorruptSessionRecord) || rec != nil && rec.Tag() == tag {
		return rec, rev, err
	}
	return s.GetLatest(ctx, key)
}

// getFromReplica reads a record with a direct get; a missing one is (nil, 0, nil).
func (s *Sessions) getFromReplica(ctx context.Context, key string) (*SessionRecord, uint64, error) {
	ent, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get session %s: %w", key, err)
	}
	rec, err := DecodeSessionRecord(key, ent.Value())
	if err != nil {
		return nil, ent.Revision(), err
	}
	return rec, ent.Revision(), nil
}

// GetLatest reads a record from the bucket's leader, which holds every acknowledged write: for a
// decision that must not rest on a lagging replica (refusing a resume).
func (s *Sessions) GetLatest(ctx context.Context, key string) (*SessionRecord, uint64, error) {
	val, rev, err := GetFromLeader(ctx, s.js.Conn(), BucketSessions, key)
	if err != nil || val == nil {
		return nil, 0, err
	}
	rec, err := DecodeSessionRecord(key, val)
	if err != nil {
		return nil, rev, err
	}
	return rec, rev, nil
}

// DecodeSessionRecord reads the JSON value of the record at key. Every role writes and routes by
// the record's own fields (its close request's subject, the keys of its compare-and-sets), so a
// record that names another client than its key, or lacks what every version writes, is refused
// (ErrCorruptSessionRecord) rather than acted on.
func DecodeSessionRecord(key string, b []byte) (*SessionRecord, error) {
	var rec SessionRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("session %s: %w: %w", key, ErrCorruptSessionRecord, err)
	}
	var why string
	switch ref, err := ParseSessionKey(key); {
	case err != nil:
		why = err.Error()
	case rec.Canister != ref.CanisterText || rec.Client != ref.Client:
		why = "it names session " + SessionKey(rec.Canister, rec.Client)
	case rec.State == "":
		why = "no state"
	case rec.OpenedAt.IsZero():
		why = "no opening time"
	case rec.Partition < 0:
		why = "negative partition " + strconv.Itoa(rec.Partition)
	}
	if why != "" {
		return nil, fmt.Errorf("session %s: %w: %s", key, ErrCorruptSessionRecord, textlimit.Cut(why, 200))
	}
	return &rec, nil
}

// Create writes a record that must not exist yet; ErrSessionConflict if it does.
func (s *Sessions) Create(ctx context.Context, rec *SessionRecord) (uint64, error) {
	val, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("encode session %s: %w", rec.Key(), err)
	}
	rev, err := s.kv.Create(ctx, rec.Key(), val)
	if err != nil {
		return 0, fmt.Errorf("create session %s: %w", rec.Key(), casError(err))
	}
	return rev, nil
}

// Put replaces the record at revision rev; ErrSessionConflict if it changed since.
func (s *Sessions) Put(ctx context.Context, rec *SessionRecord, rev uint64) (uint64, error) {
	val, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("encode session %s: %w", rec.Key(), err)
	}
	nrev, err := s.kv.Update(ctx, rec.Key(), val, rev)
	if err != nil {
		return 0, fmt.Errorf("update session %s: %w", rec.Key(), casError(err))
	}
	return nrev, nil
}

// Delete removes the record at revision rev; ErrSessionConflict if it changed since.
//
// Session keys are never reused, so the marker a delete leaves would stay for good, one per
// session ever opened (an attacker opening and closing sessions makes hundreds a second, and every
// watcher replays them all at start): the record is purged with a marker that expires after the
// bucket's tombstone TTL.
func (s *Sessions) Delete(ctx context.Context, key string, rev uint64) error {
	ttl, err := s.markerTTL(ctx)
	if err == nil {
		if ttl > 0 {
			err = s.kv.Purge(ctx, key, jetstream.LastRevision(rev), jetstream.PurgeTTL(ttl))
		} else {
			err = s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
		}
	}
	if err != nil {
		return fmt.Errorf("delete session %s: %w", key, casError(err))
	}
	return nil
}

func (s *Sessions) markerTTL(ctx context.Context) (time.Duration, error) {
	if ttl := s.tombstoneTTL.Load(); ttl >= 0 {
		return time.Duration(ttl), nil
	}
	st, err := s.kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("read the bucket's status: %w", err)
	}
	ttl := st.LimitMarkerTTL()
	s.tombstoneTTL.Store(int64(ttl))
	return ttl, nil
}

// casError marks a lost compare-and-set (see IsConflict) as ErrSessionConflict. A key deleted
// meanwhile counts as lost too.
func casError(err error) error {
	if IsConflict(err) || errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: %w", ErrSessionConflict, err)
	}
	return err
}

// PublishClose asks the submitters to call ws_close for the session (after everything the client
// sent before). It is de-duplicated by the session's Msg-Id, so publishing twice is harmless.
func (s *Sessions) PublishClose(ctx context.Context, rec *SessionRecord, reason string) error {
	msg := nats.NewMsg(InSubject(rec.Partition, rec.Canister, rec.Client))
	msg.Header.Set(HeaderKind, KindClose)
	msg.Header.Set(HeaderCloseReason, reason)
	msg.Header.Set(HeaderMsgID, CloseMsgID(rec.Canister, rec.Client, rec.Tag()))
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish close request for %s: %w", rec.Key(), err)
	}
	return nil
}

// Finish ends a session already marked closed (so nobody else acts on it): the close request is
// published, then the record deleted. If publishing fails the record stays closed and a later
// sweep retries.
func (s *Sessions) Finish(ctx context.Context, rec *SessionRecord, rev uint64, reason string) error {
	if err := s.PublishClose(ctx, rec, reason); err != nil {
		return err
	}
	return s.Delete(ctx, rec.Key(), rev)
}

// Modify applies change to the current record with compare-and-set, re-reading and retrying
// when another writer got there first (at most attempts times). change returns false to leave
// the record as it is; a missing record is passed as nil. It returns the record as written (or
// left) and its revision.
func (s *Sessions) Modify(ctx context.Context, key string, attempts int, change func(rec *SessionRecord) (write bool, err error)) (*SessionRecord, uint64, error) {
	for i := 0; ; i++ {
		rec, rev, err := s.Get(ctx, key)
		if err != nil {
			return nil, 0, err
		}
		write, err := change(rec)
		if err != nil || !write || rec == nil {
			return rec, rev, err
		}
		nrev, err := s.Put(ctx, rec, rev)
		if err == nil {
			return rec, nrev, nil
		}
		if !errors.Is(err, ErrSessionConflict) || i+1 >= attempts {
			return nil, 0, err
		}
	}
}

// IsStreamFull reports whether a publish failed because the stream (or the account's storage) is
// at its limit: the streams discard new messages then, never stored ones.
func IsStreamFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case 10023: // JSInsufficientResourcesErr: the account or server storage limit
		return true
	case 10077: // JSStreamStoreFailedF: the message did not fit the stream's limits
		d := strings.ToLower(apiErr.Description)
		return strings.Contains(d, "maximum bytes") || strings.Contains(d, "maximum messages") || strings.Contains(d, "resource limits")
	}
	return false
}
