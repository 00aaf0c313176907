package poller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/icws/icws/broker"
	"github.com/nats-io/nats.go/jetstream"
)

// lease is a held poller lease: its key and the revision of our last write.
type lease struct {
	key       string
	rev       uint64
	expiresAt time.Time
}

func (p *Poller) leaseValue() ([]byte, time.Time) {
	exp := time.Now().Add(p.cfg.LeaseTTL)
	b, _ := json.Marshal(broker.LeaseRecord{Holder: p.cfg.ID, ExpiresAt: exp})
	return b, exp
}

// tryAcquire takes the lease if it is free, expired or already ours. When someone else holds it,
// it returns nil and the time at which to look again.
func (p *Poller) tryAcquire(ctx context.Context, kv jetstream.KeyValue, key string) (*lease, time.Time, error) {
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		val, exp := p.leaseValue()
		rev, err := kv.Create(ctx, key, val)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return nil, time.Now(), nil // lost the race; look again
			}
			return nil, time.Time{}, fmt.Errorf("create lease %s: %w", key, err)
		}
		return &lease{key: key, rev: rev, expiresAt: exp}, time.Time{}, nil
	case err != nil:
		return nil, time.Time{}, fmt.Errorf("read lease %s: %w", key, err)
	}
	var rec broker.LeaseRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		p.log.Warn("unreadable lease record; taking it over", "key", key, "err", err)
	} else if rec.Holder != p.cfg.ID && time.Now().Before(rec.ExpiresAt) {
		return nil, rec.ExpiresAt, nil
	}
	val, exp := p.leaseValue()
	rev, err := kv.Update(ctx, key, val, e.Revision())
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, time.Now(), nil
		}
		return nil, time.Time{}, fmt.Errorf("take over lease %s: %w", key, err)
	}
	return &lease{key: key, rev: rev, expiresAt: exp}, time.Time{}, nil
}

// acquire blocks until the lease is ours or ctx ends. wake signals a released lease.
func (p *Poller) acquire(ctx context.Context, kv jetstream.KeyValue, key string, wake <-chan struct{}) (*lease, error) {
	backoff := p.cfg.BackoffMin
	for {
		l, retryAt, err := p.tryAcquire(ctx, kv, key)
		if l != nil {
			return l, nil
		}
		var wait time.Duration
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			p.m.errors.WithLabelValues(errKindLease).Inc()
			p.log.Warn("lease check failed", "key", key, "err", err)
			wait, backoff = backoff, min(2*backoff, p.cfg.BackoffMax)
		} else {
			backoff = p.cfg.BackoffMin
			// Look again just after the holder's lease runs out; its renewals push this forward.
			wait = min(time.Until(retryAt)+10*time.Millisecond, p.cfg.LeaseTTL)
			wait = max(wait, 5*time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// renew keeps the lease alive until ctx ends, then returns. If the lease cannot be renewed before
// it would run out, or someone else took it, it calls lost, so polling stops before another poller
// could start.
func (p *Poller) renew(ctx context.Context, kv jetstream.KeyValue, l *lease, lost func()) {
	every := p.cfg.LeaseTTL / 4
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		val, exp := p.leaseValue()
		rctx, cancel := context.WithTimeout(ctx, every)
		rev, err := kv.Update(rctx, l.key, val, l.rev)
		cancel()
		if err == nil {
			l.rev, l.expiresAt = rev, exp
			continue
		}
		if ctx.Err() != nil {
			return
		}
		p.m.errors.WithLabelValues(errKindLease).Inc()
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
			p.log.Warn("lease lost to another poller", "key", l.key, "err", err)
			lost()
			return
		}
		// Stop before the lease can expire: leave one renewal period of margin.
		if time.Until(l.expiresAt) < every {
			p.log.Warn("lease could not be renewed in time; giving it up", "key", l.key, "err", err)
			lost()
			return
		}
		p.log.Warn("lease renewal failed; retrying", "key", l.key, "err", err)
	}
}

// release deletes the lease if it is still ours, so a standby need not wait for it to expire.
func (p *Poller) release(kv jetstream.KeyValue, l *lease) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev)); err != nil {
		p.log.Warn("lease release failed (it will expire)", "key", l.key, "err", err)
		return
	}
	p.log.Info("lease released", "key", l.key)
}
