package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/demo"
	"github.com/icws/icws/internal/config"
)

// devConfig is the configuration of `icws dev`: the replica simulator with the demo canister and
// every gateway role with an embedded NATS server, on loopback defaults.
type devConfig struct {
	ReplicaConfig
	GatewayConfig
	bus.ServerConfig
	DemoSettings
}

// DemoSettings place the demo page of `icws dev`.
type DemoSettings struct {
	DemoListen string `envconfig:"DEMO_LISTEN" default:"127.0.0.1:8090" desc:"host:port of the demo page (a chat with the demo canister through the gateway, ic-websocket-js with resume); empty: no page"`
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
	if c.DemoListen != "" {
		if err := config.CheckHostPort(c.DemoListen); err != nil {
			return fmt.Errorf("ICWS_DEMO_LISTEN=%q: %w", c.DemoListen, err)
		}
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
			gatewayURL := wsURL(cfg.EdgeSettings.Listen, cfg.EdgeSettings.TLSCert != "")
			page, err := startDemoPage(ctx, cfg.DemoListen, demo.Config{
				GatewayURL: gatewayURL, ICURL: replicaURL, CanisterID: cfg.CanisterID,
				AckIntervalMs: cfg.CanisterSettings.AckInterval.Milliseconds(),
			}, logger)
			if err != nil {
				ln.Close()
				return err
			}
			defer page.stop()
			emb, err := startEmbedded(ctx, cfg.ServerConfig, logger)
			if err != nil {
				ln.Close()
				return err
			}
			defer shutdownEmbedded(emb, logger)

			// The replica outlives the gateway: submitters drain against it on the way out.
			replicaCtx, stopReplica := context.WithCancel(context.Background())
			defer stopReplica()
			replicaDone := make(chan error, 1)
			go func() { replicaDone <- r.Serve(replicaCtx, ln) }()
			parts := gatewayParts{
				roles:    roleSet{edge: true, submitter: true, poller: true},
				embedded: emb,
				icURL:    replicaURL, icRootKey: r.RootKey(),
				// What a developer needs comes last, once everything answers.
				onReady: func() {
					fmt.Fprintf(a.stdout, "gateway:  %s\n", gatewayURL)
					fmt.Fprintf(a.stdout, "replica:  %s\n", replicaURL)
					fmt.Fprintf(a.stdout, "canister: %s\n", cfg.CanisterID)
					fmt.Fprintf(a.stdout, "root key: %s\n", hex.EncodeToString(r.RootKey()))
					fmt.Fprintf(a.stdout, "admin:    http://%s\n", cfg.AdminListen)
					if page.url != "" {
						fmt.Fprintf(a.stdout, "demo:     %s\n", page.url)
					}
				},
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
		return nil, fmt.Errorf("replica listen on %s (ICWS_REPLICA_LISTEN): %w", addr, err)
	}
	return ln, nil
}

// demoPage is the running demo page server; the zero value is no page.
type demoPage struct {
	url  string
	stop func()
}

// startDemoPage serves the demo page on addr (nothing when addr is empty) until stop is called.
func startDemoPage(ctx context.Context, addr string, cfg demo.Config, logger *slog.Logger) (demoPage, error) {
	if addr == "" {
		return demoPage{stop: func() {}}, nil
	}
	h, err := demo.Handler(cfg)
	if err != nil {
		return demoPage{}, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return demoPage{}, fmt.Errorf("demo page listen on %s (ICWS_DEMO_LISTEN): %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("demo page server", "err", err)
		}
	}()
	stop := func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		<-done
	}
	return demoPage{url: "http://" + hostPortForURL(ln.Addr().String()) + "/", stop: stop}, nil
}

// hostPortForURL turns a listen address into one a browser on this host can open.
func hostPortForURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
