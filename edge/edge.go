// Package edge terminates client WebSockets: it sends the gateway handshake, checks the client's
// ws_open (or icws resume) frame, relays the client's signed envelopes to ICWS_IN in order, and
// delivers the client's certified canister messages from ICWS_OUT in sequence order, exactly once,
// with replay on resume (docs/RESUME.md).
package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/ratelog"
	"github.com/icws/icws/internal/safe"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Deps are the edge's connections and identity.
type Deps struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// Gateway is the gateway principal announced in the handshake and required in ws_open.
	Gateway  principal.Principal
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// ClusterWatch hears of the edge's lease writes (nil without an external NATS cluster).
	ClusterWatch *bus.ClusterWatch

	// RootKey is the IC root key (DER) that canister signatures, the keys Internet Identity's
	// delegation chains start at, are verified against. Without it they are refused.
	RootKey []byte

	// InProcessBus says the NATS server runs in this process (icws all, icws dev): there is no
	// other server to move to and no other edge for clients to resume at, so the edge does not
	// watch its bus; a slow round trip on a busy host must not make it shed every client.
	InProcessBus bool
}

// Edge is the WebSocket termination role. Create it with New and start it with Run; Handler and
// Addr are usable while Run is running (Handler answers 503 before Run starts and while draining).
type Edge struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	h   *bus.Handles // with sessions, set by Run before anything reads them
	// inProcessBus: Deps.InProcessBus.
	inProcessBus bool
	cluster      *bus.ClusterWatch
	gateway      principal.Principal
	handshake    []byte
	log          *slog.Logger
	m            *metrics
	upgrader     websocket.Upgrader
	canisters    map[string]bool
	origins      map[string]bool
	proxies      []netip.Prefix
	sessions     *bus.Sessions
	index        *sessionIndex
	ingress      protocol.IngressPolicy
	live         *liveness
	bus          busWatch

	mu          sync.RWMutex
	liveSubs    map[string]*liveSub // live subscriptions by subject filter (delivery.go)
	byKey       map[string]*conn    // bound sessions by SessionKey; live messages are routed by it
	conns       map[*conn]struct{}  // every socket, for drain
	byAddr      map[string]int      // connections (and upgrades under way) per client address
	byPrincipal map[string]int      // bound sessions per client principal on this edge
	upgrading   int                 // admitted connections not yet in conns
	running     bool
	draining    bool
	// failed remembers canister failures announced by pollers, by canister id (guarded by fmu).
	fmu    sync.Mutex
	failed map[string]canisterFailure
	// streamsFull names a stream above StreamAdmitPercent of its byte limit (nil: room left).
	streamsFull atomic.Pointer[string]
	// unfinished counts the bytes of client messages still arriving, over all connections
	// (ratelimit.go).
	unfinished atomic.Int64
	// sockets counts the sockets net/http serves (not yet hijacked); with conns at most
	// maxSockets (sockets.go).
	sockets    atomic.Int64
	maxSockets int
	// opens limits the sessions each client address opens (admission.go).
	opens openLimiter
	// warnings keeps the warnings of limits to one a minute each; the rest are debug lines.
	warnings *ratelog.Limiter

	shards  []chan *nats.Msg
	idle    *idlePoller // nil: every connection waits in its own reader goroutine
	batches sync.Pool   // buffers of frameBatcher batches
	connWG  sync.WaitGroup
	addr    atomic.Pointer[net.Addr]
	started atomic.Bool

	// testDropLive, when set by a test, makes the live path ignore matching messages (to create gaps).
	testDropLive atomic.Pointer[func(*nats.Msg) bool]
	// testReadErr, when set by a test, makes a read of ICWS_OUT fail with its error (transient faults).
	testReadErr atomic.Pointer[func() error]
	// testLosePutAnswer, when set by a test and returning true, makes a resume's successful
	// compare-and-set of the session record look timed out (its answer lost).
	testLosePutAnswer atomic.Pointer[func() bool]
	// testSessionReplica, when set by a test before Run, wraps the sessions bucket the edge reads
	// (a replica that lags).
	testSessionReplica func(jetstream.KeyValue) jetstream.KeyValue
	// testFrame, when set by a test, sees every client frame the reader takes (to inject panics).
	testFrame atomic.Pointer[func([]byte)]
}

