package poller

import (
	"context"
	"time"

	"github.com/icws/icws/bus"
)

// newLease describes the poller lease of a canister (no I/O). Every failed lease operation counts
// in icws_poller_errors_total{kind="lease"}.
func (p *Poller) newLease(h *bus.Handles, canister string) *bus.Lease {
	return bus.NewLease(h.Leases, bus.LeaseConfig{
		Key:      bus.PollerLeaseKey(canister),
		Holder:   p.cfg.ID,
		TTL:      p.cfg.LeaseTTL,
		RetryMin: p.cfg.BackoffMin,
		RetryMax: p.cfg.BackoffMax,
		Logger:   p.log.With("canister", canister),
		OnError: func(err error) {
			p.m.errors.WithLabelValues(errKindLease).Inc()
			p.deps.ClusterWatch.LeaseFailed(err)
		},
		OnRenewed: p.deps.ClusterWatch.LeaseWritten,
	})
}

// releaseTimeout bounds the release of a lease at shutdown.
const releaseTimeout = 2 * time.Second

// release deletes the lease if it is still ours, so a standby need not wait for it to expire.
func (p *Poller) release(l *bus.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if err := l.Release(ctx); err != nil {
		p.log.Warn("lease release failed (it will expire)", "key", l.Key(), "err", err)
		return
	}
	p.log.Info("lease released", "key", l.Key())
}
