// Package replica is a local simulator of an Internet Computer replica: it serves the IC's HTTPS
// interface (status, v3/v2 call, query, read_state) with real BLS certificates, node-signed query
// responses and the IC's ingress validation, so unmodified agents (agent-go, @dfinity/agent) talk
// to Go canisters as they would to the IC: what agents check (certificates, delegations, node
// signatures on queries, certificate times) is what the replica produces.
//
// Keys: a BLS root key (RootKey) and, unless Config.NoDelegation, a subnet key with a root-signed
// delegation whose canister range covers every principal; one Ed25519 node key signs queries.
// Certificate times trail the wall clock by Config.CertificateLag, as certified state does on the
// IC; query timestamps are the current time.
//
// TEST-ONLY hooks (nothing like them exists on the IC): with Config.TestHooks,
// POST /_/control/replica/corrupt?certificates=<bool>&query_signatures=<bool> makes the replica
// hand out certificates with a wrong BLS signature and query responses with a wrong node
// signature (SetCorruption is the Go form), POST /_/control/replica/stop?canister=<id> and
// /start?canister=<id> stop and start a canister as the management canister's stop_canister and
// start_canister do (SetStopped is the Go form), and POST /_/control/replica/canister-signature
// signs as an Internet Identity user of the simulated network (CanisterSigner is the Go form);
// with Config.CanisterControl, canisters implementing ControlProvider get
// /_/control/<canister id>/. The hooks carry no CORS headers and refuse requests that carry an
// Origin, so a web page cannot reach them through a browser.
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/internal/config"
	"github.com/icws/icws/protocol"
)

// Config configures a Replica. The zero value of every field selects its default.
type Config struct {
	Logger          *slog.Logger  `ignored:"true"`
	UpdateLatency   time.Duration `envconfig:"REPLICA_UPDATE_LATENCY" default:"0s" desc:"artificial delay of every update call, to mimic consensus (mainnet: about 1-2s)"`
	SyncCallTimeout time.Duration `envconfig:"REPLICA_SYNC_CALL_TIMEOUT" default:"10s" desc:"a v3 call slower than this is answered 202 Accepted (then poll read_state)"`
	// NoDelegation signs everything with the root key (local-dfx-like layout) instead of a subnet
	// key with a root-signed delegation (mainnet-like layout, the default).
	NoDelegation bool `envconfig:"REPLICA_NO_DELEGATION" default:"false" desc:"sign certificates with the root key directly instead of a delegated subnet key"`
	// NoQuerySignatures answers queries without node signatures, as some local replicas do.
	NoQuerySignatures bool `envconfig:"REPLICA_NO_QUERY_SIGNATURES" default:"false" desc:"answer queries without node signatures, like some local replicas (gateways then need ICWS_IC_VERIFY_QUERY_SIGNATURES=false)"`
	// MaxRequestBytes bounds request bodies; larger ones get 413.
	MaxRequestBytes int64 `envconfig:"REPLICA_MAX_REQUEST_BYTES" default:"5242880" desc:"largest accepted request body in bytes (413 above)"`
	// MaxIngressTTL and IngressDrift bound ingress_expiry to [now, now+MaxIngressTTL+IngressDrift].
	MaxIngressTTL time.Duration `envconfig:"REPLICA_MAX_INGRESS_TTL" default:"5m" desc:"longest accepted ingress_expiry ahead of now (IC: 5m)"`
	IngressDrift  time.Duration `envconfig:"REPLICA_INGRESS_DRIFT" default:"30s" desc:"clock drift allowance added to the ingress expiry window (IC: 30s)"`
	// ReplyRetention is how long a request's outcome is kept after its ingress_expiry.
	ReplyRetention time.Duration `envconfig:"REPLICA_REPLY_RETENTION" default:"1m" desc:"how long a call's outcome stays readable after its ingress_expiry"`
	// CertificateLag is how far certificate times trail the wall clock. On the IC a certificate
	// carries the time of the last finalized block while query responses carry the node's current
	// time; agent-js relies on that (it fetches subnet keys in parallel with a query and refuses the
	// query if its timestamp is below the newest certificate time it has seen).
	CertificateLag time.Duration `envconfig:"REPLICA_CERTIFICATE_LAG" default:"1s" desc:"how far certificate times trail the wall clock (negative: no lag)"`
	// ShutdownTimeout bounds the graceful shutdown of Serve.
	ShutdownTimeout time.Duration `envconfig:"REPLICA_SHUTDOWN_TIMEOUT" default:"5s" desc:"bound of the graceful HTTP shutdown"`
	// TestHooks enables TEST-ONLY endpoints under /_/control/replica/ that make the replica
	// corrupt its certificates or query signatures, so tests can check that agents refuse them,
	// stop or start a canister, so tests can see a gateway handle a canister that stops, and sign
	// as an Internet Identity user of the simulated network.
	TestHooks bool `envconfig:"REPLICA_TEST_HOOKS" default:"false" desc:"TEST ONLY: enable the /_/control/replica/ switches (corrupt certificates and signatures, stop and start a canister, sign as an Internet Identity user)"`
	// CanisterControl serves the control API of canisters that have one (ControlProvider) at
	// /_/control/<canister id>/. It lets anyone who reaches the replica make the canister send,
	// close clients or wipe its state, so it is off unless asked for.
	CanisterControl bool `envconfig:"REPLICA_CONTROL" default:"false" desc:"TEST ONLY: serve the demo canister's control API at /_/control/<canister id>/ (send, broadcast, close, upgrade); icws dev turns it on when the replica listens on loopback"`
}

