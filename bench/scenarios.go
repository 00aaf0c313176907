package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/icws/icws/client"
	"github.com/icws/icws/internal/stagetrace"
	"github.com/icws/icws/protocol"
	"log/slog"
)

// stallTimeout ends a scenario's receiving when no client got anything for this long; what is
// missing then counts as lost.
const stallTimeout = 30 * time.Second

var errStalled = errors.New("no message arrived for " + stallTimeout.String())

// watchProgress returns a context that ends with errStalled once progress has not moved for
// stallTimeout; stop ends the watch.
func watchProgress(ctx context.Context, progress *atomic.Int64) (context.Context, func()) {
	wctx, cancel := context.WithCancelCause(ctx)
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last, since := progress.Load(), time.Now()
		for {
			select {
			case <-wctx.Done():
				return
			case now := <-tick.C:
				if p := progress.Load(); p != last {
					last, since = p, now
				} else if now.Sub(since) >= stallTimeout {
					cancel(errStalled)
					return
				}
			}
		}
	}()
	return wctx, func() { cancel(nil) }
}

// stalled reports whether err ended a receive because watchProgress gave up (not a failure of
// the run: the missing messages count as lost).
func stalled(ctx context.Context, err error) bool {
	return err != nil && errors.Is(context.Cause(ctx), errStalled)
}

// receiveAll runs one receiver per connection until its sequence is complete (or the progress
// watch gives up); handle accounts for each message of connection i.
func receiveAll(ctx context.Context, conns []*client.Conn, seqs []*Sequence, handle func(i int, m received)) error {
	var progress atomic.Int64
	wctx, stop := watchProgress(ctx, &progress)
	defer stop()
	g, gctx := errgroup.WithContext(wctx)
	for i, conn := range conns {
		g.Go(func() error {
			for !seqs[i].Complete() {
				m, err := receive(gctx, conn)
				if stalled(wctx, err) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("client %d: %w", i, err)
				}
				progress.Add(1)
				handle(i, m)
			}
			return nil
		})
	}
	return g.Wait()
}

func integrityOf(seqs []*Sequence) Integrity {
	var total Integrity
	for _, s := range seqs {
		total = total.Add(s.Integrity())
	}
	return total
}

func receivedOf(seqs []*Sequence) int {
	n := 0
	for _, s := range seqs {
		n += s.Received()
	}
	return n
}

// finish fills the common figures of a report.
func finish(rep *Report, seqs []*Sequence, lat *Latencies, wall time.Duration) {
	rep.Messages = receivedOf(seqs)
	rep.Integrity = integrityOf(seqs)
	rep.Latency = lat.Summary()
	rep.DurationSeconds = wall.Seconds()
	if wall > 0 {
		rep.PerSecond = float64(rep.Messages) / wall.Seconds()
	}
}

// sleepUntil waits until t or ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// idle opens Sessions sessions and holds them: the gateway's memory before opening versus after
// the hold, its CPU during the hold, then echo round trips with every session still open.
func (r *runner) idle(ctx context.Context) (Report, error) {
	n := r.cfg.Sessions
	limit, err := raiseFileLimit(uint64(n) + 256)
	if err != nil {
		return Report{}, fmt.Errorf("%d sessions: %w", n, err)
	}
	before, err := r.startMeter(ctx)
	if err != nil {
		return Report{}, err
	}
	openStart := time.Now()
	conns, open, err := r.openSessions(ctx, n, sessionOptions{messageBuffer: 16, small: true})
	if err != nil {
		return Report{}, err
	}
	defer closeAll(conns)
	openWall := time.Since(openStart)
	hold, err := r.startMeter(ctx)
	if err != nil {
		return Report{}, err
	}
	if err := sleepUntil(ctx, time.Now().Add(r.cfg.Hold)); err != nil {
		return Report{}, err
	}
	gw, after, err := hold.stop(ctx, 0)
	if err != nil {
		return Report{}, err
	}
	figures := &IdleFigures{Sessions: n, HoldSeconds: r.cfg.Hold.Seconds(), OpenSeconds: openWall.Seconds(), FileLimit: limit}
	if gw != nil {
		figures.IdleCoreShare = gw.CoreShare
		per := func(name string) float64 { return (after[name] - before.before[name]) / float64(n) }
		figures.RSSPerSession, figures.HeapPerSession, figures.GoroutinesPerSession = per(metricRSS), per(metricHeapInuse), per(metricGoroutines)
		gw.RSSBefore, gw.HeapInuseBefore, gw.GoroutinesBefore = int64(before.before[metricRSS]), int64(before.before[metricHeapInuse]), int64(before.before[metricGoroutines])
	}
	echoLat := NewLatencies()
	seq := NewSequence(r.cfg.Messages)
	if err := echoLoop(ctx, r.logger, conns[0], r.cfg.Messages, 1, seq, echoLat); err != nil {
		return Report{}, fmt.Errorf("echo with %d sessions open: %w", n, err)
	}
	figures.Echo = echoLat.Summary()
	openSummary := open.Summary()
	return Report{
		Scenario: ScenarioIdle, Clients: n, Messages: seq.Received(), Integrity: seq.Integrity(),
		Latency: figures.Echo, LatencyFrom: "client send (echo, one in flight, every session open)",
		Open: &openSummary, Gateway: gw, Idle: figures, DurationSeconds: r.cfg.Hold.Seconds(),
	}, nil
}

