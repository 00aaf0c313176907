package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/bench"
	"github.com/icws/icws/internal/config"
)

type benchConfig struct {
	config.Log
	Gateway     string        `envconfig:"BENCH_GATEWAY" default:"ws://127.0.0.1:8080" desc:"icws bench: WebSocket URL of the gateway under test"`
	ICURL       string        `envconfig:"BENCH_IC_URL" default:"http://127.0.0.1:4943" desc:"icws bench: IC HTTP endpoint for the root key and the demo canister's test control API (the replica simulator)"`
	Canister    string        `envconfig:"BENCH_CANISTER" default:"bkyz2-fmaaa-aaaaa-qaaaq-cai" desc:"icws bench: the demo canister (echo, burst:N, control API)"`
	Scenario    []string      `envconfig:"BENCH_SCENARIO" default:"inbound,unicast-saturate" desc:"icws bench: comma-separated scenarios, or all: idle, unicast-rate, unicast-saturate, inbound, echo, resume, fanout"`
	Metrics     []string      `envconfig:"BENCH_METRICS" default:"http://127.0.0.1:9090" desc:"icws bench: comma-separated admin URLs of the gateway processes, scraped for CPU and memory before and after each scenario; empty: no gateway cost"`
	Clients     int           `envconfig:"BENCH_CLIENTS" default:"10" desc:"icws bench: clients connected at once (unicast-rate, unicast-saturate, inbound, fanout)"`
	Messages    int           `envconfig:"BENCH_MESSAGES" default:"200" desc:"icws bench: echo requests per client (inbound; keep it within ICWS_MAX_CLIENT_BURST of the gateway), round trips of echo and of idle"`
	Burst       int           `envconfig:"BENCH_BURST" default:"200" desc:"icws bench: burst:N messages requested per client (unicast-saturate)"`
	Window      int           `envconfig:"BENCH_WINDOW" default:"16" desc:"icws bench: echo requests a client keeps in flight (inbound)"`
	Sessions    int           `envconfig:"BENCH_SESSIONS" default:"1000" desc:"icws bench: sessions opened and held (idle); the bench raises its own open-file limit, the gateway needs one as large"`
	Hold        time.Duration `envconfig:"BENCH_HOLD" default:"10s" desc:"icws bench: how long idle holds its sessions (idle CPU is measured over it)"`
	Rate        float64       `envconfig:"BENCH_RATE" default:"1000" desc:"icws bench: canister → client messages per second delivered in total (unicast-rate, fanout)"`
	Duration    time.Duration `envconfig:"BENCH_DURATION" default:"10s" desc:"icws bench: how long unicast-rate and fanout send"`
	Payload     int           `envconfig:"BENCH_PAYLOAD" default:"1024" desc:"icws bench: bytes of each text the canister sends through the control API (unicast-rate, resume, fanout)"`
	Missed      []int         `envconfig:"BENCH_MISSED" default:"100,1000" desc:"icws bench: comma-separated K, messages sent while a client is away (resume; one run each)"`
	Settle      time.Duration `envconfig:"BENCH_SETTLE" default:"2s" desc:"icws bench: resume waits this long for missed messages to reach the gateway when the pollers' metrics are not scraped"`
	AckInterval time.Duration `envconfig:"BENCH_ACK_INTERVAL" default:"300s" desc:"icws bench: the canister's send_ack_interval"`
	Timeout     time.Duration `envconfig:"BENCH_TIMEOUT" default:"5m" desc:"icws bench: give up after this long"`
}

func (c *benchConfig) Validate() error {
	if err := c.Log.Validate(); err != nil {
		return err
	}
	if _, err := principal.Decode(c.Canister); err != nil {
		return fmt.Errorf("ICWS_BENCH_CANISTER=%q: not a principal: %w", c.Canister, err)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("ICWS_BENCH_TIMEOUT=%s: must be positive", c.Timeout)
	}
	c.Scenario = trimList(c.Scenario)
	if slices.Contains(c.Scenario, "all") {
		c.Scenario = bench.ScenarioNames()
	}
	c.Metrics = trimList(c.Metrics)
	return nil
}

// trimList drops blanks around and between comma-separated items ("a, b," is [a b]).
func trimList(items []string) []string {
	var out []string
	for _, s := range items {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// errIntegrity marks a run in which some client lost, duplicated or reordered messages.
var errIntegrity = errors.New("messages were lost, duplicated or reordered")

func benchCommand() command {
	return configured("bench", "measure a running gateway and its own cost: idle sessions, unicast at a rate and at saturation, inbound, echo, resume, fan-out",
		func(ctx context.Context, a *app, cfg *benchConfig, logger *slog.Logger, _ []string) error {
			ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			defer cancel()
			bcfg := bench.Config{
				GatewayURL: cfg.Gateway, ICURL: cfg.ICURL, Canister: principal.MustDecode(cfg.Canister),
				Scenarios: cfg.Scenario, Clients: cfg.Clients, Messages: cfg.Messages, Burst: cfg.Burst, Window: cfg.Window,
				Sessions: cfg.Sessions, Hold: cfg.Hold, Rate: cfg.Rate, Duration: cfg.Duration, Payload: cfg.Payload,
				Missed: cfg.Missed, Settle: cfg.Settle, AckInterval: cfg.AckInterval, Metrics: cfg.Metrics, Logger: logger,
			}
			if err := bcfg.Validate(); err != nil {
				return &config.Error{Err: fmt.Errorf("ICWS_BENCH_*: %w", err)}
			}
			reports, runErr := bench.Run(ctx, bcfg)
			if len(reports) > 0 {
				if err := bench.WriteTable(a.stdout, reports); err != nil {
					return err
				}
				if err := bench.WriteJSON(a.stdout, reports); err != nil {
					return err
				}
			}
			if runErr != nil {
				return runErr
			}
			var failed []string
			for _, r := range reports {
				if !r.OK() {
					failed = append(failed, fmt.Sprintf("%s %s: %+v", r.Scenario, r.Variant, r.Integrity))
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("%w: %s", errIntegrity, strings.Join(failed, "; "))
			}
			return nil
		})
}
