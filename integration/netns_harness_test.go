package integration

// A private network of Linux network namespaces for partition tests (fault_partition_test.go):
// every process of a deployment runs in a namespace of its own (`ip netns exec`), joined to the
// test's namespace through bridges in a switch namespace, all created by the test and removed in
// t.Cleanup. Addresses are the test's own, from 198.18.0.0/15 (reserved for network tests).
//
// Four networks, so that one kind of traffic can be cut while the others flow:
//   - front:  the test process (clients, health checks, admin and monitoring endpoints) and every host;
//   - back:   NATS client connections (NATS nodes, edges, submitters, pollers);
//   - routes: NATS cluster routes (NATS nodes only);
//   - ic:     the IC API (replica, submitters, pollers).
//
// A cut sets a host's port on one bridge down in the switch namespace: the host keeps its address
// and routes and sees no error, its packets on that network are dropped, as in a partition.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/client"
)

// The networks of a netLab, in the order of their /24s.
const (
	netFront = iota
	netBack
	netRoutes
	netIC
	netCount
)

var netNames = [netCount]string{"front", "back", "routes", "ic"}

// netLab is one test's set of namespaces.
type netLab struct {
	t      *testing.T
	ipPath string
	tag    string // random, in every name
	base   int    // third octet of the front network; the others follow
	sw     string // switch namespace
	hosts  []*netHost
}

// netHost is one namespace with an address on some of the networks.
type netHost struct {
	lab   *netLab
	Name  string
	NS    string
	index int
	ips   [netCount]string
	ports [netCount]string // switch-side interface per network ("" if not attached)
}

// netLabPrefix starts every namespace a netLab creates; the pid after it lets a later run remove
// what a killed run left behind.
const netLabPrefix = "icwslab-"

// requireNetLab skips the test unless network namespaces can be made here (root, iproute2).
func requireNetLab(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition tests need root to create network namespaces (CI runs as root)")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("partition tests need `ip` from iproute2 (.ci/run installs it)")
	}
	return ip
}

// startNetLab creates the switch namespace with one bridge per network and joins the test's
// own namespace to the front network.
func startNetLab(t *testing.T) *netLab {
	t.Helper()
	ipPath := requireNetLab(t)
	removeStaleNetLabs(t, ipPath)
	var b [2]byte
	_, _ = rand.Read(b[:])
	lab := &netLab{t: t, ipPath: ipPath, tag: hex.EncodeToString(b[:])}
	// 198.18.0.0/15 has 512 /24s: pick four in a row, by the tag.
	lab.base = 4 * (1 + int(b[0])%100)
	lab.sw = fmt.Sprintf("%s%d-%s-sw", netLabPrefix, os.Getpid(), lab.tag)
	if out, err := lab.run("netns", "add", lab.sw); err != nil {
		t.Skipf("cannot create a network namespace here: %v: %s", err, out)
	}
	t.Cleanup(lab.remove)
	lab.must("-n", lab.sw, "link", "set", "lo", "up")
	for n := range netCount {
		lab.must("-n", lab.sw, "link", "add", lab.bridge(n), "type", "bridge")
		lab.must("-n", lab.sw, "link", "set", lab.bridge(n), "up")
	}
	// The test's namespace: .1 on the front network.
	root, port := "il"+lab.tag, "ir"+lab.tag
	lab.must("link", "add", root, "type", "veth", "peer", "name", port, "netns", lab.sw)
	lab.must("addr", "add", lab.addr(netFront, 1)+"/24", "dev", root)
	lab.must("link", "set", root, "up")
	lab.must("-n", lab.sw, "link", "set", port, "master", lab.bridge(netFront), "up")
	t.Logf("network lab %s: front %s.0/24 (this process at %s), back, routes and ic on the next /24s",
		lab.tag, lab.prefix(netFront), lab.addr(netFront, 1))
	return lab
}

func (lab *netLab) bridge(n int) string { return "br" + netNames[n] }

func (lab *netLab) prefix(n int) string {
	third := lab.base + n
	return fmt.Sprintf("198.%d.%d", 18+third/256, third%256)
}

func (lab *netLab) addr(n, host int) string { return fmt.Sprintf("%s.%d", lab.prefix(n), host) }

func (lab *netLab) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, lab.ipPath, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (lab *netLab) must(args ...string) {
	lab.t.Helper()
	if out, err := lab.run(args...); err != nil {
		lab.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// remove deletes every namespace of the lab (their interfaces go with them, and with the switch's
// end of the test's veth pair, its own end and address).
func (lab *netLab) remove() {
	for _, h := range lab.hosts {
		if out, err := lab.run("netns", "del", h.NS); err != nil {
			lab.t.Logf("remove namespace %s: %v: %s", h.NS, err, out)
		}
	}
	if out, err := lab.run("netns", "del", lab.sw); err != nil {
		lab.t.Logf("remove namespace %s: %v: %s", lab.sw, err, out)
	}
}

// removeStaleNetLabs deletes namespaces left by netLabs of processes that no longer exist.
func removeStaleNetLabs(t *testing.T, ipPath string) {
	out, err := exec.Command(ipPath, "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, netLabPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", pidText)); err == nil {
			continue // its test is still running
		}
		if err := exec.Command(ipPath, "netns", "del", name).Run(); err == nil {
			t.Logf("removed namespace %s left by an earlier run", name)
		}
	}
}

