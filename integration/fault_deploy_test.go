package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// faultStartNATSCluster is startNATSCluster (natscluster_test.go) with one more wait: nats-server
// answers /varz before it listens for clients, so startNATSCluster's first Connect can fail with
// "no servers available for connection" (seen in about one start in five on a loaded machine).
// This version waits until every client port accepts TCP before it waits for JetStream.
func faultStartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	bin := natsServerBinary(t)
	type ports struct{ client, cluster, monitor int }
	ps := make([]ports, n)
	for i := range ps {
		ps[i] = ports{freePort(t), freePort(t), freePort(t)}
	}
	var routes []string
	for _, p := range ps {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p.cluster))
	}
	c := &NATSCluster{t: t}
	for i, p := range ps {
		name := fmt.Sprintf("n%d", i+1)
		dir := t.TempDir()
		var cfg strings.Builder
		fmt.Fprintf(&cfg, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n", name, p.client, p.monitor)
		fmt.Fprintf(&cfg, "jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n", filepath.Join(dir, "js"))
		if n > 1 {
			fmt.Fprintf(&cfg, "cluster {\n  name: icws-test\n  listen: 127.0.0.1:%d\n  routes: [\n", p.cluster)
			for j, r := range routes {
				if j != i {
					fmt.Fprintf(&cfg, "    %s\n", r)
				}
			}
			cfg.WriteString("  ]\n}\n")
		}
		confPath := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(confPath, []byte(cfg.String()), 0o644); err != nil {
			t.Fatalf("write %s: %v", confPath, err)
		}
		node := &NATSNode{
			Name:       name,
			ClientURL:  fmt.Sprintf("nats://127.0.0.1:%d", p.client),
			MonitorURL: fmt.Sprintf("http://127.0.0.1:%d", p.monitor),
		}
		node.Proc = startProcess(t, "nats-"+name, bin, []string{"-c", confPath}, nil)
		c.Nodes = append(c.Nodes, node)
	}
	for _, node := range c.Nodes {
		waitHTTP200(t, node.MonitorURL+"/varz", 30*time.Second, node.Proc)
		addr := strings.TrimPrefix(node.ClientURL, "nats://")
		waitFor(t, 30*time.Second, 20*time.Millisecond, node.Name+" accepting clients", func() error {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return err
			}
			return conn.Close()
		})
	}
	c.WaitJetStream(60 * time.Second)
	return c
}

// faultStartDeployment is startDeployment (icws_test.go) on faultStartNATSCluster.
func faultStartDeployment(t testing.TB, o DeploymentOptions) *Deployment {
	t.Helper()
	if o.NATSNodes == 0 {
		o.NATSNodes = 1
	}
	d := &Deployment{}
	d.NATS = faultStartNATSCluster(t, o.NATSNodes)
	d.Replica = startReplica(t, o.Replica)
	d.IdentityFile, d.Gateway = newIdentityFile(t)
	base := RoleOptions{NATSURL: d.NATS.URLs(), ICURL: d.Replica.URL, IdentityFile: d.IdentityFile}
	with := func(id string, env map[string]string) RoleOptions {
		r := base
		r.ID, r.Env = id, env
		return r
	}
	for i := range o.Pollers {
		d.Pollers = append(d.Pollers, startPoller(t, with(fmt.Sprintf("poller-%d", i+1), o.PollEnv)))
	}
	for i := range o.Submitters {
		d.Submitters = append(d.Submitters, startSubmitter(t, with(fmt.Sprintf("submitter-%d", i+1), o.SubmitterEnv)))
	}
	for i := range o.Edges {
		d.Edges = append(d.Edges, startEdge(t, with(fmt.Sprintf("edge-%d", i+1), o.EdgeEnv)))
	}
	return d
}
