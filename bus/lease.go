package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The lease policy, one for every role. A holder renews every TTL/3, each renewal bounded by
// TTL/3, so two renewals may fail before the lease runs out. It counts the lease as certainly its
// own until TTL/4 before the expiry it wrote, measured from when that write was sent (never from
// when it was acknowledged, which can be much later): the margin absorbs clock skew between the
// holder, which stops by its own clock, and a rival, which judges ExpiresAt by its clock.
const (
	leaseRenewDivisor  = 3
	leaseMarginDivisor = 4
	// leaseUnackedKept bounds the writes remembered whose outcome is unknown (see Lease.unacked).
	leaseUnackedKept = 8
)

// Why a lease is not held.
var (
	// ErrLeaseTaken means a renewal found the key written by someone else: the lease is lost.
	ErrLeaseTaken = errors.New("lease taken by another holder")
	// ErrLeaseExpired means no renewal succeeded before the lease's validity ran out.
	ErrLeaseExpired = errors.New("lease not renewed in time")
	// ErrLeaseNotHeld means the lease was never acquired or was released.
	ErrLeaseNotHeld = errors.New("lease not held")
)

// HeldError is TryAcquire's answer when another holder has the lease.
type HeldError struct {
	Key string
	// Holder is the holder's name; empty when another contender won a race for the key just now.
	Holder string
	// Until is when the lease may be free: the holder's ExpiresAt plus the allowed clock skew.
	// The holder's renewals push it later.
	Until time.Time
}

func (e *HeldError) Error() string {
	if e.Holder == "" {
		return "lease " + e.Key + ": taken by another contender"
	}
	return fmt.Sprintf("lease %s: held by %q until %s", e.Key, e.Holder, e.Until.Format(time.RFC3339Nano))
}

// LeaseStore is the part of a KV bucket a Lease uses; a jetstream.KeyValue is one.
type LeaseStore interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
}

// LeaseConfig describes one lease.
type LeaseConfig struct {
	// Key is the lease's key in BucketLeases (PollerLeaseKey, SubmitterLeaseKey, SubmitterLiveKey,
	// EdgeLeaseKey).
	Key string
	// Holder names this process in the LeaseRecord.
	Holder string
	// TTL is how long a written record holds the lease, from when it was sent. It must be
	// positive; the renewal period and the validity margin derive from it.
	TTL time.Duration
	// Skew is how long after its ExpiresAt someone else's lease still counts as held, for the
	// difference between the holders' clocks.
	Skew time.Duration
	// SameHolderIsRival treats a live lease written under this Holder name as another process's
	// that uses the same name (so it is waited for, like anyone's). Otherwise it is taken to be a
	// previous run of this process and taken over at once.
	SameHolderIsRival bool
	// RetryMin and RetryMax bound Acquire's backoff after errors; by default TTL/10 and TTL/3,
	// so a holder that lost its lease to an outage tries to take it back as often as it renewed.
	RetryMin, RetryMax time.Duration
	// Logger receives failed renewals and acquisition attempts (nil discards them).
	Logger *slog.Logger
	// OnError, if set, is called with every failed KV operation except a lost acquisition race,
	// for the role's metrics.
	OnError func(error)
	// OnRenewed, if set, is called after every write of the lease that landed (acquisition or
	// renewal): proof that this process reaches the bucket's leader.
	OnRenewed func()
}

// Lease is one lease in BucketLeases, shared by the roles: the edge's liveness lease, the poller's
// canister leases, the submitter's partition and liveness leases.
//
// A holder acquires it (Acquire, TryAcquire), keeps it alive (KeepAlive, or Renew) and releases it
// (Release). Every write is a compare-and-set on the key's revision, so exactly one contender
// wins, and a renewal that finds the key written by anyone else ends the lease at once
// (ErrLeaseTaken), on single-server and replicated buckets alike. (A read of a replicated bucket
// may come from a follower that lags; the compare-and-set makes that safe, a stale read only costs
// a lost attempt, reported as a *HeldError without a holder.) Done closes when the lease is
// lost or released; Valid says whether it is certainly still ours, for fencing the work it guards.
// One Lease may be acquired again after it ended. Its methods are safe for concurrent use.
type Lease struct {
	store LeaseStore
	cfg   LeaseConfig
	log   *slog.Logger
	wake  chan struct{}

	// writeMu serialises our writes of the key: two of our own renewals racing each other would
	// make the loser look taken.
	writeMu sync.Mutex

	mu sync.Mutex
	// rev is the revision of our last acknowledged write; 0 when we know of none.
	rev uint64
	// seenRev is the latest revision of the key known to exist (our writes, reads, Wake): a read
	// showing an older one is a lagging follower's copy.
	seenRev uint64
	// unacked are our writes since the last acknowledged one whose outcome is unknown (a timeout
	// can hide a write that was applied). A conflict caused by one of them is no loss.
	unacked    []sentRecord
	held       bool
	validUntil time.Time
	// cur is the current or last tenure: from an acquisition to the loss or release.
	cur      *tenure
	watchdog *time.Timer
}