// New validates the configuration and builds the edge; it does no I/O (Run looks up the streams
// and buckets, which bus.Ensure must have created).
func New(cfg Config, deps Deps) (*Edge, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("edge config: %w", err)
	}
	if deps.NC == nil || deps.JS == nil {
		return nil, errors.New("edge: NATS connection and JetStream are required")
	}
	if len(deps.Gateway.Raw) == 0 {
		return nil, errors.New("edge: gateway principal is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if len(deps.RootKey) > 0 {
		if _, err := certificate.ParseBLSPublicKeyDER(deps.RootKey); err != nil {
			return nil, fmt.Errorf("edge: IC root key: %w", err)
		}
	}
	hs, err := protocol.GatewayHandshake{GatewayPrincipal: deps.Gateway.Raw}.Encode()
	if err != nil {
		return nil, err
	}
	var e *Edge // set below, before anything can scrape the metrics
	m, err := newMetrics(deps.Registry, func() float64 { return float64(e.unfinished.Load()) })
	if err != nil {
		return nil, fmt.Errorf("edge: register metrics: %w", err)
	}
	live, err := newLiveness()
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	proxies, _ := parseProxies(cfg.TrustedProxies) // validated
	e = &Edge{
		cfg: cfg, nc: deps.NC, js: deps.JS, gateway: deps.Gateway, handshake: hs, inProcessBus: deps.InProcessBus,
		cluster: deps.ClusterWatch, log: deps.Logger.With("edge", cfg.ID), m: m,
		canisters: map[string]bool{}, origins: map[string]bool{}, proxies: proxies,
		index: newSessionIndex(), live: live,
		ingress:  protocol.IngressPolicy{MaxTTL: cfg.IngressMaxTTL, Drift: cfg.IngressDrift, RootKey: deps.RootKey, CanisterSigs: protocol.NewCanisterSigVerifier(0, 0)},
		liveSubs: map[string]*liveSub{}, byKey: map[string]*conn{}, conns: map[*conn]struct{}{},
		byAddr: map[string]int{}, byPrincipal: map[string]int{}, failed: map[string]canisterFailure{},
		warnings: ratelog.New(time.Minute),
	}
	e.maxSockets, _ = socketLimit(cfg.MaxConnections, cfg.FDReserve, openFileLimit())
	for _, c := range cfg.Canisters {
		e.canisters[c] = true
	}
	for _, o := range cfg.AllowedOrigins {
		e.origins[o] = true
	}
	e.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		WriteBufferPool:  &sync.Pool{},
		// 0: gorilla reads through the buffered reader batchingWriter.Hijack hands it.
		ReadBufferSize: 0,
		CheckOrigin:    e.checkOrigin,
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			e.log.Debug("upgrade refused", "remote", r.RemoteAddr, "status", status, "reason", reason)
			http.Error(w, reason.Error(), status)
		},
	}
	e.batches.New = func() any {
		b := make([]byte, 0, batchLimit)
		return &b
	}
	n := 2 * runtime.GOMAXPROCS(0)
	e.shards = make([]chan *nats.Msg, n)
	for i := range e.shards {
		e.shards[i] = make(chan *nats.Msg, 8192)
	}
	return e, nil
}

func (e *Edge) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	// Browsers always send Origin; other clients may send any, so its absence proves nothing a
	// present one would not.
	if len(e.origins) == 0 || origin == "" {
		return true
	}
	return e.origins[origin]
}

// Addr is the listening address once Run has started listening, nil before.
func (e *Edge) Addr() net.Addr {
	if a := e.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Ready reports whether the edge serves: Run is listening, not draining, and NATS is connected.
func (e *Edge) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.RLock()
	running, draining := e.running, e.draining
	e.mu.RUnlock()
	switch {
	case !running || e.Addr() == nil:
		return errors.New("edge: not running")
	case draining:
		return errors.New("edge: draining")
	case e.busLost():
		return errors.New("edge: lost its message bus (clients shed until NATS answers again)")
	case !e.nc.IsConnected():
		return fmt.Errorf("edge: NATS not connected (%s)", e.nc.Status())
	}
	return nil
}

