package submitter

import (
	"context"
	"errors"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
)

// Reaching the IC. A submitter that reaches NATS but not the IC would keep renewing its partition
// leases while its calls hang until ICWS_SUBMIT_CALL_TIMEOUT, and its clients' envelopes would wait
// for it although other submitters could send them. So it probes the IC's status every third of
// ICWS_SUBMIT_IC_GIVE_UP, and when no probe has been answered for that long it gives its partitions
// up at once: in-flight calls are abandoned and the leases deleted, so the next owners start from
// the ack floor and send those envelopes again (the IC de-duplicates them by request id); and it
// withdraws its liveness lease, so the other submitters' fair share grows to take them. Once a
// probe is answered again it announces itself and takes its share back. When no submitter reaches
// the IC, none holds the partitions and the envelopes wait in ICWS_IN, as they would in calls.

// probesToGiveUp is how many probes in a row must go unanswered, besides the time: a process that
// was itself frozen (SIGSTOP, a paused VM) sees a long silence but at most one failed probe.
const probesToGiveUp = 3

// probeIC probes the IC until ctx ends, stamping icAnswered with every answer (an HTTP error
// status is an answer too: the IC is reachable) and counting the probes failed since, and wakes
// the run loop when the IC has been silent too long or answers again after that.
func (g *group) probeIC(ctx context.Context, ic probingIC) {
	s := g.s
	every := s.cfg.ICGiveUp / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, every)
		err := ic.Status(pctx)
		cancel()
		var he *icclient.HTTPError
		if err == nil || errors.As(err, &he) {
			s.icAnswered.Store(time.Now().UnixNano())
			s.icFailedProbes.Store(0)
		} else {
			s.icFailedProbes.Add(1)
		}
		if _, out := s.icSilence(time.Now()); out != s.icAway.Load() {
			g.wake()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// icSilence is how long the IC has answered no probe, and whether that is long enough to give the
// partitions up (ICGiveUp, and probesToGiveUp failed probes); never while no probe runs.
func (s *Submitter) icSilence(now time.Time) (time.Duration, bool) {
	last := s.icAnswered.Load()
	if s.cfg.ICGiveUp == 0 || last == 0 {
		return 0, false
	}
	d := now.Sub(time.Unix(0, last))
	return d, d >= s.cfg.ICGiveUp && s.icFailedProbes.Load() >= probesToGiveUp
}

// giveUp hands every partition to the other submitters at once and withdraws this process's
// liveness lease (see above). The run goroutine only.
func (g *group) giveUp(ctx context.Context, silence time.Duration) {
	s := g.s
	s.log.Warn("the IC does not answer: handing the partitions to other submitters until it does",
		"silent_for", silence.Round(time.Millisecond), "partitions", len(g.owned))
	s.m.icGiveUps.Inc()
	s.icAway.Store(true)
	for _, p := range g.owned {
		p.abandon()
	}
	// Abandoned calls end at once; deleting their leases now lets the next owners start now
	// rather than at the next tick (which deletes those not done within a second).
	deadline := time.NewTimer(time.Second)
	defer deadline.Stop()
release:
	for n, p := range g.owned {
		select {
		case <-p.done:
			g.releaseLease(ctx, p)
			delete(g.owned, n)
		case <-deadline.C:
			break release
		}
	}
	g.stopLive()
	if err := g.live.Release(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("delete liveness lease", "err", err)
	}
}

// comeBack announces this process again once the IC answers; it reports whether it did (a
// failed announcement is tried again at the next tick). The run goroutine only.
func (g *group) comeBack(ctx context.Context) bool {
	actx, cancel := context.WithTimeout(ctx, g.s.cfg.LeaseTTL)
	defer cancel()
	live := g.newLease(bus.SubmitterLiveKey(g.s.cfg.ID))
	if err := live.Acquire(actx); err != nil {
		return false
	}
	g.startLive(ctx, live)
	g.s.icAway.Store(false)
	g.s.log.Info("the IC answers again: taking partitions")
	return true
}