// tenure is one period of holding the lease.
type tenure struct {
	done chan struct{}
	err  error // why it ended; set before done is closed
}

type sentRecord struct {
	value []byte
	sent  time.Time
}

// NewLease describes a lease on store; it does no I/O.
func NewLease(store LeaseStore, cfg LeaseConfig) *Lease {
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = max(cfg.TTL/10, time.Millisecond)
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(cfg.TTL/leaseRenewDivisor, cfg.RetryMin)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	never := &tenure{done: make(chan struct{}), err: ErrLeaseNotHeld}
	close(never.done)
	return &Lease{
		store: store,
		cfg:   cfg,
		log:   log.With("lease", cfg.Key),
		wake:  make(chan struct{}, 1),
		cur:   never,
	}
}

// Key is the lease's key.
func (l *Lease) Key() string { return l.cfg.Key }

func (l *Lease) checkConfig() error {
	if l.cfg.Key == "" || l.cfg.TTL/leaseRenewDivisor <= 0 {
		return fmt.Errorf("lease %q: needs a key and a positive TTL (got %s)", l.cfg.Key, l.cfg.TTL)
	}
	return nil
}

// renewEvery is the renewal period and the bound of one renewal.
func (l *Lease) renewEvery() time.Duration { return l.cfg.TTL / leaseRenewDivisor }

// validFor is how long after sending a write the lease is certainly ours.
func (l *Lease) validFor() time.Duration { return l.cfg.TTL - l.cfg.TTL/leaseMarginDivisor }

func (l *Lease) record(sent time.Time) []byte {
	b, _ := json.Marshal(LeaseRecord{Holder: l.cfg.Holder, ExpiresAt: sent.Add(l.cfg.TTL)}) // cannot fail
	return b
}

func (l *Lease) failed(err error) {
	if l.cfg.OnError != nil {
		l.cfg.OnError(err)
	}
}

// TryAcquire makes one attempt to take the lease: it succeeds (nil) when the lease is free,
// expired, or ours; it returns a *HeldError when someone else holds it, and any other error when
// the bucket could not be read or written. When the lease is already held it renews it.
func (l *Lease) TryAcquire(ctx context.Context) error {
	if err := l.checkConfig(); err != nil {
		return err
	}
	if l.isHeld() {
		if err := l.Renew(ctx); err == nil || l.isHeld() {
			return err
		}
		// It ended meanwhile: acquire it afresh.
	}
	ent, err := l.store.Get(ctx, l.cfg.Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return l.take(ctx, 0)
	}
	if err != nil {
		l.failed(err)
		return fmt.Errorf("read lease %s: %w", l.cfg.Key, err)
	}
	if l.stale(ent.Revision()) {
		return &HeldError{Key: l.cfg.Key, Until: time.Now()} // look again soon
	}
	if !l.wrote(ent) {
		if rec, err := DecodeLeaseRecord(ent.Value()); err != nil {
			l.log.Warn("unreadable lease record; taking it over", "err", err)
		} else if until := rec.Expiry(ent.Created(), l.cfg.TTL, l.cfg.Skew); (rec.Holder != l.cfg.Holder || l.cfg.SameHolderIsRival) && time.Now().Before(until) {
			return &HeldError{Key: l.cfg.Key, Holder: rec.Holder, Until: until}
		}
	}
	return l.take(ctx, ent.Revision())
}

// stale reports whether a read of revision rev is older than what we know, and otherwise records
// it as known.
func (l *Lease) stale(rev uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rev < l.seenRev {
		return true
	}
	l.seenRev = rev
	return false
}

// wrote reports whether ent is a write of ours: nobody else has written the key since.
func (l *Lease) wrote(ent jetstream.KeyValueEntry) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev != 0 && ent.Revision() == l.rev {
		return true
	}
	_, ok := l.findUnacked(ent.Value())
	return ok
}

// take writes our record over revision rev (0: the key is free) and starts a tenure.
func (l *Lease) take(ctx context.Context, rev uint64) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	sent := time.Now()
	val := l.record(sent)
	var nrev uint64
	var err error
	if rev == 0 {
		nrev, err = l.store.Create(ctx, l.cfg.Key, val)
	} else {
		nrev, err = l.store.Update(ctx, l.cfg.Key, val, rev)
	}
	if IsConflict(err) {
		return &HeldError{Key: l.cfg.Key, Until: time.Now()}
	}
	if err != nil {
		l.mu.Lock()
		l.noteUnacked(val, sent)
		l.mu.Unlock()
		l.failed(err)
		return fmt.Errorf("acquire lease %s: %w", l.cfg.Key, err)
	}
	l.begin(nrev, sent)
	return nil
}