// unicastSaturate: every client asks for burst:N at once; latency from the canister's send.
func (r *runner) unicastSaturate(ctx context.Context) (Report, error) {
	c, n := r.cfg.Clients, r.cfg.Burst
	conns, open, err := r.openSessions(ctx, c, sessionOptions{messageBuffer: 4 * n})
	if err != nil {
		return Report{}, err
	}
	defer closeAll(conns)
	seqs := make([]*Sequence, c)
	for i := range seqs {
		seqs[i] = NewSequence(n)
	}
	lat := NewLatencies()
	m, err := r.startMeter(ctx)
	if err != nil {
		return Report{}, err
	}
	for i, conn := range conns {
		if err := sendText(ctx, conn, "burst:"+strconv.Itoa(n)); err != nil {
			return Report{}, fmt.Errorf("client %d: %w", i, err)
		}
	}
	err = receiveAll(ctx, conns, seqs, func(i int, msg received) {
		k, ok := parseBurst(msg.text)
		if !ok {
			seqs[i].Observe(-1)
			return
		}
		seqs[i].Observe(k - 1)
		lat.Record(msg.at.Sub(msg.canisterT))
	})
	wall := time.Since(m.start)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Scenario: ScenarioUnicastSaturate, Variant: "burst:" + strconv.Itoa(n), Clients: c, LatencyFrom: "canister send", Open: ptr(open.Summary())}
	finish(&rep, seqs, lat, wall)
	if rep.Gateway, _, err = m.stop(ctx, rep.Messages); err != nil {
		return rep, err
	}
	return rep, nil
}

func parseBurst(text string) (int, bool) {
	rest, ok := strings.CutPrefix(text, "burst:")
	if !ok {
		return 0, false
	}
	k, err := strconv.Atoi(rest)
	return k, err == nil
}

func ptr[T any](v T) *T { return &v }

