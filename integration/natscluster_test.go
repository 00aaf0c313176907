package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/internal/testkit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSNode is one nats-server process of a test cluster.
type NATSNode struct {
	Name       string
	ClientURL  string // nats://127.0.0.1:<port>
	MonitorURL string // http://127.0.0.1:<port>
	Proc       *Process
}

// NATSCluster is a JetStream cluster of nats-server processes on loopback.
type NATSCluster struct {
	t     testing.TB
	Nodes []*NATSNode
}

// startNATSCluster starts n nats-server processes (JetStream, file store in t.TempDir(), routes on
// loopback, names n1..nN) and waits until JetStream has a meta leader with every peer known.
// n = 1 starts a single server without cluster block.
func startNATSCluster(t testing.TB, n int) *NATSCluster {
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
			// Route pings as deploy/nats/n1.conf has them: a frozen node loses its peers' interest fast.
			fmt.Fprintf(&cfg, "cluster {\n  name: icws-test\n  listen: 127.0.0.1:%d\n  ping_interval: \"1s\"\n  ping_max: 3\n  routes: [\n", p.cluster)
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
	// nats-server answers /varz before it listens for clients, so wait for the client port too.
	for _, node := range c.Nodes {
		waitHTTP200(t, node.MonitorURL+"/varz", 30*time.Second, node.Proc)
		addr := strings.TrimPrefix(node.ClientURL, "nats://")
		testkit.WaitForNil(t, 30*time.Second, 20*time.Millisecond, node.Name+" accepting clients", func() error {
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

// URLs is the comma-separated client URL list of every node (the form ICWS_NATS_URL takes).
func (c *NATSCluster) URLs() string {
	var u []string
	for _, n := range c.Nodes {
		u = append(u, n.ClientURL)
	}
	return strings.Join(u, ",")
}

// Connect returns a nats.go connection to the cluster that reconnects for ever; closed in Cleanup.
func (c *NATSCluster) Connect(opts ...nats.Option) *nats.Conn {
	c.t.Helper()
	base := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.Timeout(2 * time.Second),
		nats.RetryOnFailedConnect(false),
	}
	nc, err := nats.Connect(c.URLs(), append(base, opts...)...)
	if err != nil {
		c.t.Fatalf("connect to NATS cluster %s: %v", c.URLs(), err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// WaitJetStream waits until the JetStream API answers (a meta leader exists) and, for a cluster,
// every running node is a current peer of the meta group.
func (c *NATSCluster) WaitJetStream(timeout time.Duration) {
	c.t.Helper()
	var nc *nats.Conn
	defer func() {
		if nc != nil {
			nc.Close()
		}
	}()
	var js jetstream.JetStream
	// The monitoring port answers before the client port accepts (JetStream recovers its store
	// in between), so connecting is part of the wait.
	testkit.WaitForNil(c.t, timeout, 100*time.Millisecond, "JetStream meta leader", func() error {
		if nc == nil {
			conn, err := nats.Connect(c.URLs(), nats.Timeout(time.Second))
			if err != nil {
				return fmt.Errorf("connect: %w", err)
			}
			if js, err = jetstream.New(conn); err != nil {
				conn.Close()
				return err
			}
			nc = conn
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := js.AccountInfo(ctx); err != nil {
			return fmt.Errorf("account info: %w", err)
		}
		if len(c.Nodes) == 1 {
			return nil
		}
		return c.metaPeersCurrent()
	})
}

// jszMeta is the part of /jsz the harness reads.
type jszMeta struct {
	MetaCluster *struct {
		Leader   string `json:"leader"`
		Replicas []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
			Offline bool   `json:"offline"`
		} `json:"replicas"`
	} `json:"meta_cluster"`
}

// metaPeersCurrent checks, on a running node's /jsz, that there is a meta leader and that every
// other running node is a current replica.
func (c *NATSCluster) metaPeersCurrent() error {
	running := map[string]bool{}
	for _, n := range c.Nodes {
		if exited, _ := n.Proc.Exited(); !exited {
			running[n.Name] = true
		}
	}
	for _, n := range c.Nodes {
		if !running[n.Name] {
			continue
		}
		var j jszMeta
		if err := getJSON(n.MonitorURL+"/jsz", &j); err != nil {
			return err
		}
		if j.MetaCluster == nil || j.MetaCluster.Leader == "" {
			return fmt.Errorf("%s: no meta leader", n.Name)
		}
		if j.MetaCluster.Leader != n.Name {
			continue
		}
		current := map[string]bool{n.Name: true}
		for _, r := range j.MetaCluster.Replicas {
			if r.Current && !r.Offline {
				current[r.Name] = true
			}
		}
		for name := range running {
			if !current[name] {
				return fmt.Errorf("meta leader %s: peer %s not current yet", n.Name, name)
			}
		}
		return nil
	}
	return fmt.Errorf("meta leader is not a running node")
}

// Index returns the position of the node called name, or -1.
func (c *NATSCluster) Index(name string) int {
	for i, n := range c.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

// Kill SIGKILLs node i.
func (c *NATSCluster) Kill(i int) { c.Nodes[i].Proc.Kill() }

// Restart starts node i again with its config and store (after Kill) and waits until it is a
// current meta peer again.
func (c *NATSCluster) Restart(i int) {
	c.t.Helper()
	c.Nodes[i].Proc.Restart()
	waitHTTP200(c.t, c.Nodes[i].MonitorURL+"/varz", 30*time.Second, c.Nodes[i].Proc)
	c.WaitJetStream(60 * time.Second)
}

// StreamMsgs is the number of messages node i holds in its own copy of a stream (from /jsz).
func (c *NATSCluster) StreamMsgs(i int, stream string) (uint64, error) {
	var j struct {
		AccountDetails []struct {
			StreamDetail []struct {
				Name  string `json:"name"`
				State struct {
					Msgs     uint64 `json:"messages"`
					LastSeq  uint64 `json:"last_seq"`
					FirstSeq uint64 `json:"first_seq"`
				} `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := getJSON(c.Nodes[i].MonitorURL+"/jsz?streams=true", &j); err != nil {
		return 0, err
	}
	for _, a := range j.AccountDetails {
		for _, s := range a.StreamDetail {
			if s.Name == stream {
				return s.State.Msgs, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: stream %s not on this node", c.Nodes[i].Name, stream)
}

func getJSON(url string, v any) error {
	code, body, err := httpGet(context.Background(), url)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET %s: status %d", url, code)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}