func (l *Lease) begin(rev uint64, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held {
		l.endLocked(ErrLeaseNotHeld) // a concurrent acquisition replaced it
	}
	t := &tenure{done: make(chan struct{})}
	l.rev, l.unacked, l.seenRev = rev, nil, max(l.seenRev, rev)
	l.held, l.cur = true, t
	l.validUntil = sent.Add(l.validFor())
	l.watchdog = time.AfterFunc(time.Until(l.validUntil), func() { l.expire(t) })
}

// expire ends tenure t if its validity has run out; a renewal may have extended it since the
// timer was set.
func (l *Lease) expire(t *tenure) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != t || !l.held {
		return
	}
	if left := time.Until(l.validUntil); left > 0 {
		l.watchdog.Reset(left)
		return
	}
	l.endLocked(ErrLeaseExpired)
}

func (l *Lease) endLocked(err error) {
	l.held, l.cur.err = false, err
	close(l.cur.done)
	if l.watchdog != nil {
		l.watchdog.Stop()
	}
}

// end ends tenure t with err, unless it has ended already.
func (l *Lease) end(t *tenure, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == t && l.held {
		l.endLocked(err)
	}
}

// extend records an acknowledged write of tenure t, sent at sent, at revision rev.
func (l *Lease) extend(t *tenure, rev uint64, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != t {
		return
	}
	l.rev, l.unacked, l.seenRev = rev, nil, max(l.seenRev, rev)
	if v := sent.Add(l.validFor()); l.held && v.After(l.validUntil) {
		l.validUntil = v
	}
	if l.cfg.OnRenewed != nil {
		l.cfg.OnRenewed()
	}
}

func (l *Lease) noteUnacked(val []byte, sent time.Time) {
	if len(l.unacked) == leaseUnackedKept {
		l.unacked = append(l.unacked[:0], l.unacked[1:]...)
	}
	l.unacked = append(l.unacked, sentRecord{value: val, sent: sent})
}

func (l *Lease) findUnacked(val []byte) (sentRecord, bool) {
	for _, s := range l.unacked {
		if bytes.Equal(s.value, val) {
			return s, true
		}
	}
	return sentRecord{}, false
}

// adoptUnacked reads the key after a conflict: if it holds one of our writes whose outcome we did
// not learn, that write is adopted (tenure t continues) and the conflict was no loss.
func (l *Lease) adoptUnacked(ctx context.Context, t *tenure) (uint64, bool) {
	l.mu.Lock()
	pending := len(l.unacked) > 0
	l.mu.Unlock()
	if !pending {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(ctx, l.renewEvery())
	defer cancel()
	ent, err := l.store.Get(ctx, l.cfg.Key)
	if err != nil {
		return 0, false
	}
	l.mu.Lock()
	s, ok := l.findUnacked(ent.Value())
	l.mu.Unlock()
	if !ok {
		return 0, false
	}
	l.extend(t, ent.Revision(), s.sent)
	return ent.Revision(), true
}

func (l *Lease) isHeld() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Renew extends a held lease once, bounded by TTL/3. A conflict ends the lease at once (Done
// closes, ErrLeaseTaken); any other failure is returned and the lease stays valid until its
// validity runs out (then Done closes with ErrLeaseExpired).
func (l *Lease) Renew(ctx context.Context) error {
	if err := l.checkConfig(); err != nil {
		return err
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	if !l.held {
		err := l.cur.err
		l.mu.Unlock()
		return err
	}
	rev, t := l.rev, l.cur
	l.mu.Unlock()

	rctx, cancel := context.WithTimeout(ctx, l.renewEvery())
	defer cancel()
	sent := time.Now()
	val := l.record(sent)
	nrev, err := l.store.Update(rctx, l.cfg.Key, val, rev)
	switch {
	case err == nil:
		l.extend(t, nrev, sent)
		return nil
	case IsConflict(err):
		if _, ok := l.adoptUnacked(ctx, t); ok {
			l.log.Info("lease renewal found an earlier renewal of ours applied")
			return nil
		}
		l.failed(err)
		l.end(t, fmt.Errorf("%w: %w", ErrLeaseTaken, err))
		return l.endErr(t)
	default:
		l.mu.Lock()
		if l.cur == t {
			l.noteUnacked(val, sent)
		}
		validUntil := l.validUntil
		l.mu.Unlock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.failed(err)
		l.log.Warn("lease renewal failed", "err", err, "valid_for", time.Until(validUntil).Round(time.Millisecond))
		return fmt.Errorf("renew lease %s: %w", l.cfg.Key, err)
	}
}

// endErr is why tenure t ended (nil while it lasts).
func (l *Lease) endErr(t *tenure) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return t.err
}

// KeepAlive renews the held lease every TTL/3 until ctx ends (it returns ctx's error) or the lease
// ends (it returns why: ErrLeaseTaken, ErrLeaseExpired, or ErrLeaseNotHeld after Release).
func (l *Lease) KeepAlive(ctx context.Context) error {
	if err := l.checkConfig(); err != nil {
		return err
	}
	l.mu.Lock()
	t, held := l.cur, l.held
	l.mu.Unlock()
	if !held {
		return l.endErr(t)
	}
	tick := time.NewTicker(l.renewEvery())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.done:
			return l.endErr(t)
		case <-tick.C:
		}
		_ = l.Renew(ctx) // a failure is logged; a loss closes done
	}
}

