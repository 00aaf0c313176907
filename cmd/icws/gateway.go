package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	agentid "github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/icws/icws/admin"
	"github.com/icws/icws/broker"
	"github.com/icws/icws/edge"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/identity"
	"github.com/icws/icws/internal/config"
	"github.com/icws/icws/poller"
	"github.com/icws/icws/submitter"
)

// mainnetURL is the IC API that `icws all` talks to unless ICWS_IC_URL says otherwise.
const mainnetURL = "https://icp-api.io"

// ICSettings is how submitters and pollers reach the IC.
type ICSettings struct {
	ICURL        string `envconfig:"IC_URL" default:"https://icp-api.io" desc:"IC API URL used by submitters and pollers (mainnet: https://icp-api.io; icws dev uses its replica)"`
	ICRootKey    string `envconfig:"IC_ROOT_KEY" desc:"hex DER root key of the IC network; empty: the built-in key for mainnet URLs, else fetched from <IC_URL>/api/v2/status at start"`
	ICAPIVersion int    `envconfig:"IC_API_VERSION" default:"3" desc:"version of the call endpoint used to relay client envelopes: 3 (synchronous, certified) or 2"`
}

func (s *ICSettings) validate() error {
	if !strings.HasPrefix(s.ICURL, "http://") && !strings.HasPrefix(s.ICURL, "https://") {
		return fmt.Errorf("ICWS_IC_URL=%q: must be an http:// or https:// URL", s.ICURL)
	}
	if s.ICAPIVersion != 2 && s.ICAPIVersion != 3 {
		return fmt.Errorf("ICWS_IC_API_VERSION=%d: must be 2 or 3", s.ICAPIVersion)
	}
	if s.ICRootKey != "" {
		if _, err := hex.DecodeString(s.ICRootKey); err != nil {
			return fmt.Errorf("ICWS_IC_ROOT_KEY: not hex: %w", err)
		}
	}
	return nil
}

func (s *ICSettings) rootKey() []byte {
	k, _ := hex.DecodeString(s.ICRootKey) // validated
	return k
}

// The role configurations are wrapped so that all can be embedded in one command configuration
// (each type is named Config) while keeping the plain ICWS_ prefix.
type (
	EdgeSettings      struct{ edge.Config }
	SubmitterSettings struct{ submitter.Config }
	PollerSettings    struct{ poller.Config }
)

// roleSet says which roles one process runs.
type roleSet struct{ edge, submitter, poller bool }

func (r roleSet) needsIC() bool { return r.submitter || r.poller }

func (r roleSet) String() string {
	var names []string
	for _, n := range []struct {
		on   bool
		name string
	}{{r.edge, "edge"}, {r.submitter, "submitter"}, {r.poller, "poller"}} {
		if n.on {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, "+")
}

// GatewayConfig is everything the gateway roles may read; each command validates the parts it uses.
type GatewayConfig struct {
	config.Common
	broker.ClientConfig
	broker.Topology
	ICSettings
	EdgeSettings
	SubmitterSettings
	PollerSettings
}

// gatewayParts is what runGateway needs beyond the configuration.
type gatewayParts struct {
	roles roleSet
	// embedded, when set, is the in-process NATS server to use instead of ClientConfig.URL.
	embedded *broker.Embedded
	// icURL and icRootKey override the IC settings (icws dev points them at its replica).
	icURL     string
	icRootKey []byte
}

func (c *GatewayConfig) validateFor(roles roleSet, external bool) error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if err := c.Topology.Validate(); err != nil {
		return err
	}
	if external && c.ClientConfig.URL == "" {
		return errors.New("ICWS_NATS_URL: required for a single role (nats://host:4222, comma-separated for a cluster)")
	}
	if external {
		if err := c.ClientConfig.Validate(); err != nil {
			return err
		}
	}
	if roles.needsIC() {
		if err := c.ICSettings.validate(); err != nil {
			return err
		}
	}
	if err := config.CheckHostPort(c.EdgeSettings.Listen); roles.edge && err != nil {
		return fmt.Errorf("ICWS_LISTEN=%q: %w", c.EdgeSettings.Listen, err)
	}
	return nil
}

