package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	"github.com/icws/icws/bus"
	"github.com/icws/icws/edge"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/identity"
	"github.com/icws/icws/internal/config"
	"github.com/icws/icws/internal/redact"
	"github.com/icws/icws/poller"
	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/submitter"
)

// mainnetURL is the IC API that `icws all` talks to unless ICWS_IC_URL says otherwise.
const mainnetURL = "https://icp-api.io"

// ICNetwork is which IC network the gateway serves and how its root key is settled: submitters
// and pollers verify certificates with it, edges the canister signatures of Internet Identity
// users.
type ICNetwork struct {
	ICURL     string `envconfig:"IC_URL" default:"https://icp-api.io" desc:"IC API URL used by submitters and pollers, and by edges for the root key (mainnet: https://icp-api.io; icws dev uses its replica)"`
	ICRootKey string `envconfig:"IC_ROOT_KEY" desc:"hex DER root key of the IC network (verifies certificates and the canister signatures of Internet Identity users); empty: the built-in key for mainnet URLs, else fetched from <IC_URL>/api/v2/status at start"`
}

func (s *ICNetwork) validate() error {
	if !strings.HasPrefix(s.ICURL, "http://") && !strings.HasPrefix(s.ICURL, "https://") {
		return fmt.Errorf("ICWS_IC_URL=%q: must be an http:// or https:// URL", s.ICURL)
	}
	if s.ICRootKey != "" {
		k, err := hex.DecodeString(s.ICRootKey)
		if err != nil {
			return fmt.Errorf("ICWS_IC_ROOT_KEY: not hex: %w", err)
		}
		if _, err := certificate.ParseBLSPublicKeyDER(k); err != nil {
			return fmt.Errorf("ICWS_IC_ROOT_KEY: %w", err)
		}
	}
	return nil
}

func (s *ICNetwork) rootKey() []byte {
	k, _ := hex.DecodeString(s.ICRootKey) // validated
	return k
}

// ICSettings is how submitters and pollers reach the IC.
type ICSettings struct {
	ICNetwork
	ICMaxIdleConns int `envconfig:"IC_MAX_IDLE_CONNS" default:"64" desc:"idle HTTP connections submitters and pollers keep to the IC API for reuse; fewer than the requests in flight makes each extra request open (and on HTTPS, handshake) a connection of its own"`
	ICAPIVersion   int `envconfig:"IC_API_VERSION" default:"3" desc:"version of the call endpoint used to relay client envelopes: 3 (synchronous, certified) or 2"`
	// ICVerifyQuerySignatures false is for local replicas that answer queries unsigned; icclient
	// refuses it for mainnet URLs.
	ICVerifyQuerySignatures bool `envconfig:"IC_VERIFY_QUERY_SIGNATURES" default:"true" desc:"verify the node signatures of query answers (ws_get_messages); false only for local replicas that do not sign them (refused for mainnet URLs)"`
}

func (s *ICSettings) validate() error {
	if err := s.ICNetwork.validate(); err != nil {
		return err
	}
	if s.ICAPIVersion != 2 && s.ICAPIVersion != 3 {
		return fmt.Errorf("ICWS_IC_API_VERSION=%d: must be 2 or 3", s.ICAPIVersion)
	}
	if s.ICMaxIdleConns < 1 {
		return fmt.Errorf("ICWS_IC_MAX_IDLE_CONNS=%d: must be at least 1", s.ICMaxIdleConns)
	}
	return nil
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
	bus.ClientConfig
	bus.Topology
	ICSettings
	EdgeSettings
	SubmitterSettings
	PollerSettings
}

