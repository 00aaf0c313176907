package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/client"
	"github.com/icws/icws/edge"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/natstest"
	"github.com/icws/icws/poller"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
	"github.com/icws/icws/submitter"
)

var demoCanister = principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")

// violations records the permission violations a nats-server logs.
type violations struct {
	mu    sync.Mutex
	lines []string
}

func (v *violations) record(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if strings.Contains(line, "Violation") {
		v.mu.Lock()
		v.lines = append(v.lines, line)
		v.mu.Unlock()
	}
}

func (v *violations) Noticef(format string, args ...any) { v.record(format, args...) }
func (v *violations) Warnf(format string, args ...any)   { v.record(format, args...) }
func (v *violations) Fatalf(format string, args ...any)  { v.record(format, args...) }
func (v *violations) Errorf(format string, args ...any)  { v.record(format, args...) }
func (v *violations) Debugf(string, ...any)              {}
func (v *violations) Tracef(string, ...any)              {}

func (v *violations) take() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := v.lines
	v.lines = nil
	return out
}

// startNode runs deploy/nats/n1.conf as a single node on a free loopback port: the same accounts,
// users and permissions, no cluster, no monitoring, the store in a temporary directory.
func startNode(t *testing.T) (string, *violations) {
	t.Helper()
	return startNodeFrom(t, filepath.Join("nats", "n1.conf"))
}

func startNodeFrom(t *testing.T, conf string) (string, *violations) {
	t.Helper()
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "", 0
	opts.Cluster = server.ClusterOpts{}
	opts.Routes = nil
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	v := &violations{}
	s.SetLoggerV2(v, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server from n1.conf not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL(), v
}

// roleConn connects as a role's user the way `icws <role>` does: its credentials from a password
// file and the inbox prefix _INBOX.<role>.
func roleConn(t *testing.T, url, role, password string) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := bus.ClientConfig{URL: url, User: "icws-" + role, PasswordFile: natstest.WriteFile(t, t.TempDir(), "password", []byte(password+"\n"))}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	nc, err := bus.Connect(ctx, cfg, "icws-"+role, nil, nats.CustomInboxPrefix("_INBOX."+role))
	if err != nil {
		t.Fatalf("connect as icws-%s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// runRole runs r until the test ends.
func runRole(t *testing.T, name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v", name, err)
		}
	})
}

