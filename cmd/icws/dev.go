package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/icws/icws/broker"
	"github.com/icws/icws/internal/config"
)

// devConfig is the configuration of `icws dev`: the replica simulator with the demo canister and
// every gateway role with an embedded NATS server, on loopback defaults.
type devConfig struct {
	ReplicaConfig
	GatewayConfig
	broker.ServerConfig
}

// devDefaultListen keeps `icws dev` on loopback unless ICWS_LISTEN says otherwise.
const devDefaultListen = "127.0.0.1:8080"

func (c *devConfig) Validate() error {
	if os.Getenv(config.Prefix+"_LISTEN") == "" {
		c.EdgeSettings.Listen = devDefaultListen
	}
	// The demo canister's control API is for a developer's tests on this machine: on by default
	// only while the replica listens on loopback; an explicit ICWS_REPLICA_CONTROL always wins.
	if _, set := os.LookupEnv(config.Prefix + "_REPLICA_CONTROL"); !set {
		c.ReplicaSettings.CanisterControl = isLoopback(c.ReplicaConfig.Listen)
	}
	if err := c.ReplicaConfig.Validate(); err != nil {
		return err
	}
	if err := c.ServerConfig.Validate(); err != nil {
		return err
	}
	return c.GatewayConfig.validateFor(roleSet{edge: true, submitter: true, poller: true}, false)
}

func devCommand() command {
	return configured("dev", "run the replica simulator with the demo canister and every gateway role on loopback (for frontend development)",
		func(ctx context.Context, a *app, cfg *devConfig, logger *slog.Logger, _ []string) error {
			r, ln, err := startReplica(ctx, &cfg.ReplicaConfig, logger)
			if err != nil {
				return err
			}
			replicaURL := "http://" + ln.Addr().String()
			emb, err := startEmbedded(ctx, cfg.ServerConfig, logger)
			if err != nil {
				ln.Close()
				return err
			}
			defer shutdownEmbedded(emb, logger)

			fmt.Fprintf(a.stdout, "gateway:  %s\n", wsURL(cfg.EdgeSettings.Listen, cfg.EdgeSettings.TLSCert != ""))
			fmt.Fprintf(a.stdout, "replica:  %s\n", replicaURL)
			fmt.Fprintf(a.stdout, "canister: %s\n", cfg.CanisterID)
			fmt.Fprintf(a.stdout, "root key: %s\n", hex.EncodeToString(r.RootKey()))
			fmt.Fprintf(a.stdout, "admin:    http://%s\n", cfg.AdminListen)

			// The replica outlives the gateway: submitters drain against it on the way out.
			replicaCtx, stopReplica := context.WithCancel(context.Background())
			defer stopReplica()
			replicaDone := make(chan error, 1)
			go func() { replicaDone <- r.Serve(replicaCtx, ln) }()
			parts := gatewayParts{
				roles:    roleSet{edge: true, submitter: true, poller: true},
				embedded: emb,
				icURL:    replicaURL, icRootKey: r.RootKey(),
			}
			gwCtx, stopGateway := context.WithCancel(ctx)
			defer stopGateway()
			gwDone := make(chan error, 1)
			go func() { gwDone <- runGateway(gwCtx, &cfg.GatewayConfig, parts, logger) }()
			var err1, err2 error
			select {
			case err1 = <-gwDone:
				stopReplica()
				err2 = <-replicaDone
			case err2 = <-replicaDone:
				stopGateway()
				err1 = <-gwDone
				if err2 == nil {
					err2 = errors.New("replica stopped")
				}
			}
			return errors.Join(err1, err2)
		})
}

// listenReplica opens the replica's listener (so its address is known before it serves).
func listenReplica(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("replica listen on %s: %w", addr, err)
	}
	return ln, nil
}
