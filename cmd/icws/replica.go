package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/internal/config"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
)

// The replica and canister configurations are wrapped so both can be embedded (both types are
// named Config) and keep the plain ICWS_ prefix.
type (
	ReplicaSettings  struct{ replica.Config }
	CanisterSettings struct{ wscanister.Config }
)

type ReplicaConfig struct {
	config.Log
	Listen     string `envconfig:"REPLICA_LISTEN" default:"127.0.0.1:4943" desc:"host:port of the local replica simulator"`
	CanisterID string `envconfig:"REPLICA_CANISTER_ID" default:"bkyz2-fmaaa-aaaaa-qaaaq-cai" desc:"canister id of the demo ic-websocket canister in the replica simulator"`
	ReplicaSettings
	CanisterSettings
}

func (c *ReplicaConfig) Validate() error {
	if err := c.Log.Validate(); err != nil {
		return err
	}
	if err := config.CheckHostPort(c.Listen); err != nil {
		return fmt.Errorf("ICWS_REPLICA_LISTEN=%q: %w", c.Listen, err)
	}
	if _, err := principal.Decode(c.CanisterID); err != nil {
		return fmt.Errorf("ICWS_REPLICA_CANISTER_ID=%q: not a principal: %w", c.CanisterID, err)
	}
	r, w := &c.ReplicaSettings.Config, &c.CanisterSettings.Config
	for _, d := range []struct {
		name string
		bad  bool
		want string
	}{
		{"ICWS_REPLICA_UPDATE_LATENCY", r.UpdateLatency < 0, "must not be negative"},
		{"ICWS_REPLICA_SYNC_CALL_TIMEOUT", r.SyncCallTimeout <= 0, "must be positive"},
		{"ICWS_REPLICA_MAX_REQUEST_BYTES", r.MaxRequestBytes < 1024, "must be at least 1024"},
		{"ICWS_REPLICA_MAX_INGRESS_TTL", r.MaxIngressTTL <= 0, "must be positive"},
		{"ICWS_REPLICA_INGRESS_DRIFT", r.IngressDrift < 0, "must not be negative"},
		{"ICWS_REPLICA_REPLY_RETENTION", r.ReplyRetention < 0, "must not be negative"},
		{"ICWS_REPLICA_SHUTDOWN_TIMEOUT", r.ShutdownTimeout <= 0, "must be positive"},
		{"ICWS_REPLICA_ACK_INTERVAL", w.AckInterval <= 0, "must be positive"},
		{"ICWS_REPLICA_KEEPALIVE_TIMEOUT", w.KeepAliveTimeout <= 0, "must be positive"},
		{"ICWS_REPLICA_MAX_RETURNED_MESSAGES", w.MaxReturnedMessages < 1, "must be at least 1"},
		{"ICWS_REPLICA_DELETE_BATCH", w.DeleteBatch < 1, "must be at least 1"},
		{"ICWS_REPLICA_MAX_BURST", w.MaxBurst < 1, "must be at least 1"},
		{"ICWS_REPLICA_MAX_LOGGED_TEXTS", w.MaxLoggedTexts < 1, "must be at least 1"},
	} {
		if d.bad {
			return fmt.Errorf("%s: %s", d.name, d.want)
		}
	}
	return nil
}

func replicaCommand() command {
	return configured("replica", "run the local IC replica simulator with the demo ic-websocket canister",
		func(ctx context.Context, a *app, cfg *ReplicaConfig, logger *slog.Logger, _ []string) error {
			r, ln, err := startReplica(ctx, cfg, logger)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "url: http://%s\n", ln.Addr())
			fmt.Fprintf(a.stdout, "root key: %s\n", hex.EncodeToString(r.RootKey()))
			fmt.Fprintf(a.stdout, "canister id: %s\n", cfg.CanisterID)
			return r.Serve(ctx, ln)
		})
}

// startReplica builds the simulator with the demo canister and opens its listener.
func startReplica(ctx context.Context, cfg *ReplicaConfig, logger *slog.Logger) (*replica.Replica, net.Listener, error) {
	id, err := principal.Decode(cfg.CanisterID)
	if err != nil {
		return nil, nil, err
	}
	rcfg := cfg.ReplicaSettings.Config
	rcfg.Logger = logger.With("component", "replica")
	r, err := replica.New(rcfg)
	if err != nil {
		return nil, nil, err
	}
	wcfg := cfg.CanisterSettings.Config
	wcfg.Logger = logger.With("component", "wscanister", "canister", cfg.CanisterID)
	err = r.Install(id, func(h replica.Host) (replica.Canister, error) {
		return wscanister.New(wcfg, h)
	})
	if err != nil {
		return nil, nil, err
	}
	ln, err := listenReplica(ctx, cfg.Listen)
	if err != nil {
		return nil, nil, err
	}
	if !isLoopback(cfg.Listen) {
		if rcfg.CanisterControl {
			logger.Warn("TEST ONLY: the canister control API (ICWS_REPLICA_CONTROL) is served on a non-loopback address: anyone who reaches it can make the canister send, close clients or wipe its state", "listen", cfg.Listen)
		}
		if rcfg.TestHooks {
			logger.Warn("TEST ONLY: the corruption hooks (ICWS_REPLICA_TEST_HOOKS) are served on a non-loopback address", "listen", cfg.Listen)
		}
	}
	return r, ln, nil
}

// isLoopback says whether a host:port listen address only accepts connections from this machine.
func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