// unicastRate sends Rate messages per second in total for Duration, round-robin over the clients,
// through the canister's control API; latency is from each message's intended send time.
func (r *runner) unicastRate(ctx context.Context) (Report, error) {
	c := r.cfg.Clients
	total := max(int(r.cfg.Rate*r.cfg.Duration.Seconds()), c)
	conns, open, err := r.openSessions(ctx, c, sessionOptions{messageBuffer: 1024})
	if err != nil {
		return Report{}, err
	}
	defer closeAll(conns)
	keys := clientKeys(conns)
	seqs := make([]*Sequence, c)
	for i := range seqs {
		seqs[i] = NewSequence(total/c + boolInt(i < total%c))
	}
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	lat := NewLatencies()
	m, err := r.startMeter(ctx)
	if err != nil {
		return Report{}, err
	}
	start := m.start.Add(10 * time.Millisecond)
	intended := func(j int) time.Time { return start.Add(time.Duration(j) * interval) }

	// A client's messages go through one worker, so the canister gets them in order.
	workers := min(c, 64)
	queues := make([]chan int, workers)
	for w := range queues {
		queues[w] = make(chan int, total/workers+1)
	}
	g, gctx := errgroup.WithContext(ctx)
	for w := range queues {
		g.Go(func() error {
			for j := range queues[w] {
				if err := r.control.Send(gctx, keys[j%c], numbered('u', j, r.cfg.Payload)); err != nil {
					return fmt.Errorf("control send %d: %w", j, err)
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer func() {
			for _, q := range queues {
				close(q)
			}
		}()
		for j := range total {
			if err := sleepUntil(gctx, intended(j)); err != nil {
				return err
			}
			queues[(j%c)%workers] <- j
		}
		return nil
	})
	g.Go(func() error {
		return receiveAll(gctx, conns, seqs, func(i int, msg received) {
			j, err := parseNumbered('u', msg.text)
			if err != nil || j%c != i || j >= total {
				seqs[i].Observe(-1)
				return
			}
			seqs[i].Observe(j / c)
			lat.Record(msg.at.Sub(intended(j)))
		})
	})
	err = g.Wait()
	wall := time.Since(start)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Scenario: ScenarioUnicastRate, Variant: fmt.Sprintf("%.0f/s", r.cfg.Rate), Clients: c, LatencyFrom: "intended send (control API)", Target: r.cfg.Rate, Open: ptr(open.Summary())}
	finish(&rep, seqs, lat, wall)
	if rep.Gateway, _, err = m.stop(ctx, rep.Messages); err != nil {
		return rep, err
	}
	return rep, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func clientKeys(conns []*client.Conn) []protocol.ClientKey {
	keys := make([]protocol.ClientKey, len(conns))
	for i, c := range conns {
		keys[i] = c.ClientKey()
	}
	return keys
}

// inbound: each of clients sends n echo requests keeping window in flight (echo is one client,
// window 1); latency from the client's send to the verified echo.
func (r *runner) inbound(ctx context.Context, name string, clients, n, window int) (Report, error) {
	conns, open, err := r.openSessions(ctx, clients, sessionOptions{messageBuffer: 4 * max(n, 16)})
	if err != nil {
		return Report{}, err
	}
	defer closeAll(conns)
	seqs := make([]*Sequence, clients)
	for i := range seqs {
		seqs[i] = NewSequence(n)
	}
	lat := NewLatencies()
	m, err := r.startMeter(ctx)
	if err != nil {
		return Report{}, err
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, conn := range conns {
		g.Go(func() error {
			if err := echoLoop(gctx, r.logger, conn, n, window, seqs[i], lat); err != nil {
				return fmt.Errorf("client %d: %w", i, err)
			}
			return nil
		})
	}
	err = g.Wait()
	wall := time.Since(m.start)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Scenario: name, Clients: clients, LatencyFrom: "client send", Open: ptr(open.Summary())}
	if window > 1 {
		rep.Variant = "window " + strconv.Itoa(window)
	}
	finish(&rep, seqs, lat, wall)
	if rep.Gateway, _, err = m.stop(ctx, rep.Messages); err != nil {
		return rep, err
	}
	return rep, nil
}

// echoLoop sends n numbered texts with at most window unanswered and accounts for the echoes. At
// debug level log marks the send and the receipt of each (stagetrace).
func echoLoop(ctx context.Context, log *slog.Logger, conn *client.Conn, n, window int, seq *Sequence, lat *Latencies) error {
	var progress atomic.Int64
	wctx, stop := watchProgress(ctx, &progress)
	defer stop()
	sentAt := make([]atomic.Int64, n)
	next, inFlight := 0, 0
	for !seq.Complete() {
		for inFlight < window && next < n {
			// Stamp before sending: the echo may arrive before Send returns.
			sentAt[next].Store(time.Now().UnixNano())
			stagetrace.Mark(ctx, log, stagetrace.ClientSend)
			if err := sendText(wctx, conn, numbered('i', next, 0)); err != nil {
				return err
			}
			next++
			inFlight++
		}
		m, err := receive(wctx, conn)
		if stalled(wctx, err) {
			return nil
		}
		if err != nil {
			return err
		}
		stagetrace.Mark(ctx, log, stagetrace.ClientDelivered)
		progress.Add(1)
		k, perr := parseNumbered('i', m.text)
		if perr != nil || k >= n {
			seq.Observe(-1)
			continue
		}
		seq.Observe(k)
		lat.Record(m.at.Sub(time.Unix(0, sentAt[k].Load())))
		inFlight--
	}
	return nil
}

// fanout broadcasts to every client of the canister at Rate/Clients broadcasts per second for
// Duration; latency from each broadcast's intended time.
func (r *runner) fanout(ctx context.Context) (Report, error) {
	c := r.cfg.Clients
	broadcasts := max(int(r.cfg.Rate*r.cfg.Duration.Seconds())/c, 1)
	conns, open, err := r.openSessions(ctx, c, sessionOptions{messageBuffer: 1024})
	if err != nil {
		return Report{}, err
	}
	defer closeAll(conns)
	seqs := make([]*Sequence, c)
	for i := range seqs {
		seqs[i] = NewSequence(broadcasts)
	}
	interval := time.Duration(float64(time.Second) * float64(c) / r.cfg.Rate)
	lat := NewLatencies()
	m, err := r.startMeter(ctx)
	if err != nil {
		return Report{}, err
	}
	start := m.start.Add(10 * time.Millisecond)
	intended := func(b int) time.Time { return start.Add(time.Duration(b) * interval) }
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		for b := range broadcasts {
			if err := sleepUntil(gctx, intended(b)); err != nil {
				return err
			}
			got, err := r.control.Broadcast(gctx, numbered('f', b, r.cfg.Payload))
			if err != nil {
				return fmt.Errorf("broadcast %d: %w", b, err)
			}
			if got < c {
				return fmt.Errorf("broadcast %d reached %d clients of the canister, want at least %d", b, got, c)
			}
		}
		return nil
	})
	g.Go(func() error {
		return receiveAll(gctx, conns, seqs, func(i int, msg received) {
			b, err := parseNumbered('f', msg.text)
			if err != nil {
				seqs[i].Observe(-1)
				return
			}
			seqs[i].Observe(b)
			lat.Record(msg.at.Sub(intended(b)))
		})
	})
	err = g.Wait()
	wall := time.Since(start)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Scenario: ScenarioFanout, Variant: fmt.Sprintf("%d broadcasts", broadcasts), Clients: c, LatencyFrom: "intended broadcast (control API)", Target: r.cfg.Rate, Open: ptr(open.Summary())}
	finish(&rep, seqs, lat, wall)
	if rep.Gateway, _, err = m.stop(ctx, rep.Messages); err != nil {
		return rep, err
	}
	return rep, nil
}