// Each role's user from deploy/nats/auth.conf can do that role's whole job, and the server logs not
// one permission violation meanwhile: a client opens a session through an edge, its message goes
// to the canister through the submitter and the echo comes back through the poller; then the edge
// is replaced and the client resumes on the new one (replay reads, the drop request to the old
// edge, the lease of another edge).
func TestRolesWorkWithTheirNATSUsers(t *testing.T) {
	pw := setNATSEnv(t)
	url, v := startNode(t)
	logger := slog.New(slog.DiscardHandler)

	// The submitter's user creates the streams; the others only look them up.
	subNC := roleConn(t, url, "submitter", pw.Submitter)
	subJS, _ := bus.JetStream(subNC)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.Ensure(ctx, subJS, bus.DefaultTopology()); err != nil {
		t.Fatalf("the submitter's user cannot create the streams: %v\n%s", err, strings.Join(v.take(), "\n"))
	}

	rep, _ := testkit.StartWSReplica(t, replica.Config{}, demoCanister, wscanister.DefaultConfig())
	ic, gateway := testkit.GatewayClient(t, rep.URL, logger)

	subCfg := submitter.DefaultConfig()
	subCfg.ID = "submitter1"
	sub, err := submitter.New(subCfg, submitter.Deps{NC: subNC, JS: subJS, IC: ic, Logger: logger, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	runRole(t, "submitter", sub.Run)

	pollNC := roleConn(t, url, "poller", pw.Poller)
	pollJS, _ := bus.JetStream(pollNC)
	pol, err := poller.New(poller.Config{ID: "poller1"}, poller.Deps{NC: pollNC, JS: pollJS, IC: ic, Logger: logger, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	runRole(t, "poller", pol.Run)

	startEdge := func(id, listen string) (*edge.Edge, context.CancelFunc, chan error) {
		nc := roleConn(t, url, "edge", pw.Edge)
		js, _ := bus.JetStream(nc)
		cfg := edge.DefaultConfig()
		cfg.ID, cfg.Listen = id, listen
		e, err := edge.New(cfg, edge.Deps{NC: nc, JS: js, Gateway: gateway, Logger: logger, Registry: prometheus.NewRegistry()})
		if err != nil {
			t.Fatalf("edge %s: %v", id, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		testkit.WaitFor(t, 30*time.Second, "edge "+id+" listening", func() bool { return e.Addr() != nil })
		return e, cancel, done
	}
	e1, stop1, done1 := startEdge("edge1", "127.0.0.1:0")
	addr := e1.Addr().String()

	id := testkit.NewIdentity(t)
	conn, err := client.Dial(ctx, client.Config{GatewayURL: "ws://" + addr, ICURL: rep.URL, Canister: demoCanister, Identity: id, Resume: true, Logger: logger})
	if err != nil {
		t.Fatalf("open a session through the edge: %v", err)
	}
	defer conn.Close()
	echo(t, conn, "before the edge is replaced")

	// Replace the edge on the same address: the client resumes on the new one.
	stop1()
	if err := <-done1; err != nil {
		t.Fatalf("edge1: %v", err)
	}
	_, stop2, done2 := startEdge("edge2", addr)
	defer func() { stop2(); <-done2 }()
	testkit.WaitFor(t, 30*time.Second, "the client to resume", func() bool { return conn.Resumes() >= 1 })
	echo(t, conn, "after the resume")

	// Beside its role's work every process probes the meta leader (bus.ClusterWatch), and edges and
	// submitters ask the sessions bucket's leader for a record a replica did not have.
	edgeNC := roleConn(t, url, "edge", pw.Edge)
	edgeJS, _ := bus.JetStream(edgeNC)
	for _, r := range []struct {
		name     string
		js       jetstream.JetStream
		sessions bool
	}{{"submitter", subJS, true}, {"poller", pollJS, false}, {"edge", edgeJS, true}} {
		if _, err := r.js.AccountInfo(ctx); err != nil {
			t.Errorf("%s: the cluster watch's probe: %v", r.name, err)
		}
		if !r.sessions {
			continue
		}
		h, err := bus.Open(ctx, r.js)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		if rec, _, err := bus.NewSessions(h.Sessions, r.js).Get(ctx, "no-such-canister.no-such-client"); err != nil || rec != nil {
			t.Errorf("%s: reading a missing session from the leader: %v, %v", r.name, rec, err)
		}
	}

	if got := v.take(); len(got) > 0 {
		t.Errorf("the roles' work hit permission violations:\n%s", strings.Join(got, "\n"))
	}
}

// echo sends text and waits for the demo canister's echo.
func echo(t *testing.T, conn *client.Conn, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	payload, err := client.EncodeAppMessage(protocol.AppMessage{Text: text, Timestamp: uint64(time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Send(ctx, payload); err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	for {
		select {
		case m, ok := <-conn.Messages():
			if !ok {
				t.Fatalf("connection ended waiting for the echo of %q: %v", text, conn.Err())
			}
			if app, err := client.DecodeAppMessage(m.Content); err == nil && app.Text == text {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no echo of %q", text)
		}
	}
}

// No role's user can do another role's work, touch what no role needs, or reach $SYS.
func TestRolesCannotDoEachOthersWork(t *testing.T) {
	pw := setNATSEnv(t)
	url, _ := startNode(t)
	const canister, client = "bkyz2-fmaaa-aaaaa-qaaaq-cai", "aaaaa-aa_1"
	type op struct {
		sub     bool // subscribe instead of publish
		subject string
	}
	pub := func(s string) op { return op{subject: s} }
	sub := func(s string) op { return op{sub: true, subject: s} }
	everyoneDenied := []op{
		pub("$SYS.REQ.SERVER.PING"), sub("$SYS.>"),
		pub("$JS.API.STREAM.DELETE.ICWS_IN"), pub("$JS.API.STREAM.DELETE.ICWS_OUT"),
		pub("$JS.API.STREAM.PURGE.ICWS_OUT"), pub("$JS.API.STREAM.DELETE.KV_icws_sessions"),
		pub("$JS.API.STREAM.CREATE.OTHER"), pub("$JS.API.STREAM.MSG.DELETE.ICWS_OUT"),
		pub("other.subject"), sub(">"),
	}
	for _, tc := range []struct {
		role   string
		denied []op
	}{
		{"edge", []op{
			pub("icws.kick." + canister),                       // a submitter's
			pub(bus.OutSubject(canister, client)),              // a poller's: forging canister messages
			pub(bus.LiveSubject(canister, client)),             // a poller's: forging live messages
			pub("$KV.icws_cursors." + canister),                // a poller's
			pub("$KV.icws_leases.poller." + canister),          // a poller's
			pub("$KV.icws_leases.submitter.0"),                 // a submitter's
			pub("$JS.API.CONSUMER.MSG.NEXT.ICWS_IN.submitter"), // a submitter's
			pub("$JS.API.CONSUMER.CREATE.ICWS_IN.x"),
			pub("$JS.API.STREAM.CREATE.ICWS_OUT"), pub("$JS.API.STREAM.UPDATE.ICWS_OUT"),
			pub("icws.opened.edge2"), // only a submitter tells an edge how the IC answered ws_open
			sub("icws.in.>"), sub("icws.kick.*"), sub("_INBOX.poller.>"), sub("_INBOX.submitter.>"),
		}},
		{"submitter", []op{
			pub(bus.InSubject(0, canister, client)), // an edge's: forging client envelopes
			pub(bus.OutSubject(canister, client)),   // a poller's
			pub(bus.LiveSubject(canister, client)),  // a poller's
			pub("$KV.icws_cursors." + canister),
			pub("$KV.icws_leases.edge.e1"), pub("$KV.icws_leases.poller." + canister),
			pub("$JS.API.DIRECT.GET.ICWS_OUT"),
			pub("icws.edge.e1.drop"),
			sub("icws.live.>"), sub("icws.out.>"), sub("icws.kick.*"), sub("_INBOX.edge.>"),
		}},
		{"poller", []op{
			pub(bus.InSubject(0, canister, client)),
			pub("icws.kick." + canister),
			pub("$KV.icws_sessions." + canister + "." + client), // sessions are read only
			pub("$KV.icws_leases.submitter.0"), pub("$KV.icws_leases.edge.e1"),
			pub("$JS.API.STREAM.CREATE.ICWS_OUT"), pub("$JS.API.STREAM.UPDATE.ICWS_OUT"),
			pub("$JS.API.CONSUMER.CREATE.ICWS_IN.x"),
			pub("icws.edge.e1.drop"), pub("icws.opened.edge1"),
			sub("icws.in.>"), sub("icws.live.>"), sub("_INBOX.edge.>"), sub("icws.opened.*"),
		}},
	} {
		t.Run(tc.role, func(t *testing.T) {
			errs := make(chan error, 64)
			nc, err := nats.Connect(url, nats.UserInfo("icws-"+tc.role, pw.of(tc.role)),
				nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			for _, o := range append(tc.denied, everyoneDenied...) {
				if o.sub {
					s, err := nc.SubscribeSync(o.subject)
					if err != nil {
						t.Fatal(err)
					}
					defer func() { _ = s.Unsubscribe() }()
				} else if err := nc.Publish(o.subject, nil); err != nil {
					t.Fatal(err)
				}
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				select {
				case err := <-errs:
					if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), o.subject) {
						t.Errorf("%+v: %v", o, err)
					}
				case <-time.After(5 * time.Second):
					t.Errorf("icws-%s may %s %s", tc.role, map[bool]string{false: "publish to", true: "subscribe to"}[o.sub], o.subject)
				}
			}
		})
	}
}

// deploy/nats/tls.conf, included as n1.conf's comment says, makes the node require TLS with a
// client certificate on top of the role's password.
func TestOptionalTLSConfig(t *testing.T) {
	pw := setNATSEnv(t)
	dir := t.TempDir()
	pki := natstest.NewPKI(t, dir)
	n1 := readFile(t, filepath.Join("nats", "n1.conf"))
	const commented = "# include ./tls.conf"
	if !strings.Contains(n1, commented) {
		t.Fatalf("n1.conf lacks %q", commented)
	}
	tlsConf := readFile(t, filepath.Join("nats", "tls.conf"))
	for from, to := range map[string]string{
		"/etc/nats/tls/server.pem": pki.ServerCert, "/etc/nats/tls/server-key.pem": pki.ServerKey, "/etc/nats/tls/ca.pem": pki.CA,
	} {
		if !strings.Contains(tlsConf, from) {
			t.Fatalf("tls.conf does not name %s", from)
		}
		tlsConf = strings.ReplaceAll(tlsConf, from, to)
	}
	natstest.WriteFile(t, dir, "n1.conf", []byte(strings.Replace(n1, commented, "include ./tls.conf", 1)))
	natstest.WriteFile(t, dir, "tls.conf", []byte(tlsConf))
	natstest.WriteFile(t, dir, "auth.conf", []byte(readFile(t, filepath.Join("nats", "auth.conf"))))

	url, _ := startNodeFrom(t, filepath.Join(dir, "n1.conf"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	password := natstest.WriteFile(t, dir, "password", []byte(pw.Edge))
	cfg := bus.ClientConfig{URL: url, User: "icws-edge", PasswordFile: password, TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}
	nc, err := bus.Connect(ctx, cfg, "icws-edge", nil)
	if err != nil {
		t.Fatalf("edge with TLS and password: %v", err)
	}
	nc.Close()
	cfg.TLSCert, cfg.TLSKey = "", ""
	if _, err := bus.Connect(ctx, cfg, "icws-edge", nil); !errors.Is(err, bus.ErrRefused) {
		t.Fatalf("edge without a client certificate: %v, want a refusal", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
