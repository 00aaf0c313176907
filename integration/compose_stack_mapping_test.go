package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	natsconf "github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/icws/icws/internal/composefile"
)

// composeStack is a parsed compose file laid out on one host: each service the test can run
// (nats-server and icws services) with its command and environment, and with what cannot stay as
// in a container rewritten: listen addresses become free loopback ports, service host names in
// URLs become those ports, container paths become their stand-ins (composefile.Containers).
// Everything is derived from the file; nothing names a service of docker-compose.yml.
type composeStack struct {
	t        *testing.T
	project  *types.Project
	icws     *composefile.Icws
	image    composefile.Image // of deploy/Dockerfile, which builds the icws services
	fs       composefile.Containers
	services map[string]*stackService // the services the test runs
	order    []string                 // start order (depends_on first)
	skipped  []string                 // services that are not ours

	ic      *stackService // the `icws replica` service the roles' ICWS_IC_URL names
	icURL   string        // that URL, mapped to loopback
	scrapes []string      // the Prometheus scrape targets, mapped: http://127.0.0.1:<port>/metrics

	natsEnvSet map[string]bool // variables set in this process to parse NATS configs
}

type serviceKind int

const (
	natsServerService serviceKind = iota + 1
	icwsService
)

// stackService is one service as a local process.
type stackService struct {
	name    string
	kind    serviceKind
	def     types.ServiceConfig
	command string // the icws command (icws services)
	args    []string
	env     map[string]string
	fs      *composefile.Container
	ports   map[int]int // container port → loopback port
	oneShot bool        // a dependent waits for it to complete (service_completed_successfully)

	listenVars map[string]bool // env variables that are listen addresses (already mapped)
	adminURL   string          // http://127.0.0.1:<port>, icws services with an admin server
	adminPort  int             // its port in the container
	wsURL      string          // ws://127.0.0.1:<port>, icws services with a WebSocket listener
	natsUser   string          // ICWS_NATS_USER as the file sets it

	natsOpts   *server.Options // nats-server: its parsed configuration
	monitorURL string          // nats-server: http://127.0.0.1:<port>, when it has monitoring

	proc      *Process
	completed bool
}

