package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/config"
)

// The configurations of `icws edge|submitter|poller`: one role against an external NATS server or
// cluster (ICWS_NATS_URL). Each names only what its role reads, so `icws env` and the README say
// which variables matter where.
type (
	EdgeConfig struct {
		config.Common
		bus.ClientConfig
		bus.Topology
		ICNetwork
		EdgeSettings
	}
	SubmitterConfig struct {
		config.Common
		bus.ClientConfig
		bus.Topology
		ICSettings
		SubmitterSettings
	}
	PollerConfig struct {
		config.Common
		bus.ClientConfig
		bus.Topology
		ICSettings
		PollerSettings
	}
)

// gateway returns the parts of the configuration that runGateway reads.
func (c *EdgeConfig) gateway() *GatewayConfig {
	return &GatewayConfig{Common: c.Common, ClientConfig: c.ClientConfig, Topology: c.Topology, ICSettings: ICSettings{ICNetwork: c.ICNetwork}, EdgeSettings: c.EdgeSettings}
}

func (c *SubmitterConfig) gateway() *GatewayConfig {
	return &GatewayConfig{Common: c.Common, ClientConfig: c.ClientConfig, Topology: c.Topology, ICSettings: c.ICSettings, SubmitterSettings: c.SubmitterSettings}
}

func (c *PollerConfig) gateway() *GatewayConfig {
	return &GatewayConfig{Common: c.Common, ClientConfig: c.ClientConfig, Topology: c.Topology, ICSettings: c.ICSettings, PollerSettings: c.PollerSettings}
}

// The Validate methods check at load what runSingle checks, so that `icws env check <role>` finds
// the same errors as starting the role.
func (c *EdgeConfig) Validate() error {
	return c.gateway().validateFor(roleSet{edge: true}, true)
}

func (c *SubmitterConfig) Validate() error {
	return c.gateway().validateFor(roleSet{submitter: true}, true)
}

func (c *PollerConfig) Validate() error {
	return c.gateway().validateFor(roleSet{poller: true}, true)
}

// runSingle validates a single role's configuration and runs it.
func runSingle(ctx context.Context, cfg *GatewayConfig, roles roleSet, logger *slog.Logger) error {
	if err := cfg.validateFor(roles, true); err != nil {
		return &config.Error{Err: err}
	}
	return runGateway(ctx, cfg, gatewayParts{roles: roles}, logger)
}

func edgeCommand() command {
	return configured("edge", "run the WebSocket edge role against ICWS_NATS_URL",
		func(ctx context.Context, _ *app, c *EdgeConfig, logger *slog.Logger, _ []string) error {
			return runSingle(ctx, c.gateway(), roleSet{edge: true}, logger)
		})
}

func submitterCommand() command {
	return configured("submitter", "run the submitter role (relays client envelopes to the IC) against ICWS_NATS_URL",
		func(ctx context.Context, _ *app, c *SubmitterConfig, logger *slog.Logger, _ []string) error {
			return runSingle(ctx, c.gateway(), roleSet{submitter: true}, logger)
		})
}

func pollerCommand() command {
	return configured("poller", "run the poller role (polls canisters for messages) against ICWS_NATS_URL",
		func(ctx context.Context, _ *app, c *PollerConfig, logger *slog.Logger, _ []string) error {
			return runSingle(ctx, c.gateway(), roleSet{poller: true}, logger)
		})
}

// allConfig is the configuration of `icws all`: every role in one process, with the embedded NATS
// server unless ICWS_NATS_URL names an external one.
type allConfig struct {
	GatewayConfig
	bus.ServerConfig
}

func (c *allConfig) Validate() error {
	if err := c.ServerConfig.Validate(); err != nil {
		return err
	}
	return c.GatewayConfig.validateFor(roleSet{edge: true, submitter: true, poller: true}, false)
}

func allCommand() command {
	return configured("all", "run every role in one process with an embedded NATS server (the default)",
		func(ctx context.Context, a *app, cfg *allConfig, logger *slog.Logger, _ []string) error {
			roles := roleSet{edge: true, submitter: true, poller: true}
			parts := gatewayParts{roles: roles}
			if cfg.ClientConfig.URL == "" {
				emb, err := startEmbedded(ctx, cfg.ServerConfig, logger)
				if err != nil {
					return err
				}
				defer shutdownEmbedded(emb, logger)
				parts.embedded = emb
			}
			fmt.Fprintf(a.stdout, "gateway: %s\n", wsURL(cfg.EdgeSettings.Listen, cfg.EdgeSettings.TLSCert != ""))
			return runGateway(ctx, &cfg.GatewayConfig, parts, logger)
		})
}

func startEmbedded(ctx context.Context, cfg bus.ServerConfig, logger *slog.Logger) (*bus.Embedded, error) {
	emb, err := bus.StartEmbedded(ctx, cfg, logger.With("component", "nats"))
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	return emb, nil
}

func shutdownEmbedded(emb *bus.Embedded, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := emb.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		logger.Warn("embedded NATS shutdown", "err", err)
	}
}
