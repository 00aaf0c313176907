package integration

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/icws/icws/internal/composefile"
)

// TestComposeStackRunsAsLocalProcesses runs docker-compose.yml, loaded with compose-go exactly as
// the compose check in deploy/ loads it, without a container engine: every nats service as a
// nats-server process with its mounted config, every icws service as the icws binary with its
// command and environment (service host names mapped to loopback ports, container paths to
// stand-ins), Prometheus and Grafana only checked (their configs parse and name what runs). Once
// every role's /readyz answers, the real ic-websocket-js client opens a session through each edge
// the file defines, echoes, gets a burst and closes; every NATS connection must be authenticated
// as the user the file gives its role, and no NATS server may log an authentication error or a
// permission violation. Then broken variants of the parsed file must fail the same checks.
func TestComposeStackRunsAsLocalProcesses(t *testing.T) {
	node, gatewayJS := requireJSClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	icws, err := composefile.DescribeIcws(ctx, icwsBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	natsServerBinary(t) // fail early with the build output
	file := filepath.Join(bins.repoRoot, "docker-compose.yml")
	load := func(t *testing.T) *types.Project {
		t.Helper()
		p, err := composefile.Load(context.Background(), file, composefile.TestEnv())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	js := jsClient{node: node, script: gatewayJS}

	t.Run("docker-compose.yml", func(t *testing.T) {
		start := time.Now()
		if err := proveComposeStack(t, load(t), icws, js); err != nil {
			t.Fatal(err)
		}
		t.Logf("the compose stack ran and served every edge in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("broken files fail", func(t *testing.T) {
		for _, tc := range composeBreakages() {
			t.Run(tc.name, func(t *testing.T) {
				p := load(t)
				want := tc.breaks(t, p)
				start := time.Now()
				err := proveComposeStack(t, p, icws, js)
				if err == nil {
					t.Fatalf("the stack passed every check although %s", tc.name)
				}
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("the stack failed, but not naming %q:\n%v", want, err)
				}
				t.Logf("failed in %s, as it should:\n%v", time.Since(start).Round(time.Millisecond), err)
			})
		}
	})
}

// composeBreakage changes the parsed file the way a careless edit would; breaks returns what the
// failure must name.
type composeBreakage struct {
	name   string
	breaks func(t *testing.T, p *types.Project) string
}

func composeBreakages() []composeBreakage {
	return []composeBreakage{
		{"a role gets another role's NATS password", func(t *testing.T, p *types.Project) string {
			for _, name := range composefile.SortedNames(p) {
				s := p.Services[name]
				if len(s.Secrets) == 0 {
					continue
				}
				mine := s.Secrets[0].Source
				for _, other := range slices.Sorted(maps.Keys(p.Secrets)) {
					if other != mine {
						s.Secrets[0].Target = cmp.Or(s.Secrets[0].Target, mine)
						s.Secrets[0].Source = other
						p.Services[name] = s
						return name
					}
				}
			}
			t.Fatal("no service reads a secret")
			return ""
		}},
		{"the roles name a port the IC does not serve", func(t *testing.T, p *types.Project) string {
			changed := false
			for name, s := range p.Services {
				v := s.Environment["ICWS_IC_URL"]
				if v == nil {
					continue
				}
				u, err := url.Parse(*v)
				if err != nil {
					t.Fatal(err)
				}
				port, _ := strconv.Atoi(cmp.Or(u.Port(), "80"))
				u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(port+1))
				wrong := u.String()
				s.Environment["ICWS_IC_URL"] = &wrong
				p.Services[name] = s
				changed = true
			}
			if !changed {
				t.Fatal("no service sets ICWS_IC_URL")
			}
			return "ICWS_IC_URL"
		}},
		{"an edge names a NATS server the file does not define", func(t *testing.T, p *types.Project) string {
			for _, name := range composefile.SortedNames(p) {
				s := p.Services[name]
				if v := s.Environment["ICWS_NATS_URL"]; v != nil && slices.Equal(s.Command, []string{"edge"}) {
					u, err := url.Parse(strings.Split(*v, ",")[0])
					if err != nil {
						t.Fatal(err)
					}
					u.Host = net.JoinHostPort("nats-missing", cmp.Or(u.Port(), "4222"))
					wrong := u.String()
					s.Environment["ICWS_NATS_URL"] = &wrong
					p.Services[name] = s
					return "nats-missing"
				}
			}
			t.Fatal("no edge sets ICWS_NATS_URL")
			return ""
		}},
		{"a NATS server lacks a file its config includes", func(t *testing.T, p *types.Project) string {
			for _, name := range composefile.SortedNames(p) {
				s := p.Services[name]
				if imageName(s.Image) != "nats" {
					continue
				}
				// Drop every file mount but the config file the command names.
				kept := s.Volumes[:0:0]
				for _, v := range s.Volumes {
					if v.Type != types.VolumeTypeBind || slices.Contains(s.Command, v.Target) {
						kept = append(kept, v)
					}
				}
				if len(kept) == len(s.Volumes) {
					continue
				}
				s.Volumes = kept
				p.Services[name] = s
				return name
			}
			t.Fatal("no nats service mounts more than its config")
			return ""
		}},
		{"an edge connects as another role's NATS user", func(t *testing.T, p *types.Project) string {
			var edge, other string
			for _, name := range composefile.SortedNames(p) {
				s := p.Services[name]
				if s.Environment["ICWS_NATS_USER"] == nil {
					continue
				}
				if edge == "" && slices.Equal(s.Command, []string{"edge"}) {
					edge = name
				} else if other == "" && !slices.Equal(s.Command, []string{"edge"}) {
					other = name
				}
			}
			if edge == "" || other == "" {
				t.Fatal("no edge and other role with NATS users")
			}
			e, o := p.Services[edge], p.Services[other]
			if len(e.Secrets) == 0 || len(o.Secrets) == 0 {
				t.Fatalf("%s or %s reads no secret", edge, other)
			}
			e.Environment["ICWS_NATS_USER"] = o.Environment["ICWS_NATS_USER"]
			// The other role's password, mounted where the edge reads its own.
			e.Secrets = []types.ServiceSecretConfig{{Source: o.Secrets[0].Source, Target: cmp.Or(e.Secrets[0].Target, e.Secrets[0].Source)}}
			p.Services[edge] = e
			return "Violation"
		}},
	}
}

// jsClient is ic-websocket-js under Node: integration/js/gateway.test.mjs.
type jsClient struct{ node, script string }

// requireJSClient finds node and the installed npm clients, failing the test without them.
func requireJSClient(t *testing.T) (node, script string) {
	t.Helper()
	jsDir := filepath.Join(bins.repoRoot, "integration", "js")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (needed for the ic-websocket-js client): %v", err)
	}
	for _, m := range []string{"ic-websocket-js", "ws", "@dfinity/agent"} {
		if _, err := os.Stat(filepath.Join(jsDir, "node_modules", m, "package.json")); err != nil {
			t.Fatalf("integration/js/node_modules/%s is missing: run npm ci in integration/js (%v)", m, err)
		}
	}
	return node, filepath.Join(jsDir, "gateway.test.mjs")
}

