// Package bench measures a running ic-websocket gateway with many Go clients against the demo
// canister of the replica simulator, and the gateway's own cost while it does: CPU seconds and
// resident memory scraped from the gateway processes' /metrics before and after each scenario.
//
// Scenarios (Config.Scenarios):
//
//	idle              N sessions opened and held: memory and goroutines per session, idle CPU, echo
//	                  round trips while they are open
//	unicast-rate      canister → client at a fixed total rate (test control API send), latency from
//	                  the intended send time, so a stalled gateway cannot hide (no coordinated omission)
//	unicast-saturate  every client asks for burst:N at once; latency from the canister's send
//	inbound           client → canister → client echo, each client with a window in flight
//	echo              one client, one message in flight: round-trip percentiles
//	resume            a client drops, K messages are sent meanwhile, it resumes: time from the resume
//	                  frame to the last replayed message
//	fanout            broadcasts to every client of the canister at a fixed rate
//
// Every scenario checks that each client got each message once and in order (Integrity). It is
// the engine of `icws bench`; run it on the host of the replica, whose clock stamps canister
// messages.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/client"
	"github.com/icws/icws/replica/wscanister"
)

// Scenario names.
const (
	ScenarioIdle            = "idle"
	ScenarioUnicastRate     = "unicast-rate"
	ScenarioUnicastSaturate = "unicast-saturate"
	ScenarioInbound         = "inbound"
	ScenarioEcho            = "echo"
	ScenarioResume          = "resume"
	ScenarioFanout          = "fanout"
)

// ScenarioNames lists every scenario in the order "all" runs them.
func ScenarioNames() []string {
	return []string{ScenarioIdle, ScenarioUnicastRate, ScenarioUnicastSaturate, ScenarioInbound, ScenarioEcho, ScenarioResume, ScenarioFanout}
}

// Config says what to run.
type Config struct {
	GatewayURL string
	// ICURL serves the root key (/api/v2/status) and the demo canister's test control API.
	ICURL    string
	Canister principal.Principal
	// Scenarios to run, in order; names from ScenarioNames.
	Scenarios []string

	// Clients connect at once in unicast-rate, unicast-saturate, inbound and fanout.
	Clients int
	// Messages is the echo requests per client (inbound) and the round trips of echo.
	Messages int
	// Burst is the burst:N each client asks for (unicast-saturate).
	Burst int
	// Window bounds the echo requests a client has in flight (inbound).
	Window int
	// Sessions are opened and held for Hold (idle).
	Sessions int
	Hold     time.Duration
	// Rate is the canister → client messages per second delivered in total, for Duration
	// (unicast-rate, and fanout where each broadcast delivers Clients messages).
	Rate     float64
	Duration time.Duration
	// Payload pads the texts the canister sends through the control API to this many bytes
	// (unicast-rate, resume, fanout).
	Payload int
	// Missed lists the K of each resume run.
	Missed []int
	// Settle is how long resume waits for the missed messages to reach the gateway when no
	// metrics tell it (Metrics empty).
	Settle time.Duration
	// AckInterval is the canister's send_ack_interval.
	AckInterval time.Duration
	// Metrics are the admin URLs of the gateway processes; empty: no gateway cost is reported.
	Metrics []string
	Logger  *slog.Logger
}

// Validate checks the numbers and names.
func (c Config) Validate() error {
	for _, s := range c.Scenarios {
		if !slices.Contains(ScenarioNames(), s) {
			return fmt.Errorf("unknown scenario %q (known: %s)", s, strings.Join(ScenarioNames(), ", "))
		}
	}
	switch {
	case len(c.Scenarios) == 0:
		return errors.New("no scenario")
	case c.Clients < 1:
		return fmt.Errorf("clients must be at least 1 (got %d)", c.Clients)
	case c.Messages < 1 || c.Burst < 1:
		return fmt.Errorf("messages and burst must be at least 1 (got %d, %d)", c.Messages, c.Burst)
	case c.Window < 1:
		return fmt.Errorf("window must be at least 1 (got %d)", c.Window)
	case c.Sessions < 1:
		return fmt.Errorf("sessions must be at least 1 (got %d)", c.Sessions)
	case c.Hold < 0 || c.Settle < 0:
		return errors.New("hold and settle must not be negative")
	case c.Rate <= 0 || c.Duration <= 0:
		return fmt.Errorf("rate and duration must be positive (got %g/s for %s)", c.Rate, c.Duration)
	case c.Payload < 0 || c.Payload > maxPayload:
		return fmt.Errorf("payload must be 0..%d bytes (got %d)", maxPayload, c.Payload)
	case len(c.Missed) == 0:
		return errors.New("missed: at least one K for resume")
	}
	for _, k := range c.Missed {
		if k < 1 {
			return fmt.Errorf("missed: K must be at least 1 (got %d)", k)
		}
	}
	return nil
}

// maxPayload keeps padded texts well inside the control API's request limit (1 MiB).
const maxPayload = 512 << 10