// Run looks up the streams and buckets, acquires the edge's liveness lease, listens, serves until
// ctx ends, then drains: it stops accepting, closes every socket with 1001 (resumable sessions are
// detached, standard ones closed), bounded by DrainTimeout.
func (e *Edge) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("edge: Run called twice")
	}
	// Everything below reads e.h and e.sessions; the handler only after Run sets running (under
	// e.mu), and tests only after Addr is set.
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	h, err := bus.Open(octx, e.js)
	cancel()
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	sessionsKV := h.Sessions
	if e.testSessionReplica != nil {
		sessionsKV = e.testSessionReplica(sessionsKV)
	}
	e.h, e.sessions = h, bus.NewSessions(sessionsKV, e.js)
	if idle, err := newIdlePoller(); err != nil {
		e.log.Warn("idle connections wait in their own goroutines", "err", err)
	} else if idle != nil {
		e.idle = idle
		idleDone := make(chan struct{})
		go func() {
			defer close(idleDone)
			if err := idle.run(); err != nil {
				e.log.Error("idle poller stopped; parked connections wait for the drain", "err", err)
			}
		}()
		defer idle.stop(idleDone) // after the drain: no connection is parked any more
	}
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	lease, err := e.acquireLease(ctx)
	if err != nil {
		return err
	}
	e.leaseRenewed()
	ctl, err := e.nc.Subscribe(bus.EdgeControlSubject(e.cfg.ID), e.onControl)
	if err != nil {
		return fmt.Errorf("edge: subscribe control subject: %w", err)
	}
	defer func() { _ = ctl.Unsubscribe() }()
	opened, err := e.nc.Subscribe(bus.OpenResultSubject(e.cfg.ID), e.onOpenResult)
	if err != nil {
		_ = ctl.Unsubscribe()
		return fmt.Errorf("edge: subscribe to open results: %w", err)
	}
	defer func() { _ = opened.Unsubscribe() }()
	closeReqs, err := e.nc.Subscribe(bus.SessionCloseSubject(e.cfg.ID), e.onSessionClose)
	if err != nil {
		return fmt.Errorf("edge: subscribe to session close requests: %w", err)
	}
	defer func() { _ = closeReqs.Unsubscribe() }()
	// A full channel drops notices; the poller repeats them while the canister has sessions.
	failures := make(chan *nats.Msg, 64)
	failSub, err := e.nc.ChanSubscribe(bus.SubjectCanisterFailedAll, failures)
	if err != nil {
		return fmt.Errorf("edge: subscribe to canister failure notices: %w", err)
	}
	defer func() { _ = failSub.Unsubscribe() }()

	var bgWG sync.WaitGroup
	for _, ch := range e.shards {
		bgWG.Add(1)
		go func() { defer bgWG.Done(); e.dispatch(bg, ch) }()
	}
	status := e.nc.StatusChanged(nats.CONNECTED)
	defer e.nc.RemoveStatusListener(status)
	leader := make(chan *nats.Msg, 1)
	leaderSub, err := e.nc.ChanSubscribe(bus.OutLeaderElectedAdvisory, leader)
	if err != nil {
		stopBG()
		bgWG.Wait()
		return fmt.Errorf("edge: subscribe to %s: %w", bus.OutLeaderElectedAdvisory, err)
	}
	defer func() { _ = leaderSub.Unsubscribe() }()
	bgWG.Add(1)
	go func() { defer bgWG.Done(); e.watchLeaderChanges(bg, leader) }()
	bgWG.Add(7)
	go func() { defer bgWG.Done(); e.watchCanisterFailures(bg, failures) }()
	go func() { defer bgWG.Done(); e.watchLiveness(bg) }()
	go func() {
		defer bgWG.Done()
		if !e.inProcessBus {
			e.watchBus(bg)
		}
	}()
	go func() { defer bgWG.Done(); e.watchStreams(bg) }()
	go func() { defer bgWG.Done(); e.watchReconnects(bg, status) }()
	go func() { defer bgWG.Done(); e.renewLease(bg, lease) }()
	go func() { defer bgWG.Done(); e.sweep(bg) }()

	ln, err := net.Listen("tcp", e.cfg.Listen)
	if err != nil {
		stopBG()
		bgWG.Wait()
		return fmt.Errorf("edge: listen on %s (ICWS_LISTEN): %w", e.cfg.Listen, err)
	}
	if e.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(e.cfg.TLSCert, e.cfg.TLSKey)
		if err != nil {
			_ = ln.Close()
			stopBG()
			bgWG.Wait()
			return fmt.Errorf("edge: load TLS key pair (ICWS_TLS_CERT, ICWS_TLS_KEY): %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	a := ln.Addr()
	e.addr.Store(&a)
	srv := &http.Server{
		Handler:           e.Handler(),
		ReadHeaderTimeout: e.cfg.HandshakeTimeout,
		// Requests that never upgrade must not hold a socket: the whole request within the
		// handshake timeout, idle keep-alive connections closed after HTTPIdleTimeout.
		ReadTimeout: e.cfg.HandshakeTimeout,
		IdleTimeout: e.cfg.HTTPIdleTimeout,
		// net/http reads up to 4 KiB more than MaxHeaderBytes before it answers 431.
		MaxHeaderBytes: max(e.cfg.HTTPMaxHeaderBytes-4096, 1),
		ErrorLog:       log.New(serverErrorLog{e}, "", 0),
		ConnState:      e.trackSocket,
		// "OPTIONS *" would be answered 200 and kept alive; it is no WebSocket upgrade either.
		DisableGeneralOptionsHandler: true,
	}
	if e.maxSockets < e.cfg.MaxConnections {
		level := slog.LevelWarn
		if e.cfg.MaxConnections == DefaultConfig().MaxConnections {
			level = slog.LevelDebug // the default is meant as "what the machine allows"
		}
		e.log.Log(ctx, level, "connections limited by the open-file limit", "max_connections", e.cfg.MaxConnections,
			"open_file_limit", openFileLimit(), "held_at_most", e.maxSockets)
	}
	e.mu.Lock()
	e.running = true
	e.mu.Unlock()
	e.log.Debug("edge listening", "addr", a.String(), "tls", e.cfg.TLSCert != "")

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("edge: serve: %w", err)
		}
	}

	// Drain.
	dctx, cancel := context.WithTimeout(context.Background(), e.cfg.DrainTimeout)
	defer cancel()
	e.mu.Lock()
	e.draining = true
	conns := make([]*conn, 0, len(e.conns))
	for c := range e.conns {
		conns = append(conns, c)
	}
	e.mu.Unlock()
	_ = srv.Shutdown(dctx) // hijacked sockets are not tracked by net/http; closed below
	for _, c := range conns {
		c.closeWith(websocket.CloseGoingAway, "icws: edge draining")
	}
	done := make(chan struct{})
	go func() { e.connWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-dctx.Done():
		e.log.Warn("drain timed out; sockets left", "left", e.connCount())
	}
	stopBG()
	bgWG.Wait()
	if err := lease.Release(dctx); err != nil {
		e.log.Debug("delete edge lease", "err", err)
	}
	e.log.Info("edge stopped")
	return runErr
}