// planComposeStack lays the project out on this host. Every mapping problem is returned, each
// naming the service and the field that cannot be mapped; nothing is started.
func planComposeStack(t *testing.T, p *types.Project, icws *composefile.Icws) (*composeStack, error) {
	t.Helper()
	dockerfile := filepath.Join(bins.repoRoot, "deploy", "Dockerfile")
	image, err := composefile.ReadDockerfile(dockerfile)
	if err != nil {
		return nil, err
	}
	st := &composeStack{
		t: t, project: p, icws: icws, image: image,
		fs:         composefile.Containers{Project: p, Dir: t.TempDir()},
		services:   map[string]*stackService{},
		natsEnvSet: map[string]bool{},
	}
	runsIcws := composefile.IcwsServices(p, dockerfile)
	oneShot := map[string]bool{}
	for _, s := range p.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionCompletedSuccessfully {
				oneShot[dep] = true
			}
		}
	}
	var errs []error
	for _, name := range composefile.SortedNames(p) {
		s := p.Services[name]
		var svc *stackService
		var err error
		switch {
		case runsIcws[name]:
			svc, err = st.planIcws(name, s)
		case imageName(s.Image) == "nats":
			svc, err = st.planNATS(name, s)
		default:
			st.skipped = append(st.skipped, name)
			continue
		}
		if err == nil && s.GetScale() != 1 {
			err = fmt.Errorf("service %s: scale %d: replicas of one service cannot share its host name here", name, s.GetScale())
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		svc.oneShot = oneShot[name]
		st.services[name] = svc
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// Now that every service's ports are known: whatever names another service.
	errs = append(errs, st.findIC())
	for _, name := range composefile.SortedNames(p) {
		if svc := st.services[name]; svc != nil {
			errs = append(errs, st.mapReferences(svc))
		}
	}
	errs = append(errs, st.checkPublishedPorts(), st.checkSkipped(), st.planOrder())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return st, nil
}

// imageName is an image reference without registry, "library/", tag and digest: "nats" for
// nats:2.15.2 and docker.io/library/nats, "prom/prometheus" for prom/prometheus:v3.5.0.
func imageName(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	if first, rest, ok := strings.Cut(ref, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		ref = rest
	}
	return strings.TrimPrefix(ref, "library/")
}

func (st *composeStack) planIcws(name string, s types.ServiceConfig) (*stackService, error) {
	args, err := composefile.IcwsArgs(s)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	command := composefile.CommandOf(args)
	if !st.icws.Commands[command] {
		return nil, fmt.Errorf("service %s: command: `icws %s` is not an icws command", name, strings.Join(args, " "))
	}
	ct, err := st.fs.New(name, st.image)
	if err != nil {
		return nil, err
	}
	svc := &stackService{
		name: name, kind: icwsService, def: s, command: command, args: args, fs: ct,
		env: composefile.ServiceEnv(st.image, s), ports: map[int]int{}, listenVars: map[string]bool{},
	}
	svc.natsUser = svc.env["ICWS_NATS_USER"]
	// Every listen address the command reads, set or by default.
	for _, v := range slices.Sorted(maps.Keys(st.icws.Vars)) {
		if !strings.HasSuffix(v, "_LISTEN") || !st.icws.Reads(command, v) {
			continue
		}
		addr := st.icws.Value(svc.env, v)
		if addr == "" {
			continue // off
		}
		_, portText, err := net.SplitHostPort(addr)
		port, perr := strconv.Atoi(portText)
		if err != nil || perr != nil || port <= 0 {
			return nil, fmt.Errorf("service %s: %s=%q is not a host:port this test can move to loopback", name, v, addr)
		}
		if _, dup := svc.ports[port]; dup {
			return nil, fmt.Errorf("service %s: %s=%q: a second listener on port %d", name, v, addr, port)
		}
		local := freePort(st.t)
		svc.ports[port] = local
		svc.env[v] = fmt.Sprintf("127.0.0.1:%d", local)
		svc.listenVars[v] = true
		switch v {
		case "ICWS_ADMIN_LISTEN":
			svc.adminURL, svc.adminPort = "http://"+svc.env[v], port
		case "ICWS_LISTEN":
			svc.wsURL = "ws://" + svc.env[v]
		}
	}
	return svc, nil
}

// planNATS reads the configuration a nats service's command names, from the files its
// container would have mounted (so an include that is not mounted fails here too), with its
// environment, to learn the ports to move and the store directory.
func (st *composeStack) planNATS(name string, s types.ServiceConfig) (*stackService, error) {
	if s.Entrypoint != nil {
		return nil, fmt.Errorf("service %s: entrypoint %q replaces nats-server", name, []string(s.Entrypoint))
	}
	ct, err := st.fs.New(name, composefile.Image{})
	if err != nil {
		return nil, err
	}
	svc := &stackService{
		name: name, kind: natsServerService, def: s, fs: ct,
		env: composefile.ServiceEnv(composefile.Image{}, s), ports: map[int]int{},
	}
	// The command's container paths, the config file's among them, mapped to their stand-ins.
	var conf string
	confArg := -1
	mapPath := func(p string) (string, error) {
		host, ok := ct.HostPath(p)
		if !ok {
			return "", fmt.Errorf("service %s: command: %s is not mounted in the container", name, p)
		}
		return host, nil
	}
	for i := 0; i < len(s.Command); i++ {
		arg := s.Command[i]
		isConfig := false
		if v, ok := strings.CutPrefix(arg, "--config="); ok {
			arg, isConfig = v, true
			svc.args = append(svc.args, "--config")
		} else if (arg == "-c" || arg == "--config" || arg == "-config") && i+1 < len(s.Command) {
			svc.args = append(svc.args, arg)
			i++
			arg, isConfig = s.Command[i], true
		}
		if isConfig || strings.HasPrefix(arg, "/") {
			host, err := mapPath(arg)
			if err != nil {
				return nil, err
			}
			arg = host
		}
		if isConfig {
			conf, confArg = arg, len(svc.args)
		}
		svc.args = append(svc.args, arg)
	}
	if conf == "" {
		return nil, fmt.Errorf("service %s: command: names no -c config file (the image's built-in one is not in the repository)", name)
	}
	opts, err := st.parseNATSConfig(conf, svc.env)
	if err != nil {
		return nil, fmt.Errorf("service %s: config %s: %w", name, conf, err)
	}
	svc.natsOpts = opts
	if svc.args[confArg], err = st.moveNATSStore(svc, conf); err != nil {
		return nil, fmt.Errorf("service %s: config %s: %w", name, conf, err)
	}

	client := opts.Port
	if client == 0 {
		client = server.DEFAULT_PORT
	}
	listens := []struct {
		what string
		port int
	}{{"client", client}, {"cluster", opts.Cluster.Port}, {"monitoring", opts.HTTPPort}}
	for _, l := range listens {
		if l.port == 0 {
			continue
		}
		if l.port < 0 {
			return nil, fmt.Errorf("service %s: config: the %s port is random (%d): nothing could name it", name, l.what, l.port)
		}
		if _, dup := svc.ports[l.port]; dup {
			return nil, fmt.Errorf("service %s: config: two listeners on port %d", name, l.port)
		}
		svc.ports[l.port] = freePort(st.t)
	}
	if opts.HTTPPort != 0 {
		// No http host: the client host, which moves to loopback.
		if ip := net.ParseIP(opts.HTTPHost); opts.HTTPHost != "" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("service %s: config: http: monitoring on %q cannot be kept to loopback here", name, opts.HTTPHost)
		}
		svc.monitorURL = fmt.Sprintf("http://127.0.0.1:%d", svc.ports[opts.HTTPPort])
	}
	for _, other := range []struct {
		what string
		port int
	}{
		{"leafnodes", opts.LeafNode.Port}, {"gateway", opts.Gateway.Port}, {"websocket", opts.Websocket.Port},
		{"mqtt", opts.MQTT.Port}, {"https monitoring", opts.HTTPSPort}, {"profiling", opts.ProfPort},
	} {
		if other.port != 0 {
			return nil, fmt.Errorf("service %s: config: %s on port %d: this test moves only client, cluster and monitoring ports", name, other.what, other.port)
		}
	}
	return svc, nil
}