// runGateway runs the chosen roles until ctx ends, with an admin server, then shuts down in order:
// roles drain first, then the NATS connection closes.
func runGateway(ctx context.Context, cfg *GatewayConfig, parts gatewayParts, logger *slog.Logger) error {
	nc, err := connectNATS(ctx, cfg, parts, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := broker.JetStream(nc)
	if err != nil {
		return err
	}
	if err := ensureWithRetry(ctx, js, cfg.Topology, logger); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	checks := []admin.Check{{Name: "nats", Func: broker.ConnCheck(nc)}, {Name: "streams", Func: streamsCheck(js)}}

	var gateway principal.Principal
	var id *agentid.Ed25519Identity
	if parts.roles.needsIC() || parts.embedded != nil {
		// Submitters and pollers sign; the one-host modes create the key on first start.
		var created bool
		id, created, err = identity.LoadOrCreate(cfg.IdentityPath(), logger)
		if err != nil {
			return err
		}
		if created {
			logger.Info("created a new gateway key", "file", cfg.IdentityPath())
		}
		gateway = id.Sender()
	} else if gateway, err = identity.Principal(cfg.IdentityPath()); err != nil {
		return fmt.Errorf("gateway principal: %w (an edge needs the shared key file of the deployment; create it with `icws identity`)", err)
	}
	logger.Info("gateway principal", "principal", gateway.String(), "roles", parts.roles.String())

	var ic *icclient.Client
	if parts.roles.needsIC() {
		icURL, rootKey := cfg.ICURL, cfg.ICSettings.rootKey()
		if parts.icURL != "" {
			icURL, rootKey = parts.icURL, parts.icRootKey
		}
		ic, err = icclient.New(ctx, icclient.Config{
			URL: icURL, RootKey: rootKey, Identity: id, CallAPIVersion: cfg.ICAPIVersion,
			Logger: logger.With("component", "icclient"),
		})
		if err != nil {
			return fmt.Errorf("IC client for %s: %w", icURL, err)
		}
	}

	type role interface {
		Run(context.Context) error
		Ready(context.Context) error
	}
	var roles []role
	// addRole takes a role constructor's results, so each role is built, checked and registered alike.
	addRole := func(name string, r role, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		roles = append(roles, r)
		checks = append(checks, admin.Check{Name: name, Func: r.Ready})
		return nil
	}
	if parts.roles.edge {
		r, err := edge.New(cfg.EdgeSettings.Config, edge.Deps{NC: nc, JS: js, Gateway: gateway, Logger: logger.With("role", "edge"), Registry: reg})
		if err := addRole("edge", r, err); err != nil {
			return err
		}
	}
	if parts.roles.submitter {
		r, err := submitter.New(cfg.SubmitterSettings.Config, submitter.Deps{NC: nc, JS: js, IC: ic, Logger: logger.With("role", "submitter"), Registry: reg})
		if err := addRole("submitter", r, err); err != nil {
			return err
		}
	}
	if parts.roles.poller {
		r, err := poller.New(cfg.PollerSettings.Config, poller.Deps{NC: nc, JS: js, IC: ic, Logger: logger.With("role", "poller"), Registry: reg})
		if err := addRole("poller", r, err); err != nil {
			return err
		}
	}

	adm := admin.New(cfg.AdminListen, reg, checks, logger.With("component", "admin"))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Run(gctx) })
	for _, r := range roles {
		g.Go(func() error { return r.Run(gctx) })
	}
	if addr, err := adm.Addr(gctx); err == nil {
		logger.Info("admin listening", "url", "http://"+addr.String())
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	// Roles have drained; flush what the connection still holds before it closes.
	drainCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if derr := drainNATS(drainCtx, nc); derr != nil {
		logger.Warn("NATS drain", "err", derr)
	}
	return err
}

func connectNATS(ctx context.Context, cfg *GatewayConfig, parts gatewayParts, logger *slog.Logger) (*nats.Conn, error) {
	name := "icws-" + parts.roles.String()
	if parts.embedded != nil {
		return parts.embedded.Connect(ctx, name)
	}
	return broker.Connect(ctx, cfg.ClientConfig, name, logger.With("component", "nats"))
}

// ensureWithRetry creates or updates the streams; on a cluster that is still electing a leader the
// first attempts fail, so it retries until ctx ends.
func ensureWithRetry(ctx context.Context, js jetstream.JetStream, topo broker.Topology, logger *slog.Logger) error {
	delay := 200 * time.Millisecond
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := broker.Ensure(attemptCtx, js, topo)
		cancel()
		if err == nil {
			return nil
		}
		if permanentEnsureError(err) {
			return &config.Error{Err: fmt.Errorf("ensure streams: %w", err)}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("ensure streams: %w", err)
		}
		logger.Warn("streams not ready yet; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("ensure streams: %w", err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// permanentEnsureError tells a configuration the servers refuse (retrying cannot help) from a
// cluster that is not ready yet.
func permanentEnsureError(err error) bool {
	if errors.Is(err, broker.ErrPartitionsMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 408
}

func streamsCheck(js jetstream.JetStream) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := broker.Open(ctx, js)
		return err
	}
}

func drainNATS(ctx context.Context, nc *nats.Conn) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		return err
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return ctx.Err()
	}
}

// wsURL is the WebSocket URL clients use for a listen address.
func wsURL(listen string, tls bool) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "ws"
	if tls {
		scheme = "wss"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