// proveComposeStack lays the project out, starts it and runs every check; the first problem is
// returned (the broken variants must produce one), processes stop when the test ends.
func proveComposeStack(t *testing.T, p *types.Project, icws *composefile.Icws, js jsClient) error {
	st, err := planComposeStack(t, p, icws)
	if err != nil {
		return fmt.Errorf("the file cannot run on one host:\n%w", err)
	}
	if err := st.start(); err != nil {
		return err
	}
	// Generous: on a fresh cluster the two submitters racing to create the same streams wait out
	// several 10 s JetStream request timeouts (up to about a minute here on a busy machine). A
	// broken stack fails long before, on an exit or a NATS refusal.
	if err := st.waitReady(3 * time.Minute); err != nil {
		return err
	}
	for _, target := range st.scrapes {
		code, body, err := httpGet(context.Background(), target)
		if err != nil || code != http.StatusOK || !strings.Contains(string(body), "# TYPE icws_") {
			return fmt.Errorf("prometheus target %s: status %d, %v (no icws metrics)", target, code, err)
		}
	}
	edges := 0
	for _, name := range st.order {
		svc := st.services[name]
		if svc.wsURL == "" || svc.oneShot {
			continue
		}
		edges++
		if err := st.runJSClient(js, svc); err != nil {
			return err
		}
		if err := st.failures(); err != nil {
			return err
		}
	}
	if edges == 0 {
		return errors.New("the file runs no edge (no icws service with a WebSocket listener)")
	}
	if err := st.checkNATSUsers(); err != nil {
		return err
	}
	return st.failures()
}