// gatewayParts is what runGateway needs beyond the configuration.
type gatewayParts struct {
	roles roleSet
	// embedded, when set, is the in-process NATS server to use instead of ClientConfig.URL.
	embedded *bus.Embedded
	// icURL and icRootKey override the IC settings (icws dev points them at its replica).
	icURL     string
	icRootKey []byte
	// onReady, if set, runs once every role is ready (icws dev prints its URLs then, last).
	onReady func()
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
	if err := c.ClientConfig.Validate(); err != nil {
		return err
	}
	if roles.needsIC() {
		if err := c.ICSettings.validate(); err != nil {
			return err
		}
	} else if roles.edge {
		if err := c.ICNetwork.validate(); err != nil {
			return err
		}
	}
	if err := config.CheckHostPort(c.EdgeSettings.Listen); roles.edge && err != nil {
		return fmt.Errorf("ICWS_LISTEN=%q: %w", c.EdgeSettings.Listen, err)
	}
	// Each role checks its own settings again when it is made; checked here, a bad value stops
	// the command before anything starts, with the usage exit status.
	for _, r := range []struct {
		on       bool
		validate func() error
	}{
		{roles.edge, c.EdgeSettings.Validate},
		{roles.submitter, c.SubmitterSettings.Validate},
		{roles.poller, c.PollerSettings.Validate},
	} {
		if r.on {
			if err := r.validate(); err != nil {
				return err
			}
		}
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
	js, err := bus.JetStream(nc)
	if err != nil {
		return err
	}
	if cfg.Topology.EnsureStreams || parts.embedded != nil {
		err = ensureWithRetry(ctx, js, cfg.Topology, logger)
	} else {
		err = waitForStreams(ctx, js, logger)
	}
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	checks := []admin.Check{{Name: "nats", Func: bus.ConnCheck(nc)}, {Name: "streams", Func: streamsCheck(js)}}

	var gateway principal.Principal
	var id *agentid.Ed25519Identity
	if parts.roles.needsIC() || parts.embedded != nil {
		// Submitters and pollers sign; the one-host modes create the key on first start.
		var created bool
		id, created, err = identity.LoadOrCreate(cfg.IdentityPath(), logger)
		if err != nil {
			return err
		}
		gateway = id.Sender()
		if !created { // LoadOrCreate says so when it creates one
			logger.Info("gateway principal", "principal", gateway.String(), "key", cfg.IdentityPath())
		}
	} else if gateway, err = identity.Principal(cfg.IdentityPath()); err != nil {
		return fmt.Errorf("gateway principal: %w (an edge needs the shared key file of the deployment; create it with `icws identity`)", err)
	} else {
		logger.Info("gateway principal", "principal", gateway.String(), "key", cfg.IdentityPath())
	}

	var ic *icclient.Client
	icURL, rootKey := cfg.ICURL, cfg.ICNetwork.rootKey()
	if parts.icURL != "" {
		icURL, rootKey = parts.icURL, parts.icRootKey
	}
	if parts.roles.needsIC() {
		ic, err = icclient.New(ctx, icclient.Config{
			URL: icURL, RootKey: rootKey, Identity: id, CallAPIVersion: cfg.ICAPIVersion,
			MaxIdleConns:        cfg.ICMaxIdleConns,
			SkipQuerySignatures: !cfg.ICVerifyQuerySignatures,
			Logger:              logger.With("component", "icclient"),
		})
		if err != nil {
			return fmt.Errorf("IC client for %s: %w", redact.URL(icURL), err)
		}
		rootKey = ic.RootKey()
	} else if parts.roles.edge {
		if rootKey, err = edgeRootKey(ctx, icURL, rootKey, logger); err != nil {
			return err
		}
	}

	// With an external cluster, a server that lost its cluster is left for another (every role).
	var watch *bus.ClusterWatch
	if parts.embedded == nil {
		moves := prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icws_nats_cluster_moves_total",
			Help: "Reconnects to another NATS server because JetStream stayed silent through one that answered.",
		})
		reg.MustRegister(moves)
		watch = bus.NewClusterWatch(nc, js, cfg.ClientConfig.JetStreamTimeout, logger.With("component", "nats"), moves.Inc)
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
		r, err := edge.New(cfg.EdgeSettings.Config, edge.Deps{
			NC: nc, JS: js, Gateway: gateway, RootKey: rootKey, Logger: logger.With("role", "edge"), Registry: reg,
			InProcessBus: parts.embedded != nil, ClusterWatch: watch,
		})
		if err := addRole("edge", r, err); err != nil {
			return err
		}
	}
	if parts.roles.submitter {
		r, err := submitter.New(cfg.SubmitterSettings.Config, submitter.Deps{NC: nc, JS: js, IC: ic, Logger: logger.With("role", "submitter"), Registry: reg, ClusterWatch: watch})
		if err := addRole("submitter", r, err); err != nil {
			return err
		}
	}
	if parts.roles.poller {
		r, err := poller.New(cfg.PollerSettings.Config, poller.Deps{NC: nc, JS: js, IC: ic, Logger: logger.With("role", "poller"), Registry: reg, ClusterWatch: watch})
		if err := addRole("poller", r, err); err != nil {
			return err
		}
	}

	adm := admin.New(cfg.AdminListen, reg, checks, logger)
	adm.Pprof = cfg.AdminPprof
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Run(gctx) })
	for _, r := range roles {
		g.Go(func() error { return r.Run(gctx) })
	}
	if watch != nil {
		g.Go(func() error { return watch.Run(gctx) })
	}
	g.Go(func() error {
		announceReady(gctx, logger, checks, adm, edgeURL(cfg, parts.roles), parts.roles, parts.onReady)
		return nil
	})
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
	var extra []nats.Option
	if prefix, ok := parts.roles.inboxPrefix(); ok {
		extra = append(extra, nats.CustomInboxPrefix(prefix))
	}
	nc, err := bus.Connect(ctx, cfg.ClientConfig, name, logger.With("component", "nats"), extra...)
	if errors.Is(err, bus.ErrRefused) {
		return nil, &config.Error{Err: err}
	}
	return nc, err
}

// inboxPrefix is the reply-subject prefix of a single-role process, _INBOX.<role>: NATS
// permissions can then let each role read only its own replies (deploy/nats/auth.conf).
func (r roleSet) inboxPrefix() (string, bool) {
	switch r {
	case roleSet{edge: true}, roleSet{submitter: true}, roleSet{poller: true}:
		return "_INBOX." + r.String(), true
	}
	return "", false
}