// moveNATSStore writes a config that includes the service's own and moves only its JetStream
// store, to the stand-in of the container path it names (a temporary directory if no volume holds
// it), and returns its path. A flag cannot do it: nats-server refuses -sd next to a configured
// store_dir. The JetStream block is restated as parsed, with the store replaced.
func (st *composeStack) moveNATSStore(svc *stackService, conf string) (string, error) {
	opts := svc.natsOpts
	if !opts.JetStream {
		return conf, nil
	}
	store, ok := svc.fs.HostPath(opts.StoreDir)
	if !ok {
		store = st.t.TempDir()
		st.t.Logf("service %s: the JetStream store %q is on no volume (lost with the container); here a temporary directory", svc.name, opts.StoreDir)
	}
	top, err := natsconf.ParseFile(conf) // the environment parseNATSConfig set is still in place
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(svc.fs.Root, conf)
	if err != nil {
		return "", err
	}
	quoted := func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	var wrapper strings.Builder
	fmt.Fprintf(&wrapper, "include %s\n", quoted(rel))
	js, isBlock := top["jetstream"].(map[string]any)
	storeKey := ""
	for k := range js {
		if slices.Contains([]string{"store", "store_dir", "storedir"}, strings.ToLower(k)) {
			storeKey = k
		}
	}
	if isBlock && storeKey != "" {
		moved := maps.Clone(js)
		moved[storeKey] = store
		fmt.Fprintf(&wrapper, "jetstream: %s\n", quoted(moved))
	} else {
		// Set at the top level, or not at all (the default, a directory under the system's
		// temporary directory, would be shared by every server here).
		fmt.Fprintf(&wrapper, "store_dir: %s\n", quoted(store))
	}
	file := filepath.Join(svc.fs.Root, "icws-test-"+svc.name+".conf")
	if err := os.WriteFile(file, []byte(wrapper.String()), 0o644); err != nil {
		return "", err
	}
	check, err := server.ProcessConfigFile(file)
	if err != nil {
		return "", fmt.Errorf("the config moving its store: %w", err)
	}
	if check.StoreDir != store {
		return "", fmt.Errorf("the config moving its store has store_dir %q, want %q", check.StoreDir, store)
	}
	return file, nil
}