// start starts the services in dependency order. A dependency a service waits to complete
// (service_completed_successfully) is run to its end first; one it waits to start
// (service_started) must first listen on its ports; one it waits to be healthy must be ready.
func (st *composeStack) start() error {
	for _, name := range st.order {
		svc := st.services[name]
		for _, dep := range slices.Sorted(maps.Keys(svc.def.DependsOn)) {
			d := st.services[dep]
			var err error
			switch svc.def.DependsOn[dep].Condition {
			case types.ServiceConditionCompletedSuccessfully:
				if !d.completed {
					err = fmt.Errorf("service %s did not complete", dep)
				}
			case types.ServiceConditionHealthy:
				err = pollUntil(60*time.Second, func() (bool, error) {
					if err := st.exited(d); err != nil {
						return false, err
					}
					return st.ready(d) == nil, nil
				})
			default:
				err = pollUntil(30*time.Second, func() (bool, error) {
					if err := st.exited(d); err != nil {
						return false, err
					}
					return d.listening() == nil, nil
				})
			}
			if err != nil {
				return fmt.Errorf("service %s: depends_on %s: %w", name, dep, err)
			}
		}
		switch svc.kind {
		case natsServerService:
			svc.proc = startProcess(st.t, name, natsServerBinary(st.t), svc.natsArgs(st.t), svc.env)
		case icwsService:
			svc.proc = startProcess(st.t, name, icwsBinary(st.t), svc.args, svc.env)
		}
		if !svc.oneShot {
			continue
		}
		select {
		case <-svc.proc.Done():
		case <-time.After(60 * time.Second):
			return fmt.Errorf("service %s (run to completion by its dependents) did not finish in 60 s", name)
		}
		if _, err := svc.proc.Exited(); err != nil {
			stdout, stderr := svc.proc.Logs()
			return fmt.Errorf("service %s (run to completion by its dependents) failed: %v\n%s%s", name, err, tail([]byte(stdout), 2000), tail([]byte(stderr), 2000))
		}
		svc.completed = true
	}
	names := slices.Collect(maps.Keys(st.services))
	slices.Sort(names)
	var summary strings.Builder
	for _, name := range names {
		svc := st.services[name]
		fmt.Fprintf(&summary, "\n  %s: ports %v", name, svc.ports)
	}
	st.t.Logf("started in this order: %s; container ports → loopback:%s", strings.Join(st.order, ", "), summary.String())
	return nil
}

