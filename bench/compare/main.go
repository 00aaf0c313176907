//go:build linux

// Command compare runs icws, Centrifugo and a NATS JetStream ceiling on this machine, on
// loopback, in the same shapes, and prints the figures side by side with their ratios. It builds
// the peers with `go install` (module proxy), starts and stops every server itself and removes its
// temporary directory. It is a separate module so that the icws module does not depend on the
// peers' client libraries. Run it with bench/compare/run.sh; docs/BENCHMARKS.md explains the rows.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type config struct {
	repo         string
	peers        map[string]bool
	sessions     int
	hold         time.Duration
	clients      int
	messages     int
	payload      int
	rate         int
	duration     time.Duration
	missed       int
	natsMessages int
	markdown     string
	keep         bool
	pprof        bool
}

func main() {
	var cfg config
	var peers string
	flag.StringVar(&cfg.repo, "repo", "../..", "icws source tree (built with go build ./cmd/icws)")
	flag.StringVar(&peers, "peers", "icws,centrifugo,nats", "comma-separated peers to run")
	flag.IntVar(&cfg.sessions, "sessions", 3000, "idle connections (memory per connection)")
	flag.DurationVar(&cfg.hold, "hold", 5*time.Second, "how long idle connections are held before memory is read")
	flag.IntVar(&cfg.clients, "clients", 20, "clients of the delivery runs, each on its own channel")
	flag.IntVar(&cfg.messages, "messages", 1000, "messages per client in the delivery runs (icws: burst:N)")
	flag.IntVar(&cfg.payload, "payload", 1024, "payload bytes (Centrifugo, NATS, icws unicast-rate and resume)")
	flag.IntVar(&cfg.rate, "rate", 2000, "icws unicast-rate: messages per second in total")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "icws unicast-rate: how long it sends")
	flag.IntVar(&cfg.missed, "missed", 1000, "messages missed while disconnected, then recovered / resumed")
	flag.IntVar(&cfg.natsMessages, "nats-messages", 200000, "messages of each nats bench run")
	flag.StringVar(&cfg.markdown, "md", "", "also write the table as markdown to this file")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (binaries, server logs)")
	flag.BoolVar(&cfg.pprof, "pprof", false, "start icws all with ICWS_ADMIN_PPROF=true")
	flag.Parse()
	cfg.peers = map[string]bool{}
	for _, p := range strings.Split(peers, ",") {
		cfg.peers[strings.TrimSpace(p)] = true
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, cfg); err != nil {
		logger.Error("compare failed", "err", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, cfg config) error {
	repo, err := filepath.Abs(cfg.repo)
	if err != nil {
		return err
	}
	cfg.repo = repo
	tmp, err := os.MkdirTemp("", "icws-compare-")
	if err != nil {
		return err
	}
	if cfg.keep {
		logger.Info("keeping the temporary directory", "dir", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	// Every server started below inherits the limit.
	raiseFileLimit(uint64(cfg.sessions)*2 + 4096)

	var t table
	if cfg.peers["icws"] {
		r, err := runIcwsPeer(ctx, logger, cfg, tmp)
		if err != nil {
			return fmt.Errorf("icws: %w", err)
		}
		t.icws = &r
	}
	if cfg.peers["centrifugo"] {
		r, err := runCentrifugoPeer(ctx, logger, cfg, tmp)
		if err != nil {
			return fmt.Errorf("centrifugo: %w", err)
		}
		t.cf = &r
	}
	if cfg.peers["nats"] {
		r, err := runNatsPeer(ctx, logger, cfg, tmp)
		if err != nil {
			return fmt.Errorf("nats: %w", err)
		}
		t.nats = &r
	}
	t.cfg = cfg
	t.write(os.Stdout)
	if cfg.markdown != "" {
		f, err := os.Create(cfg.markdown)
		if err != nil {
			return err
		}
		t.write(f)
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// table renders the comparison as markdown.
type table struct {
	cfg  config
	icws *icwsResults
	cf   *cfResults
	nats *natsResults
}

func (t table) write(w io.Writer) {
	fmt.Fprintf(w, "Measured %s on %s (%d CPUs as Go sees them, shared), loopback.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), hostname(), numCPU())
	fmt.Fprintln(w, "| figure | icws | Centrifugo "+centrifugoVersion+" | icws ÷ Centrifugo | NATS JetStream ceiling |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	row := func(name, icws, cf, ratio, nats string) {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", name, icws, cf, ratio, nats)
	}
	ratio := func(a, b float64) string {
		if a <= 0 || b <= 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	var i icwsResults
	if t.icws != nil {
		i = *t.icws
	}
	var c cfResults
	if t.cf != nil {
		c = *t.cf
	}
	dash := func(ok bool, s string) string {
		if !ok {
			return "—"
		}
		return s
	}
	// Memory per idle connection.
	var icwsRSS float64
	var idleNote string
	if r := first(i.idle); r != nil && r.Idle != nil {
		icwsRSS = r.Idle.RSSPerSession
		idleNote = fmt.Sprintf("%.0f B (heap %.0f B, %.2f goroutines; idle CPU %.1f%% of a core; echo p50 with all open %.2f ms)",
			r.Idle.RSSPerSession, r.Idle.HeapPerSession, r.Idle.GoroutinesPerSession, r.Idle.IdleCoreShare*100, r.Idle.Echo.P50Ms)
	}
	row(fmt.Sprintf("RSS per idle connection (%d, one personal channel each)", t.cfg.sessions),
		dash(t.icws != nil, idleNote),
		dash(t.cf != nil, fmt.Sprintf("%.0f B (idle CPU %.1f%% of a core)", c.rssPerConn, c.idleCPUShare*100)),
		ratio(icwsRSS, c.rssPerConn), "—")
	// CPU per delivered message.
	var satUs float64
	satNote := "—"
	if r := first(i.saturate); r != nil && r.Gateway != nil {
		satUs = r.Gateway.CPUMicrosPerMessage
		share := r.Gateway.CPUSeconds / (r.Gateway.CPUSeconds + i.saturate.replicaCPU + i.saturate.benchCPU)
		satNote = fmt.Sprintf("%.1f µs (%d msgs, %.0f msg/s, p50 %.0f ms p99 %.0f ms, gateway share of CPU %.0f%%; lost/dup/order %s)",
			satUs, r.Messages, r.PerSecond, r.Latency.P50Ms, r.Latency.P99Ms, share*100, integrity(r.Integrity))
	}
	var rateUs float64
	rateNote := "—"
	if r := first(i.rate); r != nil && r.Gateway != nil {
		rateUs = r.Gateway.CPUMicrosPerMessage
		rateNote = fmt.Sprintf("%.1f µs at %d msg/s, %d B (p50 %.0f ms p99 %.0f ms from intended send; lost/dup/order %s)",
			rateUs, t.cfg.rate, t.cfg.payload, r.Latency.P50Ms, r.Latency.P99Ms, integrity(r.Integrity))
	}
	cfNote := dash(t.cf != nil, fmt.Sprintf("%.1f µs (%d msgs, %.0f msg/s, %d B, p50 %.0f ms p99 %.0f ms from batch publish, server share of CPU %.0f%%; lost/dup/order %d/%d/%d)",
		c.cpuMicrosPerMessage, c.delivered, c.perSecond, t.cfg.payload, c.deliveryP50, c.deliveryP99, c.serverShare*100, c.lost, c.dup, c.reordered))
	natsPub, natsCons := "—", "—"
	if t.nats != nil {
		natsPub = fmt.Sprintf("JS publish: %.0f msg/s, server %.1f µs/msg", t.nats.publish.perSecond, t.nats.publish.serverMicrosPer)
		natsCons = fmt.Sprintf("JS consume: %.0f msg/s, server %.1f µs/msg", t.nats.consume.perSecond, t.nats.consume.serverMicrosPer)
	}
	row(fmt.Sprintf("server CPU per delivered message, %d clients × %d at saturation (icws: burst:N)", t.cfg.clients, t.cfg.messages),
		satNote, cfNote, ratio(satUs, c.cpuMicrosPerMessage), natsPub)
	row(fmt.Sprintf("server CPU per delivered message, %d clients, fixed rate (icws: unicast-rate)", t.cfg.clients),
		rateNote, cfNote, ratio(rateUs, c.cpuMicrosPerMessage), natsCons)
	// Recovery.
	var resumeMs float64
	resumeNote := "—"
	if r := first(i.resume); r != nil && r.Resume != nil {
		resumeMs = r.Resume.DialToLastMs
		resumeNote = fmt.Sprintf("reconnect dial → last %.0f ms (resume frame → last %.0f ms, → first %.0f ms; edge alone: resume frame → last queued %.0f ms; lost/dup/order %s)",
			r.Resume.DialToLastMs, r.Resume.FrameToLastMs, r.Resume.FrameToFirstMs, r.Resume.GatewayMs, integrity(r.Integrity))
	}
	row(fmt.Sprintf("recovery of %d missed messages", t.cfg.missed), resumeNote,
		dash(t.cf != nil, fmt.Sprintf("connect → last recovered %.0f ms (recovered flag %v; lost %d, dup/order %d)", c.connectToLastMs, c.recovered, c.recoverLost, c.recoverDupes)),
		ratio(resumeMs, c.connectToLastMs), "—")
	if r := first(i.echo); r != nil {
		row("client → server → client echo, one in flight (icws: through the canister)", fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", r.Latency.P50Ms, r.Latency.P99Ms), "—", "—", "—")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	fmt.Fprintln(w)
	for _, run := range []icwsRun{i.idle, i.saturate, i.rate, i.echo, i.resume} {
		if run.command != "" {
			fmt.Fprintf(w, "- icws: `%s`\n", run.command)
		}
	}
	if t.nats != nil {
		fmt.Fprintf(w, "- NATS: `%s`\n- NATS: `%s`\n", t.nats.publish.command, t.nats.consume.command)
	}
}

func first(r icwsRun) *icwsReport {
	if len(r.reports) == 0 {
		return nil
	}
	return &r.reports[0]
}

func integrity(m map[string]int) string {
	return fmt.Sprintf("%d/%d/%d", m["lost"], m["duplicated"], m["out_of_order"])
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "this host"
	}
	return h
}