func (e *Edge) connCount() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.conns)
}

// Handler serves WebSocket upgrades on any path.
func (e *Edge) Handler() http.Handler {
	return http.HandlerFunc(e.serveHTTP)
}

func (e *Edge) serveHTTP(w http.ResponseWriter, r *http.Request) {
	// Every answer but the upgrade's (which gorilla writes itself on the hijacked socket) ends the
	// connection: a refused socket is not kept for another try, uncounted.
	w.Header().Set("Connection", "close")
	e.mu.RLock()
	ok := e.running && !e.draining
	e.mu.RUnlock()
	if !ok {
		http.Error(w, "icws edge not serving", http.StatusServiceUnavailable)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		// Nothing but WebSockets is served here; the connection is not kept for another request.
		// The answer doubles as a cheap health check for load balancers: 426 while the edge
		// serves, 503 while it refuses connections for lack of NATS.
		e.m.refused.WithLabelValues("not_upgrade").Inc()
		if e.busLost() {
			http.Error(w, "icws: edge lost its message bus", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "icws: this endpoint serves WebSocket upgrades only", http.StatusUpgradeRequired)
		return
	}
	addr := e.clientAddr(r)
	if !e.admitConn(w, addr) {
		return
	}
	admitted := true
	defer func() {
		if admitted {
			e.mu.Lock()
			e.upgrading--
			e.releaseConnLocked(addr)
			e.mu.Unlock()
		}
	}()
	bw := &batchingWriter{ResponseWriter: w, pool: &e.batches, readBuf: e.cfg.ReadBufferSize}
	ws, err := e.upgrader.Upgrade(bw, r, nil)
	if err != nil {
		e.m.connectionsTotal.WithLabelValues("upgrade_failed").Inc()
		if bw.batcher != nil {
			// Hijacked, then refused (bytes sent before the handshake's end): no answer went out.
			e.log.Debug("upgrade refused", "remote", r.RemoteAddr, "reason", err)
		}
		return // the upgrader has answered, or closed the connection
	}
	c := newConn(e, ws, r)
	c.out = bw.batcher
	c.rd = bw.reader
	bw.batcher.client = c
	c.addr = addr
	e.mu.Lock()
	e.upgrading--
	admitted = false
	if e.draining || e.busLost() {
		e.releaseConnLocked(addr)
		e.mu.Unlock()
		code, reason := websocket.CloseGoingAway, "icws: edge draining"
		if !e.draining {
			code, reason = websocket.CloseTryAgainLater, reasonBusLostRetry
			e.m.refused.WithLabelValues("nats_lost").Inc()
		}
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	e.conns[c] = struct{}{}
	e.connWG.Add(1)
	e.mu.Unlock()
	e.live.add(c)
	e.m.connections.Inc()
	var doneOnce sync.Once
	done := func() {
		doneOnce.Do(func() {
			c.messageRead() // its reader has finished: give back what a message cut short held
			e.idle.release(c)
			c.closeSocket()
			e.live.remove(c)
			e.mu.Lock()
			delete(e.conns, c)
			e.releaseConnLocked(addr)
			e.mu.Unlock()
			e.m.connections.Dec()
			e.connWG.Done()
		})
	}
	started := false
	func() {
		defer safe.Recover(e.log, e.m.panics.WithLabelValues("open"), "connection", func() {
			c.closeWith(websocket.CloseInternalServerErr, "icws: internal error")
			if c.bound {
				c.teardown("internal error")
			}
		})
		started = c.start()
	}()
	if !started {
		done()
		return
	}
	c.done = done
	go c.serve(false)
}

// shardFor spreads subscriptions over the dispatch goroutines; one subject always maps to one shard,
// so a client's live messages are handled in arrival order.
func (e *Edge) shardFor(subject string) chan *nats.Msg {
	h := fnv.New32a()
	h.Write([]byte(subject))
	return e.shards[h.Sum32()%uint32(len(e.shards))]
}

func (e *Edge) dispatch(ctx context.Context, ch chan *nats.Msg) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-ch:
			key, ok := bus.LiveSessionKey(msg.Subject)
			if !ok {
				continue
			}
			e.mu.RLock()
			c := e.byKey[key]
			e.mu.RUnlock()
			if c != nil {
				c.onLive(msg)
			}
		}
	}
}