// waitForStreams waits until another process has created the streams and buckets
// (ICWS_ENSURE_STREAMS=false: this process's NATS user may not manage them).
func waitForStreams(ctx context.Context, js jetstream.JetStream, logger *slog.Logger) error {
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		attemptCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := bus.Open(attemptCtx, js)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for streams: %w", err)
		}
		if attempt == 1 {
			logger.Info("waiting for the streams and buckets (ICWS_ENSURE_STREAMS=false: another process creates them)", "err", err)
		} else {
			logger.Debug("streams not there yet", "err", err, "in", delay)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for streams: %w", err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// ensureWithRetry creates or updates the streams; on a cluster that is still electing a leader the
// first attempts fail, so it retries until ctx ends.
func ensureWithRetry(ctx context.Context, js jetstream.JetStream, topo bus.Topology, logger *slog.Logger) error {
	delay := 200 * time.Millisecond
	for {
		// One attempt creates five replicated streams and buckets at once: on a fresh cluster, with
		// another process creating the same ones, that can take the servers many seconds (each
		// request is bounded on its own by bus.Ensure).
		attemptCtx, cancel := context.WithTimeout(ctx, time.Minute)
		err := bus.Ensure(attemptCtx, js, topo)
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
	if errors.Is(err, bus.ErrPartitionsMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.Code < 400 || apiErr.Code >= 500 || apiErr.Code == 408 {
		return false
	}
	// "No suitable peers for placement, peer offline": a cluster still forming, or a node down for
	// a moment; other reasons for the same code (too few nodes for the replicas, no storage) stay.
	return apiErr.ErrorCode != jsErrClusterNoPeers || !strings.Contains(apiErr.Description, "offline")
}

// jsErrClusterNoPeers is nats-server's JSClusterNoPeersErr, which nats.go does not name.
const jsErrClusterNoPeers jetstream.ErrorCode = 10005

func streamsCheck(js jetstream.JetStream) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := bus.Open(ctx, js)
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

// edgeURL is the WebSocket URL of the edge role, or "" when the process runs none.
func edgeURL(cfg *GatewayConfig, roles roleSet) string {
	if !roles.edge {
		return ""
	}
	return wsURL(cfg.EdgeSettings.Listen, cfg.EdgeSettings.TLSCert != "")
}

// announceReady waits until every readiness check passes, then logs one line with what a user
// needs (the gateway and admin URLs) and runs onReady. A gateway that is not ready within a minute
// is announced anyway, with the checks that still fail: /readyz tells the rest.
func announceReady(ctx context.Context, logger *slog.Logger, checks []admin.Check, adm *admin.Server, gatewayURL string, roles roleSet, onReady func()) {
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var failing []string
	for {
		failing = failing[:0]
		for _, c := range checks {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			if err := c.Func(cctx); err != nil {
				failing = append(failing, c.Name)
			}
			cancel()
		}
		if len(failing) == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	attrs := []any{"roles", roles.String()}
	if gatewayURL != "" {
		attrs = append(attrs, "gateway", gatewayURL)
	}
	if addr, err := adm.Addr(ctx); err == nil {
		attrs = append(attrs, "admin", "http://"+addr.String())
	}
	if len(failing) > 0 {
		logger.Warn("gateway started, not ready yet", append(attrs, "not_ready", strings.Join(failing, ","))...)
	} else {
		logger.Info("gateway ready", attrs...)
	}
	if onReady != nil {
		onReady()
	}
}

// Bounds of edgeRootKey: a local network that is still starting gets a few tries, and a start
// never waits longer than rootKeyTimeout for a key.
const (
	rootKeyTimeout    = 60 * time.Second
	rootKeyRetryDelay = 2 * time.Second
)

// edgeRootKey settles the root key for an edge that runs without submitter or poller, as they
// would (icclient.RootKey): configured, built in for the mainnet, or fetched from
// <icURL>/api/v2/status, retried until rootKeyTimeout.
func edgeRootKey(ctx context.Context, icURL string, configured []byte, logger *slog.Logger) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, rootKeyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: 10 * time.Second}
	log := logger.With("component", "icclient")
	for {
		key, err := icclient.RootKey(ctx, icURL, configured, hc, log)
		if err == nil {
			return key, nil
		}
		var herr *icclient.HTTPError
		var terr *icclient.TransportError
		retry := errors.As(err, &herr) && herr.Retryable() || errors.As(err, &terr)
		if !retry || ctx.Err() != nil {
			return nil, fmt.Errorf("IC root key for the edge (verifies the canister signatures of Internet Identity users) from %s/api/v2/status: %w; set ICWS_IC_ROOT_KEY to give it instead", redact.URL(strings.TrimRight(icURL, "/")), err)
		}
		logger.Warn("IC root key not fetched yet; retrying", "url", redact.URL(icURL), "err", err, "in", rootKeyRetryDelay)
		select {
		case <-ctx.Done():
		case <-time.After(rootKeyRetryDelay):
		}
	}
}