// parseNATSConfig reads a nats-server config the way nats-server does, with env as its
// environment ($VARIABLES are read from the process environment, so the test sets exactly env
// and unsets what an earlier service had).
func (st *composeStack) parseNATSConfig(conf string, env map[string]string) (*server.Options, error) {
	for k := range st.natsEnvSet {
		if _, ok := env[k]; !ok {
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		if !st.natsEnvSet[k] {
			st.t.Setenv(k, v) // restored when the test ends
			st.natsEnvSet[k] = true
		}
		os.Setenv(k, v)
	}
	return server.ProcessConfigFile(conf)
}

// findIC finds the IC the roles use: the service their ICWS_IC_URL names must run `icws
// replica`; the test turns on its TEST-ONLY control API (the JS client's test drives the demo
// canister through it). A URL that names no service is reported by mapReferences.
func (st *composeStack) findIC() error {
	var errs []error
	for _, name := range composefile.SortedNames(st.project) {
		svc := st.services[name]
		if svc == nil || svc.kind != icwsService || svc.oneShot || !st.icws.Reads(svc.command, "ICWS_IC_URL") {
			continue
		}
		raw := st.icws.Value(svc.env, "ICWS_IC_URL")
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		ic := st.services[u.Hostname()]
		switch {
		case ic == nil:
		case ic.kind != icwsService || ic.command != "replica":
			errs = append(errs, fmt.Errorf("service %s: ICWS_IC_URL=%s names service %s, which does not run `icws replica`", name, raw, ic.name))
		case st.ic != nil && st.ic != ic:
			errs = append(errs, fmt.Errorf("service %s: ICWS_IC_URL=%s names %s, another IC than %s", name, raw, ic.name, st.ic.name))
		default:
			st.ic = ic
		}
	}
	if st.ic == nil && len(errs) == 0 {
		return errors.New("no long-running icws service has an ICWS_IC_URL that names an `icws replica` service of the file")
	}
	if st.ic != nil {
		st.ic.env["ICWS_REPLICA_CONTROL"] = "true"
		st.t.Logf("the IC is service %s (icws replica); the test turns on its control API (ICWS_REPLICA_CONTROL=true) to drive the demo canister", st.ic.name)
	}
	return errors.Join(errs...)
}

// mapReferences rewrites what a service's environment (and a nats service's routes) names of the
// other services: container paths to their stand-ins, service host names in URLs to loopback ports.
func (st *composeStack) mapReferences(svc *stackService) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(svc.env)) {
		v := svc.env[k]
		switch {
		case svc.listenVars[k]:
		case strings.HasPrefix(v, "/"):
			host, ok := svc.fs.HostPath(v)
			if !ok {
				errs = append(errs, fmt.Errorf("service %s: %s=%s is a path in the container that no volume, secret or config provides", svc.name, k, v))
				continue
			}
			svc.env[k] = host
		case strings.Contains(v, "://"):
			mapped, err := st.mapURLs(svc.name, k, v)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			svc.env[k] = mapped
			if k == "ICWS_IC_URL" && st.ic != nil {
				st.icURL = mapped
			}
		}
	}
	// The default IC URL (mainnet) is no service either.
	if svc.kind == icwsService && !svc.oneShot && st.icws.Reads(svc.command, "ICWS_IC_URL") {
		if _, set := svc.env["ICWS_IC_URL"]; !set {
			if _, err := st.mapURLs(svc.name, "ICWS_IC_URL (default)", st.icws.Vars["ICWS_IC_URL"].Default); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if svc.kind == natsServerService {
		var routes []string
		for _, r := range svc.natsOpts.Routes {
			mapped, err := st.mapURLs(svc.name, "config: cluster routes", r.String())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			routes = append(routes, mapped)
		}
		svc.natsOpts.RoutesStr = strings.Join(routes, ",")
	}
	return errors.Join(errs...)
}

// defaultPorts are the ports a URL without one means, by scheme.
var defaultPorts = map[string]int{"nats": 4222, "tls": 4222, "nats-route": 6222, "http": 80, "ws": 80, "https": 443, "wss": 443}

// mapURLs maps the service host names of a URL or a comma-separated list of them to loopback.
// A host that is no service fails for variables that name servers to dial (*_URL, NATS URLs);
// elsewhere a URL may name anything (an allowed origin, say).
func (st *composeStack) mapURLs(service, field, value string) (string, error) {
	parts := strings.Split(value, ",")
	for i, part := range parts {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil || u.Host == "" {
			continue
		}
		host := u.Hostname()
		target := st.services[host]
		if target == nil {
			dialed := strings.Contains(field, "URL") || strings.Contains(field, "routes") || strings.HasPrefix(u.Scheme, "nats") || u.Scheme == "tls"
			if !dialed {
				continue
			}
			if _, ok := st.project.Services[host]; ok {
				return "", fmt.Errorf("service %s: %s names service %s, which this test does not run", service, field, host)
			}
			return "", fmt.Errorf("service %s: %s names host %s, which is no service of the file (%s)", service, field, host, redactURL(u))
		}
		port := defaultPorts[u.Scheme]
		if p := u.Port(); p != "" {
			port, _ = strconv.Atoi(p)
		}
		local, ok := target.ports[port]
		if !ok {
			return "", fmt.Errorf("service %s: %s names %s:%d, but %s listens on no port %d (it listens on %v)", service, field, host, port, host, port, slices.Sorted(maps.Keys(target.ports)))
		}
		u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(local))
		parts[i] = u.String()
	}
	return strings.Join(parts, ","), nil
}