// addHost creates a namespace attached to the given networks (front always).
func (lab *netLab) addHost(name string, nets ...int) *netHost {
	lab.t.Helper()
	h := &netHost{lab: lab, Name: name, index: len(lab.hosts) + 10}
	h.NS = fmt.Sprintf("%s%d-%s-%s", netLabPrefix, os.Getpid(), lab.tag, name)
	lab.must("netns", "add", h.NS)
	lab.hosts = append(lab.hosts, h)
	lab.must("-n", h.NS, "link", "set", "lo", "up")
	for _, n := range append([]int{netFront}, nets...) {
		dev := "eth" + strconv.Itoa(n)
		port := fmt.Sprintf("p%s%02d%d", lab.tag, h.index, n)
		lab.must("-n", h.NS, "link", "add", dev, "type", "veth", "peer", "name", port, "netns", lab.sw)
		h.ips[n] = lab.addr(n, h.index)
		h.ports[n] = port
		lab.must("-n", h.NS, "addr", "add", h.ips[n]+"/24", "dev", dev)
		lab.must("-n", h.NS, "link", "set", dev, "up")
		lab.must("-n", lab.sw, "link", "set", port, "master", lab.bridge(n), "up")
	}
	return h
}

// IP is the host's address on network n.
func (h *netHost) IP(n int) string {
	if h.ips[n] == "" {
		h.lab.t.Fatalf("%s is not on the %s network", h.Name, netNames[n])
	}
	return h.ips[n]
}

// cut drops every packet of h on network n (no error, no reset: a partition); heal undoes it.
func (h *netHost) cut(n int)  { h.lab.must("-n", h.lab.sw, "link", "set", h.ports[n], "down") }
func (h *netHost) heal(n int) { h.lab.must("-n", h.lab.sw, "link", "set", h.ports[n], "up") }

// start runs a process in the host's namespace, as startProcess does on the test's loopback.
func (h *netHost) start(t testing.TB, name, path string, args []string, env map[string]string) *Process {
	t.Helper()
	return startProcess(t, name, h.lab.ipPath, append([]string{"netns", "exec", h.NS, path}, args...), env)
}

// netDeployment is a Deployment whose processes each run on a netHost.
type netDeployment struct {
	*Deployment
	lab   *netLab
	hosts map[string]*netHost // by process name: n1..n3, replica, edge-1, submitter-1, ...
	// BackURLs is ICWS_NATS_URL for the roles: the NATS nodes on the back network.
	BackURLs string
}

// Fixed ports: every host has its own namespace, so they never collide.
const (
	netNATSClientPort = 4222
	netNATSRoutePort  = 6222
	netNATSHTTPPort   = 8222
	netWSPort         = 8080
	netAdminPort      = 9090
	netReplicaPort    = 4943
)