// onControl handles "drop this session, it was resumed elsewhere". It answers once the old
// connection can no longer relay anything, so the new edge relays strictly after it.
func (e *Edge) onControl(msg *nats.Msg) {
	newHash := msg.Header.Get(bus.HeaderTokenHash)
	e.mu.RLock()
	c := e.byKey[string(msg.Data)]
	e.mu.RUnlock()
	go func() {
		// The request names the token hash of the connection that resumed the session (a
		// SHA-256 in hex); one without it says nothing about which connection to keep.
		if c != nil && len(newHash) == 64 && c.tokenHash != newHash {
			c.dropResumedElsewhere()
		}
		_ = msg.Respond(nil)
	}()
}

// onOpenResult handles a submitter's report of how the IC answered a session's ws_open.
func (e *Edge) onOpenResult(msg *nats.Msg) {
	tag := msg.Header.Get(bus.HeaderSessionTag)
	e.mu.RLock()
	c := e.byKey[string(msg.Data)]
	e.mu.RUnlock()
	if c == nil || c.sessTag != tag {
		return // another session of the key, or the socket is gone (the record says the rest)
	}
	switch msg.Header.Get(bus.HeaderOpenOutcome) {
	case bus.OpenConfirmed:
		c.confirm()
	case bus.OpenRefused:
		c.refuse(msg.Header.Get(bus.HeaderOpenReason))
	}
}

// register routes the session's live messages to c, subscribing to them unless a subscription of
// this edge already covers them. It returns the connection c replaces on this edge, if any.
func (e *Edge) register(c *conn) (old *conn, err error) {
	e.mu.Lock()
	has := c.liveSub != nil
	e.mu.Unlock()
	var ls *liveSub
	if !has {
		if ls, err = e.acquireLive(c); err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if ls != nil {
		c.liveSub = ls
	}
	if !c.counted {
		c.counted = true
		e.byPrincipal[c.principal]++
	}
	old = e.byKey[c.key]
	e.byKey[c.key] = c
	if old == c {
		old = nil
	}
	return old, nil
}

func (e *Edge) unregister(c *conn) {
	var end *nats.Subscription
	e.mu.Lock()
	if c.counted {
		c.counted = false
		decrement(e.byPrincipal, c.principal)
	}
	if c.liveSub != nil {
		end = e.releaseLiveLocked(c.liveSub)
		c.liveSub = nil
	}
	if e.byKey[c.key] == c {
		delete(e.byKey, c.key)
	}
	e.mu.Unlock()
	if end != nil {
		_ = end.Unsubscribe()
	}
}