// redactURL shows a URL without its password.
func redactURL(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User(c.User.Username())
	}
	return c.String()
}

// checkPublishedPorts checks that every port a service publishes is one it listens on here.
func (st *composeStack) checkPublishedPorts() error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(st.services)) {
		svc := st.services[name]
		for _, p := range svc.def.Ports {
			if _, ok := svc.ports[int(p.Target)]; !ok {
				errs = append(errs, fmt.Errorf("service %s: ports: publishes %s:%d, but the service listens on no port %d (it listens on %v)", name, p.Published, p.Target, p.Target, slices.Sorted(maps.Keys(svc.ports))))
			}
		}
	}
	return errors.Join(errs...)
}

// planOrder orders the services so that each starts after what it depends on.
func (st *composeStack) planOrder() error {
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, from string) error
	visit = func(name, from string) error {
		if st.services[name] == nil {
			return fmt.Errorf("service %s: depends_on: %s, which this test does not run", from, name)
		}
		switch state[name] {
		case 1:
			return fmt.Errorf("service %s: depends_on: a cycle through %s", from, name)
		case 2:
			return nil
		}
		state[name] = 1
		for _, dep := range slices.Sorted(maps.Keys(st.services[name].def.DependsOn)) {
			if err := visit(dep, name); err != nil {
				return err
			}
		}
		state[name] = 2
		st.order = append(st.order, name)
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(st.services)) {
		if err := visit(name, name); err != nil {
			return err
		}
	}
	return nil
}

// natsArgs is the nats-server command line: the file's command (config path mapped) and what
// must move on one host: client, cluster and monitoring ports to loopback, routes to the mapped
// ports (the store was moved by moveNATSStore). nats-server's --cluster flag replaces the
// configured route credentials, so they are passed on as the config has them.
func (svc *stackService) natsArgs(t *testing.T) []string {
	o := svc.natsOpts
	client := o.Port
	if client == 0 {
		client = server.DEFAULT_PORT
	}
	args := append(slices.Clone(svc.args), "-a", "127.0.0.1", "-p", strconv.Itoa(svc.ports[client]))
	if o.Cluster.Port != 0 {
		u := url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", svc.ports[o.Cluster.Port])}
		if o.Cluster.Username != "" {
			u.User = url.UserPassword(o.Cluster.Username, o.Cluster.Password)
		}
		args = append(args, "--cluster", u.String())
	}
	if o.RoutesStr != "" {
		args = append(args, "--routes", o.RoutesStr)
	}
	if o.HTTPPort != 0 {
		args = append(args, "-m", strconv.Itoa(svc.ports[o.HTTPPort]))
	}
	return args
}