// resume drops one resuming client, has the canister send it k messages, waits until the gateway
// has them, and lets the client resume: the figures run from its resume frame.
func (r *runner) resume(ctx context.Context, k int) (Report, error) {
	dialer := &gatedDialer{}
	conns, open, err := r.openSessions(ctx, 1, sessionOptions{messageBuffer: k + 16, resume: true, dialer: dialer})
	if err != nil {
		return Report{}, err
	}
	defer closeAll(conns)
	conn := conns[0]
	var polledBefore float64
	if r.scraper != nil {
		s, err := r.scraper.Sample(ctx)
		if err != nil {
			return Report{}, err
		}
		polledBefore = s[metricPolled]
	}
	if err := dialer.drop(); err != nil {
		return Report{}, err
	}
	defer dialer.release()
	key := conn.ClientKey()
	for j := range k {
		if err := r.control.Send(ctx, key, numbered('r', j, r.cfg.Payload)); err != nil {
			return Report{}, fmt.Errorf("control send %d: %w", j, err)
		}
	}
	if err := r.awaitPolled(ctx, polledBefore+float64(k)); err != nil {
		return Report{}, err
	}
	m, err := r.startMeter(ctx)
	if err != nil {
		return Report{}, err
	}
	dialer.release()
	seq := NewSequence(k)
	var first, last time.Time
	var arrivals []time.Time
	err = receiveAll(ctx, conns, []*Sequence{seq}, func(_ int, msg received) {
		j, perr := parseNumbered('r', msg.text)
		if perr != nil {
			seq.Observe(-1)
			return
		}
		seq.Observe(j)
		if first.IsZero() {
			first = msg.at
		}
		last = msg.at
		arrivals = append(arrivals, msg.at)
	})
	if err != nil {
		return Report{}, err
	}
	rc, dials := dialer.current()
	if dials < 2 || conn.Resumes() < 1 {
		return Report{}, fmt.Errorf("the client did not resume (dials %d, resumes %d)", dials, conn.Resumes())
	}
	frame := rc.firstFrameAt()
	lat := NewLatencies()
	for _, at := range arrivals {
		lat.Record(at.Sub(frame))
	}
	rep := Report{
		Scenario: ScenarioResume, Variant: "k=" + strconv.Itoa(k), Clients: 1, LatencyFrom: "resume frame (each replayed message)",
		Open: ptr(open.Summary()),
		Resume: &ResumeTimes{
			Missed:         k,
			FrameToLastMs:  ms(last.Sub(frame)),
			FrameToFirstMs: ms(first.Sub(frame)),
			DialToLastMs:   ms(last.Sub(rc.dialed)),
		},
	}
	finish(&rep, []*Sequence{seq}, lat, last.Sub(frame))
	var after Sample
	if rep.Gateway, after, err = m.stop(ctx, rep.Messages); err != nil {
		return rep, err
	}
	if n := after[metricReplayCount] - m.before[metricReplayCount]; n > 0 {
		rep.Resume.GatewayMs = 1000 * (after[metricReplaySum] - m.before[metricReplaySum]) / n
	}
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// awaitPolled waits until the pollers have published at least want messages in total (so the
// missed messages are in the gateway's stream); without metrics it waits Settle.
func (r *runner) awaitPolled(ctx context.Context, want float64) error {
	if r.scraper == nil {
		return sleepUntil(ctx, time.Now().Add(r.cfg.Settle))
	}
	deadline := time.Now().Add(stallTimeout)
	for {
		s, err := r.scraper.Sample(ctx)
		if err != nil {
			return err
		}
		if !s.Has(metricPolled) {
			return sleepUntil(ctx, time.Now().Add(r.cfg.Settle))
		}
		if s[metricPolled] >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the gateway's pollers published %.0f messages in %s, want %.0f", s[metricPolled], stallTimeout, want)
		}
		if err := sleepUntil(ctx, time.Now().Add(20*time.Millisecond)); err != nil {
			return err
		}
	}
}