// DefaultConfig returns the defaults the envconfig tags declare (no logger: New discards logs).
func DefaultConfig() Config { return config.MustDefaults[Config]() }

// setDefaults gives zero fields their envconfig defaults, so a Config built in code works too.
func (c *Config) setDefaults() {
	// envconfig may leave a zero slog.Logger (nil handler) behind, which would panic on use.
	if c.Logger == nil || c.Logger.Handler() == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	d := DefaultConfig()
	if c.SyncCallTimeout <= 0 {
		c.SyncCallTimeout = d.SyncCallTimeout
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = d.MaxRequestBytes
	}
	if c.MaxIngressTTL <= 0 {
		c.MaxIngressTTL = d.MaxIngressTTL
	}
	if c.IngressDrift < 0 {
		c.IngressDrift = 0
	} else if c.IngressDrift == 0 {
		c.IngressDrift = d.IngressDrift
	}
	if c.ReplyRetention <= 0 {
		c.ReplyRetention = d.ReplyRetention
	}
	if c.CertificateLag == 0 {
		c.CertificateLag = d.CertificateLag
	} else if c.CertificateLag < 0 {
		c.CertificateLag = 0
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = d.ShutdownTimeout
	}
}

// Replica is a simulated IC replica hosting Go canisters.
type Replica struct {
	cfg     Config
	log     *slog.Logger
	keys    *certauth.Authority
	ingress protocol.IngressPolicy

	mu        sync.Mutex
	canisters map[string]*canisterState
	requests  map[protocol.RequestID]*requestState
	lastPrune time.Time

	clockMu  sync.Mutex
	last     time.Time
	lastCert time.Time
	height   atomic.Uint64

	corruptCerts     atomic.Bool
	corruptQuerySigs atomic.Bool

	runMu  sync.Mutex
	runCtx context.Context
	runWG  *sync.WaitGroup
}

// New creates a replica with fresh keys and no canisters.
func New(cfg Config) (*Replica, error) {
	cfg.setDefaults()
	k, err := certauth.New(certauth.Options{Delegated: !cfg.NoDelegation, DelegationTime: time.Now().Add(-cfg.CertificateLag)})
	if err != nil {
		return nil, fmt.Errorf("replica keys: %w", err)
	}
	return &Replica{
		cfg:       cfg,
		log:       cfg.Logger,
		keys:      k,
		ingress:   protocol.IngressPolicy{MaxTTL: cfg.MaxIngressTTL, Drift: cfg.IngressDrift, RootKey: k.RootKey(), CanisterSigs: protocol.NewCanisterSigVerifier(0, 0)},
		canisters: map[string]*canisterState{},
		requests:  map[protocol.RequestID]*requestState{},
	}, nil
}

// RootKey returns the DER-encoded BLS root key (133 bytes), as /api/v2/status serves it.
func (r *Replica) RootKey() []byte { return r.keys.RootKey() }

// SubnetID returns the id of the simulated subnet (the first one published without delegation).
func (r *Replica) SubnetID() principal.Principal { return r.keys.SubnetIDs()[0] }

// CanisterSigner returns the canister-signature key of canister for seed on the simulated network:
// the kind of key Internet Identity holds for every user and app, whose signatures are
// certificates of the canister's certified data signed by this replica's keys. Tests and tools sign
// in as an Internet Identity user with it (directly, or as the root of a
// protocol.DelegationIdentity); no canister needs to be installed at canister.
func (r *Replica) CanisterSigner(canister principal.Principal, seed []byte) identity.Identity {
	return r.keys.CanisterSigner(canister, seed)
}

// NodeID returns the id of the node that signs query responses.
func (r *Replica) NodeID() principal.Principal { return r.keys.NodeID() }

// canisterState is an installed canister and what the replica keeps for it.
type canisterState struct {
	id   principal.Principal
	impl Canister

	mu            sync.Mutex
	certifiedData []byte
	// stopped: the canister is stopped; queries and new calls are rejected (IC0508).
	stopped atomic.Bool
	// tail is closed when the last queued update has finished; updates run in arrival order.
	tail chan struct{}
}

func (c *canisterState) CanisterID() principal.Principal { return c.id }

