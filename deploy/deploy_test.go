// Package deploy holds the container and cluster files; this test checks what can be checked
// without a container engine.
package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func TestNATSClusterConfigs(t *testing.T) {
	names := map[string]bool{}
	for _, n := range []string{"n1", "n2", "n3"} {
		opts, err := server.ProcessConfigFile(filepath.Join("nats", n+".conf"))
		if err != nil {
			t.Fatalf("%s.conf: %v", n, err)
		}
		if opts.ServerName != n || names[opts.ServerName] {
			t.Errorf("%s.conf: server_name %q", n, opts.ServerName)
		}
		names[opts.ServerName] = true
		if !opts.JetStream || opts.StoreDir == "" {
			t.Errorf("%s.conf: JetStream %v, store_dir %q", n, opts.JetStream, opts.StoreDir)
		}
		if opts.Cluster.Name != "icws" || len(opts.Routes) != 3 {
			t.Errorf("%s.conf: cluster %q with %d routes", n, opts.Cluster.Name, len(opts.Routes))
		}
		// Streams accept 4 MiB messages by default (broker.Topology.MaxMessageBytes).
		if opts.MaxPayload < 4<<20 {
			t.Errorf("%s.conf: max_payload %d is below the 4 MiB stream default", n, opts.MaxPayload)
		}
	}
}

func TestComposeReferencesExistingFiles(t *testing.T) {
	compose, err := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"deploy/Dockerfile", "./deploy/nats/n1.conf", "./deploy/nats/n2.conf", "./deploy/nats/n3.conf", "./deploy/prometheus/prometheus.yml"} {
		if !strings.Contains(string(compose), f) {
			t.Errorf("docker-compose.yml does not use %s", f)
		}
		if _, err := os.Stat(filepath.Join("..", f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, v := range []string{"ICWS_NATS_URL", "ICWS_STREAM_REPLICAS: \"3\""} {
		if !strings.Contains(string(compose), v) {
			t.Errorf("docker-compose.yml lacks %s", v)
		}
	}
}