// startNetFaultDeployment is startFaultDeployment on a netLab: 3 NATS nodes, the replica, two of
// every role, every stream and bucket at 3 replicas, the default lease TTLs.
func startNetFaultDeployment(t *testing.T, replica ReplicaOptions) *netDeployment {
	t.Helper()
	start := time.Now()
	lab := startNetLab(t)
	nd := &netDeployment{Deployment: &Deployment{}, lab: lab, hosts: map[string]*netHost{}}
	host := func(name string, nets ...int) *netHost {
		h := lab.addHost(name, nets...)
		nd.hosts[name] = h
		return h
	}
	var natsHosts []*netHost
	for i := 1; i <= 3; i++ {
		natsHosts = append(natsHosts, host(fmt.Sprintf("n%d", i), netBack, netRoutes))
	}
	nd.NATS = startNetNATSCluster(t, natsHosts)
	var back []string
	for _, h := range natsHosts {
		back = append(back, fmt.Sprintf("nats://%s:%d", h.IP(netBack), netNATSClientPort))
	}
	nd.BackURLs = strings.Join(back, ",")

	rh := host("replica", netIC)
	env := replica.env()
	env["ICWS_REPLICA_LISTEN"] = fmt.Sprintf("0.0.0.0:%d", netReplicaPort)
	env["ICWS_LOG_LEVEL"] = "debug"
	env["ICWS_ADMIN_LISTEN"] = fmt.Sprintf("%s:%d", rh.IP(netFront), netAdminPort)
	env["ICWS_DATA_DIR"] = t.TempDir()
	r := newReplicaHandle(fmt.Sprintf("http://%s:%d", rh.IP(netFront), netReplicaPort))
	r.Proc = rh.start(t, "replica", icwsBinary(t), []string{"replica"}, env)
	waitHTTP200(t, r.URL+"/api/v2/status", 30*time.Second, r.Proc)
	nd.Replica = &r
	icURL := fmt.Sprintf("http://%s:%d", rh.IP(netIC), netReplicaPort)
	// Edges do not reach the IC (they never call it), so they are given its root key, as an
	// operator would give it to edges on a local network.
	kctx, kcancel := context.WithTimeout(context.Background(), 30*time.Second)
	rootKey, err := client.RootKey(kctx, r.URL, nil, nil)
	kcancel()
	if err != nil {
		t.Fatalf("root key of the replica: %v", err)
	}

	nd.IdentityFile, nd.Gateway = newIdentityFile(t)
	roleEnv := faultLeaseEnv(map[string]string{"ICWS_STREAM_REPLICAS": "3"})
	startNetRole := func(role, idVar, name string, h *netHost, extra map[string]string) Role {
		env := map[string]string{
			"ICWS_NATS_URL":      nd.BackURLs,
			"ICWS_IC_URL":        icURL,
			"ICWS_IDENTITY_FILE": nd.IdentityFile,
			"ICWS_ADMIN_LISTEN":  fmt.Sprintf("%s:%d", h.IP(netFront), netAdminPort),
			"ICWS_DATA_DIR":      t.TempDir(),
			"ICWS_LOG_LEVEL":     "debug",
			idVar:                name,
		}
		maps.Copy(env, roleEnv)
		maps.Copy(env, extra)
		rl := Role{Name: name, AdminURL: fmt.Sprintf("http://%s:%d", h.IP(netFront), netAdminPort)}
		rl.Proc = h.start(t, name, icwsBinary(t), []string{role}, env)
		waitReady(t, rl.AdminURL, rl.Proc)
		return rl
	}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("poller-%d", i)
		rl := startNetRole("poller", "ICWS_POLLER_ID", name, host(name, netBack, netIC), nil)
		nd.Pollers = append(nd.Pollers, &rl)
	}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("submitter-%d", i)
		rl := startNetRole("submitter", "ICWS_SUBMITTER_ID", name, host(name, netBack, netIC), nil)
		nd.Submitters = append(nd.Submitters, &rl)
	}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("edge-%d", i)
		h := host(name, netBack)
		listen := fmt.Sprintf("%s:%d", h.IP(netFront), netWSPort)
		rl := startNetRole("edge", "ICWS_EDGE_ID", name, h, map[string]string{"ICWS_LISTEN": listen, "ICWS_IC_ROOT_KEY": hex.EncodeToString(rootKey)})
		nd.Edges = append(nd.Edges, &Edge{Role: rl, WSURL: "ws://" + listen})
	}
	faultKeepLogs(t, nd.Deployment)
	faultWaitPartitionsSplit(t, nd.Deployment, 60*time.Second)
	t.Logf("deployment on %d network namespaces (3 NATS nodes, replica, 2 pollers, 2 submitters, 2 edges) ready in %s",
		len(lab.hosts)+1, time.Since(start).Round(time.Millisecond))
	return nd
}

// startNetNATSCluster runs one nats-server per host: clients on every address (the roles use the
// back network, the test the front one), routes only on the routes network, monitoring on front.
// Client URLs are not advertised, so no role learns an address on another network.
func startNetNATSCluster(t *testing.T, hosts []*netHost) *NATSCluster {
	t.Helper()
	bin := natsServerBinary(t)
	c := &NATSCluster{t: t}
	var routes []string
	for _, h := range hosts {
		routes = append(routes, fmt.Sprintf("nats-route://%s:%d", h.IP(netRoutes), netNATSRoutePort))
	}
	for i, h := range hosts {
		dir := t.TempDir()
		var cfg bytes.Buffer
		fmt.Fprintf(&cfg, "server_name: %s\nlisten: 0.0.0.0:%d\nhttp: %s:%d\n", h.Name, netNATSClientPort, h.IP(netFront), netNATSHTTPPort)
		fmt.Fprintf(&cfg, "jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n", filepath.Join(dir, "js"))
		// Route pings as deploy/nats/n1.conf has them: a cut-off node loses its peers' interest fast.
		fmt.Fprintf(&cfg, "cluster {\n  name: icws-test\n  listen: %s:%d\n  no_advertise: true\n  ping_interval: \"1s\"\n  ping_max: 3\n  routes: [\n", h.IP(netRoutes), netNATSRoutePort)
		for j, r := range routes {
			if j != i {
				fmt.Fprintf(&cfg, "    %s\n", r)
			}
		}
		cfg.WriteString("  ]\n}\n")
		conf := filepath.Join(dir, h.Name+".conf")
		if err := os.WriteFile(conf, cfg.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		node := &NATSNode{
			Name:       h.Name,
			ClientURL:  fmt.Sprintf("nats://%s:%d", h.IP(netFront), netNATSClientPort),
			MonitorURL: fmt.Sprintf("http://%s:%d", h.IP(netFront), netNATSHTTPPort),
		}
		node.Proc = h.start(t, "nats-"+h.Name, bin, []string{"-c", conf}, nil)
		c.Nodes = append(c.Nodes, node)
	}
	for _, n := range c.Nodes {
		waitHTTP200(t, n.MonitorURL+"/varz", 30*time.Second, n.Proc)
	}
	c.WaitJetStream(60 * time.Second)
	return c
}