// Run runs the scenarios in order and returns one Report per run (resume gives one per K). It
// stops at the first scenario that fails to run; a scenario that runs but loses, duplicates or
// reorders messages is reported (Report.Integrity), not an error.
func Run(ctx context.Context, cfg Config) ([]Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r, err := newRunner(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer r.http.CloseIdleConnections()
	var reports []Report
	for _, name := range cfg.Scenarios {
		r.logger.Info("scenario starting", "scenario", name)
		got, err := r.run(ctx, name)
		for _, rep := range got {
			r.logger.Info("scenario done", "scenario", rep.Scenario, "variant", rep.Variant, "messages", rep.Messages, "integrity", rep.Integrity)
		}
		reports = append(reports, got...)
		if err != nil {
			return reports, fmt.Errorf("scenario %s: %w", name, err)
		}
		if err := r.settle(ctx); err != nil {
			return reports, err
		}
	}
	return reports, nil
}

// settleTimeout bounds the wait for the gateway to finish the closes of a scenario's sessions.
const settleTimeout = 5 * time.Minute

// settle waits until the gateway is quiet again after a scenario: its sessions closed on the edge
// and their ws_close calls relayed (no client in flight, no envelope counted for three samples in
// a row), so the next scenario neither pays for the last one nor queues behind it. Without
// metrics it returns at once; after settleTimeout it logs and goes on.
func (r *runner) settle(ctx context.Context) error {
	if r.scraper == nil {
		return nil
	}
	deadline := time.Now().Add(settleTimeout)
	quiet, lastEnvelopes := 0, -1.0
	for quiet < 3 {
		s, err := r.scraper.Sample(ctx)
		if err != nil {
			return err
		}
		if s[metricConnections] <= r.baseConnections && s[metricInFlight] == 0 && s[metricEnvelopes] == lastEnvelopes {
			quiet++
		} else {
			quiet = 0
		}
		lastEnvelopes = s[metricEnvelopes]
		if time.Now().After(deadline) {
			r.logger.Warn("the gateway is still busy with the last scenario's sessions; going on", "connections", s[metricConnections], "clients_in_flight", s[metricInFlight])
			return nil
		}
		if err := sleepUntil(ctx, time.Now().Add(200*time.Millisecond)); err != nil {
			return err
		}
	}
	return nil
}

// runner holds what every scenario shares.
type runner struct {
	cfg     Config
	logger  *slog.Logger
	rootKey []byte
	http    *http.Client
	control *wscanister.ControlClient
	scraper *Scraper // nil without metrics
	// baseConnections are the gateway's open connections before the run (other users' clients).
	baseConnections float64
}

func newRunner(ctx context.Context, cfg Config) (*runner, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Control calls run in parallel (one worker per client at most); keep their connections.
	hc := &http.Client{Transport: replayable{&http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}}
	rootKey, err := client.RootKey(ctx, cfg.ICURL, nil, hc)
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	r := &runner{
		cfg: cfg, logger: logger, rootKey: rootKey, http: hc,
		control: &wscanister.ControlClient{BaseURL: strings.TrimRight(cfg.ICURL, "/") + "/_/control/" + cfg.Canister.String(), HTTP: hc},
	}
	if len(cfg.Metrics) > 0 {
		if r.scraper, err = NewScraper(cfg.Metrics, hc); err != nil {
			return nil, err
		}
		s, err := r.scraper.Sample(ctx)
		if err != nil {
			return nil, fmt.Errorf("gateway metrics (the admin servers of the gateway processes; an empty list skips the gateway's cost): %w", err)
		}
		r.baseConnections = s[metricConnections]
	}
	return r, nil
}

// replayable marks control requests as safe to send again (Idempotency-Key), so that net/http
// retries one that met a kept-alive connection the server had just closed (EOF before any answer)
// instead of failing the scenario. A message sent twice would show as a duplicate in the report.
type replayable struct{ next http.RoundTripper }

func (t replayable) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Idempotency-Key", "bench")
	return t.next.RoundTrip(req)
}

func (r *runner) run(ctx context.Context, name string) ([]Report, error) {
	one := func(rep Report, err error) ([]Report, error) {
		if rep.Scenario == "" {
			return nil, err
		}
		return []Report{rep}, err
	}
	switch name {
	case ScenarioIdle:
		return one(r.idle(ctx))
	case ScenarioUnicastRate:
		return one(r.unicastRate(ctx))
	case ScenarioUnicastSaturate:
		return one(r.unicastSaturate(ctx))
	case ScenarioInbound:
		return one(r.inbound(ctx, ScenarioInbound, r.cfg.Clients, r.cfg.Messages, r.cfg.Window))
	case ScenarioEcho:
		return one(r.inbound(ctx, ScenarioEcho, 1, r.cfg.Messages, 1))
	case ScenarioResume:
		var reports []Report
		for _, k := range r.cfg.Missed {
			rep, err := r.resume(ctx, k)
			if rep.Scenario != "" {
				reports = append(reports, rep)
			}
			if err != nil {
				return reports, err
			}
		}
		return reports, nil
	case ScenarioFanout:
		return one(r.fanout(ctx))
	}
	return nil, fmt.Errorf("unknown scenario %q", name)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the transport.
func (t replayable) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