// Acquire blocks until the lease is ours or ctx ends. While someone else holds it, it looks again
// just after the holder's lease would run out, or at once after Wake; after errors it backs off
// between RetryMin and RetryMax.
func (l *Lease) Acquire(ctx context.Context) error {
	if err := l.checkConfig(); err != nil {
		return err
	}
	backoff := l.cfg.RetryMin
	for {
		err := l.TryAcquire(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var held *HeldError
		var wait time.Duration
		if errors.As(err, &held) {
			backoff = l.cfg.RetryMin
			// Just after the holder's lease runs out; its renewals push this later.
			wait = min(max(time.Until(held.Until)+10*time.Millisecond, 5*time.Millisecond), l.cfg.TTL)
		} else {
			l.log.Warn("lease check failed", "err", err, "retry_in", backoff)
			wait, backoff = backoff, min(2*backoff, l.cfg.RetryMax)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-l.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// Wake makes a waiting Acquire look again at once: the caller saw the key deleted (or changed) at
// revision rev, 0 if unknown. Reads older than rev, from a lagging follower of a replicated
// bucket, are not believed.
func (l *Lease) Wake(rev uint64) {
	l.mu.Lock()
	l.seenRev = max(l.seenRev, rev)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Release ends the tenure (Valid turns false first) and deletes the key if it still holds our
// last write, so a standby need not wait for the lease to expire. A lease taken by someone else is
// left alone. It is safe to call when the lease is not held.
func (l *Lease) Release(ctx context.Context) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	taken := !l.held && errors.Is(l.cur.err, ErrLeaseTaken)
	if l.held {
		l.endLocked(ErrLeaseNotHeld)
	}
	rev, t := l.rev, l.cur
	l.mu.Unlock()
	if taken || rev == 0 {
		return nil
	}
	err := l.store.Delete(ctx, l.cfg.Key, jetstream.LastRevision(rev))
	if IsConflict(err) {
		// An unacknowledged renewal of ours may have been applied after rev.
		if nrev, ok := l.adoptUnacked(ctx, t); ok {
			rev, err = nrev, l.store.Delete(ctx, l.cfg.Key, jetstream.LastRevision(nrev))
		}
	}
	if IsConflict(err) {
		err = nil // someone else's now: nothing of ours to delete
	}
	if err != nil {
		l.failed(err)
		return fmt.Errorf("release lease %s: %w", l.cfg.Key, err)
	}
	l.mu.Lock()
	if l.rev == rev {
		l.rev, l.unacked = 0, nil
	}
	l.mu.Unlock()
	return nil
}

// Done is closed when the current tenure ends: lost (Err: ErrLeaseTaken or ErrLeaseExpired) or
// released. Before the first acquisition it is closed already.
func (l *Lease) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur.done
}

// Err is nil while the lease is held, and otherwise why it is not: ErrLeaseTaken (wrapping the
// conflict), ErrLeaseExpired or ErrLeaseNotHeld.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held {
		return nil
	}
	return l.cur.err
}

// Valid reports whether the lease is certainly still ours: held, and not later than TTL/4 before
// the expiry written by the last renewal that was acknowledged, counted from when it was sent.
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held && time.Now().Before(l.validUntil)
}

// ValidUntil is when Valid turns false unless a renewal succeeds first; zero when not held.
func (l *Lease) ValidUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return time.Time{}
	}
	return l.validUntil
}

// Revision is the key's revision written by our last acknowledged write (0 if none): it changes
// with every renewal.
func (l *Lease) Revision() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev
}
