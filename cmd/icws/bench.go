package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/bench"
	"github.com/icws/icws/internal/config"
)

type benchConfig struct {
	config.Log
	Gateway     string        `envconfig:"BENCH_GATEWAY" default:"ws://127.0.0.1:8080" desc:"icws bench: WebSocket URL of the gateway under test"`
	ICURL       string        `envconfig:"BENCH_IC_URL" default:"http://127.0.0.1:4943" desc:"icws bench: IC HTTP endpoint for the root key"`
	Canister    string        `envconfig:"BENCH_CANISTER" default:"bkyz2-fmaaa-aaaaa-qaaaq-cai" desc:"icws bench: the demo canister (echo and burst:N)"`
	Clients     int           `envconfig:"BENCH_CLIENTS" default:"10" desc:"icws bench: clients connected at once"`
	Messages    int           `envconfig:"BENCH_MESSAGES" default:"200" desc:"icws bench: echo requests per client"`
	Burst       int           `envconfig:"BENCH_BURST" default:"200" desc:"icws bench: burst:N messages requested per client"`
	Window      int           `envconfig:"BENCH_WINDOW" default:"16" desc:"icws bench: echo requests a client keeps in flight"`
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
	return nil
}

func benchCommand() command {
	return configured("bench", "measure a running gateway with many clients (echo round trips, canister → client delivery)",
		func(ctx context.Context, a *app, cfg *benchConfig, logger *slog.Logger, _ []string) error {
			ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			defer cancel()
			bcfg := bench.Config{
				GatewayURL: cfg.Gateway, ICURL: cfg.ICURL, Canister: principal.MustDecode(cfg.Canister),
				Clients: cfg.Clients, Messages: cfg.Messages, Burst: cfg.Burst, Window: cfg.Window,
				AckInterval: cfg.AckInterval, Logger: logger,
			}
			if err := bcfg.Validate(); err != nil {
				return &config.Error{Err: fmt.Errorf("ICWS_BENCH_*: %w", err)}
			}
			res, err := bench.Run(ctx, bcfg)
			if err != nil {
				return err
			}
			fmt.Fprint(a.stdout, res.String())
			return nil
		})
}