func (c *canisterState) SetCertifiedData(data []byte) error {
	if len(data) > 32 {
		return fmt.Errorf("certified data of %d bytes exceeds 32 bytes", len(data))
	}
	c.mu.Lock()
	c.certifiedData = append([]byte{}, data...)
	c.mu.Unlock()
	return nil
}

func (c *canisterState) getCertifiedData() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte{}, c.certifiedData...)
}

// Install adds a canister at id. newCanister receives the Host of that canister.
func (r *Replica) Install(id principal.Principal, newCanister func(Host) (Canister, error)) error {
	if len(id.Raw) == 0 || len(id.Raw) > protocol.MaxPrincipalBytes {
		return fmt.Errorf("install %s: not a canister id", id)
	}
	cs := &canisterState{id: id, certifiedData: []byte{}}
	impl, err := newCanister(cs)
	if err != nil {
		return fmt.Errorf("install %s: %w", id, err)
	}
	if impl == nil {
		return fmt.Errorf("install %s: constructor returned no canister", id)
	}
	cs.impl = impl
	r.mu.Lock()
	if _, ok := r.canisters[string(id.Raw)]; ok {
		r.mu.Unlock()
		return fmt.Errorf("install %s: canister already installed", id)
	}
	r.canisters[string(id.Raw)] = cs
	r.mu.Unlock()

	r.runMu.Lock()
	defer r.runMu.Unlock()
	if r.runCtx != nil && r.runCtx.Err() == nil {
		r.startRunner(r.runCtx, r.runWG, cs)
	}
	return nil
}

func (r *Replica) canister(id principal.Principal) *canisterState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.canisters[string(id.Raw)]
}

// SetStopped stops (true) or starts (false) the canister at id, as the management canister's
// stop_canister and start_canister do: a stopped canister rejects every query and every new call
// with reject code 5 (IC0508) until it is started. Calls already accepted still execute.
func (r *Replica) SetStopped(id principal.Principal, stopped bool) error {
	cs := r.canister(id)
	if cs == nil {
		return fmt.Errorf("canister %s not found", id)
	}
	cs.stopped.Store(stopped)
	return nil
}

// RunCanisters runs the Runner canisters until ctx ends (for tests that use Handler() with
// httptest); it returns when all of them have returned.
func (r *Replica) RunCanisters(ctx context.Context) {
	wg := &sync.WaitGroup{}
	r.runMu.Lock()
	r.runCtx, r.runWG = ctx, wg
	r.mu.Lock()
	list := make([]*canisterState, 0, len(r.canisters))
	for _, cs := range r.canisters {
		list = append(list, cs)
	}
	r.mu.Unlock()
	for _, cs := range list {
		r.startRunner(ctx, wg, cs)
	}
	r.runMu.Unlock()
	<-ctx.Done()
	r.runMu.Lock()
	r.runCtx, r.runWG = nil, nil
	r.runMu.Unlock()
	wg.Wait()
}

func (r *Replica) startRunner(ctx context.Context, wg *sync.WaitGroup, cs *canisterState) {
	runner, ok := cs.impl.(Runner)
	if !ok {
		return
	}
	wg.Go(func() {
		if err := runner.Run(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("canister run failed", "canister", cs.id.String(), "err", err)
		}
	})
}

// Serve serves on ln until ctx ends (graceful shutdown, bounded), running every installed
// canister's Run (if it implements Runner).
func (r *Replica) Serve(ctx context.Context, ln net.Listener) error {
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler:           r.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
	wg.Go(func() { r.RunCanisters(runCtx) })
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	r.log.Info("replica serving", "addr", ln.Addr().String())

	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		// Waiting v3 calls watch baseCtx, so they end now instead of at their timeout.
		cancelBase()
		shCtx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
		if serr := srv.Shutdown(shCtx); serr != nil {
			_ = srv.Close()
		}
		cancel()
		err = <-errc
	}
	stopRun()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("replica serve: %w", err)
}

// certTime is the time of a new certificate: the wall clock minus CertificateLag, strictly
// increasing, and never above what now() hands out.
func (r *Replica) certTime() time.Time {
	r.clockMu.Lock()
	defer r.clockMu.Unlock()
	t := time.Now().Add(-r.cfg.CertificateLag)
	if !t.After(r.lastCert) {
		t = r.lastCert.Add(time.Nanosecond)
	}
	r.lastCert = t
	if r.last.Before(t) {
		r.last = t
	}
	return t
}

// now is the replica's clock: wall-clock time, strictly increasing, so no certificate or query
// timestamp is ever older than one handed out before.
func (r *Replica) now() time.Time {
	r.clockMu.Lock()
	defer r.clockMu.Unlock()
	t := time.Now()
	if t.Before(r.lastCert) {
		t = r.lastCert
	}
	if !t.After(r.last) {
		t = r.last.Add(time.Nanosecond)
	}
	r.last = t
	return t
}
