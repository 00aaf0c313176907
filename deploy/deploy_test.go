// Package deploy holds the container and cluster files; this test checks what can be checked
// without a container engine.
package deploy

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func TestNATSClusterConfigs(t *testing.T) {
	pw := setNATSEnv(t)
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
		// A lost peer's routes go stale within seconds (see the comment in the file).
		if stale := opts.Cluster.PingInterval * time.Duration(opts.Cluster.MaxPingsOut+1); stale == 0 || stale > 5*time.Second {
			t.Errorf("%s.conf: routes notice a lost peer after %s (ping_interval %s, ping_max %d); want at most 5s", n, stale, opts.Cluster.PingInterval, opts.Cluster.MaxPingsOut)
		}
		// Streams accept 4 MiB messages by default (bus.Topology.MaxMessageBytes).
		if opts.MaxPayload < 4<<20 {
			t.Errorf("%s.conf: max_payload %d is below the 4 MiB stream default", n, opts.MaxPayload)
		}
		// Routes authenticate, with the password of every route URL.
		if opts.Cluster.Username != "icws-route" || opts.Cluster.Password != pw.Route {
			t.Errorf("%s.conf: routes do not require the icws-route password", n)
		}
		for _, r := range opts.Routes {
			if p, _ := r.User.Password(); r.User.Username() != "icws-route" || p != pw.Route {
				t.Errorf("%s.conf: route %s does not authenticate", n, r.Host)
			}
		}
		// Monitoring has no authentication: loopback only.
		if opts.HTTPHost != "127.0.0.1" {
			t.Errorf("%s.conf: monitoring listens on %q, want 127.0.0.1", n, opts.HTTPHost)
		}
		// Every client is one of the three role users, each with its own permissions.
		users := map[string]*server.User{}
		for _, u := range opts.Users {
			users[u.Username] = u
		}
		if len(users) != 3 || len(opts.Nkeys) != 0 || opts.NoAuthUser != "" {
			t.Errorf("%s.conf: users %v, nkeys %d, no_auth_user %q; want exactly the three role users", n, slices.Sorted(maps.Keys(users)), len(opts.Nkeys), opts.NoAuthUser)
		}
		for _, role := range []string{"edge", "submitter", "poller"} {
			u := users["icws-"+role]
			if u == nil || u.Password != pw.of(role) || u.Permissions == nil || u.Account == nil || u.Account.Name != "ICWS" {
				t.Errorf("%s.conf: user icws-%s is missing, has another password, no permissions or another account than ICWS", n, role)
			}
		}
	}
}

func TestComposeReferencesExistingFiles(t *testing.T) {
	compose, err := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"deploy/Dockerfile", "./deploy/nats/n1.conf", "./deploy/nats/n2.conf", "./deploy/nats/n3.conf", "./deploy/nats/auth.conf", "./deploy/prometheus/prometheus.yml"} {
		if !strings.Contains(string(compose), f) {
			t.Errorf("docker-compose.yml does not use %s", f)
		}
		if _, err := os.Stat(filepath.Join("..", f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, v := range []string{
		"ICWS_NATS_URL", "ICWS_STREAM_REPLICAS: \"3\"",
		// Each role connects as its own user (deploy/nats/auth.conf); only submitters manage streams.
		"ICWS_NATS_USER: icws-edge", "ICWS_NATS_USER: icws-submitter", "ICWS_NATS_USER: icws-poller",
		"ICWS_NATS_PASSWORD_FILE: /run/secrets/nats_edge_password",
		"ICWS_NATS_PASSWORD_FILE: /run/secrets/nats_submitter_password",
		"ICWS_NATS_PASSWORD_FILE: /run/secrets/nats_poller_password",
		"NATS_ROUTE_1:", "NATS_ROUTE_2:", "NATS_ROUTE_3:",
	} {
		if !strings.Contains(string(compose), v) {
			t.Errorf("docker-compose.yml lacks %s", v)
		}
	}
}