// waitReady waits until every long-running service is ready, failing as soon as one exits or a
// NATS server refuses a client.
func (st *composeStack) waitReady(timeout time.Duration) error {
	start := time.Now()
	readyAfter := map[string]time.Duration{}
	var notReady []string
	err := pollUntil(timeout, func() (bool, error) {
		if err := st.failures(); err != nil {
			return false, err
		}
		notReady = notReady[:0]
		for _, name := range st.order {
			svc := st.services[name]
			if svc.oneShot {
				continue
			}
			if _, done := readyAfter[name]; done {
				continue
			}
			if err := st.ready(svc); err != nil {
				notReady = append(notReady, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			readyAfter[name] = time.Since(start).Round(time.Millisecond)
		}
		return len(notReady) == 0, nil
	})
	if err != nil && len(notReady) > 0 {
		return fmt.Errorf("%w; not ready:\n  %s", err, strings.Join(notReady, "\n  "))
	}
	if err == nil {
		st.t.Logf("every service ready; after: %v", readyAfter)
	}
	return err
}

// ready is /readyz for a service with an admin server, else every port listening.
func (st *composeStack) ready(svc *stackService) error {
	if svc.adminURL == "" {
		return svc.listening()
	}
	code, body, err := httpGet(context.Background(), svc.adminURL+"/readyz")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("/readyz %d: %s", code, strings.TrimSpace(string(tail(body, 300))))
	}
	return nil
}

func (svc *stackService) listening() error {
	for _, port := range svc.ports {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return err
		}
		conn.Close()
	}
	return nil
}

func (st *composeStack) exited(svc *stackService) error {
	if svc.proc == nil {
		return nil
	}
	if exited, err := svc.proc.Exited(); exited {
		_, stderr := svc.proc.Logs()
		return fmt.Errorf("service %s exited (%v):\n%s", svc.name, err, tail([]byte(stderr), 3000))
	}
	return nil
}

// natsRefusal matches what nats-server logs when it refuses a client or a route (a wrong
// password) or a connection oversteps its permissions.
var natsRefusal = regexp.MustCompile(`authentication error|Violation`)

// natsLogUser finds the user in such a line: `User "icws-edge"` or `"ICWS/user:icws-edge"`.
var natsLogUser = regexp.MustCompile(`[Uu]ser[: ]"?([^"\s,]+)`)

// failures reports a long-running service that exited and anything a NATS server logged about a
// refused client or a permission violation.
func (st *composeStack) failures() error {
	for _, name := range st.order {
		svc := st.services[name]
		if svc.oneShot {
			continue
		}
		if err := st.exited(svc); err != nil {
			return err
		}
	}
	for _, name := range st.order {
		svc := st.services[name]
		if svc.kind != natsServerService || svc.proc == nil {
			continue
		}
		_, stderr := svc.proc.Logs()
		for line := range strings.Lines(stderr) {
			if !natsRefusal.MatchString(line) {
				continue
			}
			who := ""
			if m := natsLogUser.FindStringSubmatch(line); m != nil {
				who = fmt.Sprintf(" (user %s is the file's user of %s)", m[1], strings.Join(st.servicesOfUser(m[1]), ", "))
			}
			return fmt.Errorf("service %s (nats-server) logged: %s%s", name, strings.TrimSpace(line), who)
		}
	}
	return nil
}

func (st *composeStack) servicesOfUser(user string) []string {
	var out []string
	for _, name := range st.order {
		if svc := st.services[name]; svc.natsUser == user {
			out = append(out, name)
		}
	}
	return out
}

// runJSClient runs ic-websocket-js (gateway.test.mjs, suite "stack") through one edge: open, echo,
// burst, close, each checked at the client and at the demo canister.
func (st *composeStack) runJSClient(js jsClient, edge *stackService) error {
	ic := st.ic
	canister := st.icws.Value(ic.env, "ICWS_REPLICA_CANISTER_ID")
	ack, err := time.ParseDuration(st.icws.Value(ic.env, "ICWS_REPLICA_ACK_INTERVAL"))
	if err != nil {
		return fmt.Errorf("service %s: ICWS_REPLICA_ACK_INTERVAL: %w", ic.name, err)
	}
	env := map[string]string{
		"GATEWAY_URL":     edge.wsURL,
		"IC_URL":          st.icURL,
		"CANISTER_ID":     canister,
		"CONTROL_URL":     st.icURL + "/_/control/" + canister + "/",
		"ACK_INTERVAL_MS": strconv.FormatInt(ack.Milliseconds(), 10),
		"JS_SUITE":        "stack",
		"LOG_LEVEL":       "warn",
	}
	start := time.Now()
	proc := startProcess(st.t, "node-"+edge.name, js.node, []string{"--test", "--test-reporter=spec", js.script}, env)
	const limit = 2 * time.Minute
	select {
	case <-proc.Done():
	case <-time.After(limit):
		proc.Kill()
		return fmt.Errorf("ic-websocket-js through %s did not finish in %s", edge.name, limit)
	}
	stdout, stderr := proc.Logs()
	if _, err := proc.Exited(); err != nil {
		return fmt.Errorf("ic-websocket-js through %s (%s) failed (%v):\n%s\n%s", edge.name, edge.wsURL, err, stdout, stderr)
	}
	st.t.Logf("ic-websocket-js through %s passed in %s:\n%s", edge.name, time.Since(start).Round(time.Millisecond), stdout)
	return nil
}

// natsConnz is the part of /connz?auth=true the check reads.
type natsConnz struct {
	Connections []struct {
		Name           string `json:"name"`
		AuthorizedUser string `json:"authorized_user"`
		Account        string `json:"account"`
	} `json:"connections"`
}

// checkNATSUsers reads every NATS server's connections: each is authenticated, as the user the
// file gives the role that opened it (icws names its connection icws-<command>), and every
// long-running service that has a user holds a connection as that user.
func (st *composeStack) checkNATSUsers() error {
	usersOf := map[string][]string{}    // command → users the file gives it
	servicesAs := map[string][]string{} // user → services
	for _, name := range st.order {
		svc := st.services[name]
		if svc.kind == icwsService && !svc.oneShot && svc.natsUser != "" {
			if !slices.Contains(usersOf[svc.command], svc.natsUser) {
				usersOf[svc.command] = append(usersOf[svc.command], svc.natsUser)
			}
			servicesAs[svc.natsUser] = append(servicesAs[svc.natsUser], name)
		}
	}
	conns := map[string]int{}
	monitored := 0
	for _, name := range st.order {
		svc := st.services[name]
		if svc.kind != natsServerService || svc.monitorURL == "" {
			continue
		}
		monitored++
		var c natsConnz
		if err := getJSON(svc.monitorURL+"/connz?auth=true&limit=10000", &c); err != nil {
			return fmt.Errorf("service %s: %w", name, err)
		}
		for _, conn := range c.Connections {
			if conn.AuthorizedUser == "" {
				return fmt.Errorf("service %s: connection %q is not authenticated", name, conn.Name)
			}
			command, _ := strings.CutPrefix(conn.Name, "icws-")
			if users := usersOf[command]; !slices.Contains(users, conn.AuthorizedUser) {
				return fmt.Errorf("service %s: connection %q is authenticated as %s (account %s), but the file gives `icws %s` the NATS users %v", name, conn.Name, conn.AuthorizedUser, conn.Account, command, users)
			}
			conns[conn.AuthorizedUser]++
		}
	}
	if monitored == 0 {
		return errors.New("no nats service has monitoring: the connections' users cannot be checked")
	}
	for _, user := range slices.Sorted(maps.Keys(servicesAs)) {
		if conns[user] < len(servicesAs[user]) {
			return fmt.Errorf("%d connections as NATS user %s, but %d services use it (%s)", conns[user], user, len(servicesAs[user]), strings.Join(servicesAs[user], ", "))
		}
	}
	st.t.Logf("NATS connections by user: %v", conns)
	return nil
}

// pollUntil calls cond every 100 ms until it reports done or an error, or timeout passes.
func pollUntil(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := cond()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
