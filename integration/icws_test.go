package integration

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/replica/wscanister"
)

// DemoCanisterID is the replica's default demo canister (ICWS_REPLICA_CANISTER_ID).
const DemoCanisterID = "bkyz2-fmaaa-aaaaa-qaaaq-cai"

// Replica is an `icws replica` process: the IC simulator with the demo canister.
type Replica struct {
	URL        string // http://127.0.0.1:<port>, the ICWS_IC_URL of the roles
	CanisterID string
	ControlURL string // <URL>/_/control/<canister id>/
	Control    *wscanister.ControlClient
	Proc       *Process
}

// ReplicaOptions are the demo canister's and replica's timing knobs; zero values keep icws defaults.
type ReplicaOptions struct {
	AckInterval      time.Duration // ICWS_REPLICA_ACK_INTERVAL
	KeepAliveTimeout time.Duration // ICWS_REPLICA_KEEPALIVE_TIMEOUT
	UpdateLatency    time.Duration // ICWS_REPLICA_UPDATE_LATENCY
	Env              map[string]string
}

func (o ReplicaOptions) env() map[string]string {
	env := map[string]string{"ICWS_REPLICA_CONTROL": "true"} // the tests drive the demo canister through it
	if o.AckInterval > 0 {
		env["ICWS_REPLICA_ACK_INTERVAL"] = o.AckInterval.String()
	}
	if o.KeepAliveTimeout > 0 {
		env["ICWS_REPLICA_KEEPALIVE_TIMEOUT"] = o.KeepAliveTimeout.String()
	}
	if o.UpdateLatency > 0 {
		env["ICWS_REPLICA_UPDATE_LATENCY"] = o.UpdateLatency.String()
	}
	maps.Copy(env, o.Env)
	return env
}

func newReplicaHandle(url string) Replica {
	control := url + "/_/control/" + DemoCanisterID + "/"
	return Replica{
		URL:        url,
		CanisterID: DemoCanisterID,
		ControlURL: control,
		Control:    &wscanister.ControlClient{BaseURL: control},
	}
}

// startReplica runs `icws replica` on a free loopback port and waits until /api/v2/status answers.
func startReplica(t testing.TB, o ReplicaOptions) *Replica {
	t.Helper()
	addr := freeAddr(t)
	env := o.env()
	env["ICWS_REPLICA_LISTEN"] = addr
	env["ICWS_LOG_LEVEL"] = "debug"
	env["ICWS_ADMIN_LISTEN"] = freeAddr(t)
	env["ICWS_DATA_DIR"] = t.TempDir()
	r := newReplicaHandle("http://" + addr)
	r.Proc = startProcess(t, "replica", icwsBinary(t), []string{"replica"}, env)
	waitHTTP200(t, r.URL+"/api/v2/status", 30*time.Second, r.Proc)
	return &r
}

// newIdentityFile creates a gateway key with `icws identity` (ICWS_IDENTITY_FILE) in a temp dir and
// returns its path and the principal it prints (empty if none could be read from the output).
func newIdentityFile(t testing.TB) (path string, gateway string) {
	t.Helper()
	return identityOf(t, filepath.Join(t.TempDir(), "key_pair"))
}

// identityOf runs `icws identity` on path (creating the key if missing).
func identityOf(t testing.TB, path string) (string, string) {
	t.Helper()
	dir := filepath.Dir(path)
	var gateway string
	out, err := runCommand(t, 30*time.Second, icwsBinary(t), []string{"identity"}, map[string]string{
		"ICWS_IDENTITY_FILE": path,
		"ICWS_DATA_DIR":      dir,
	})
	if err != nil {
		t.Fatalf("icws identity: %v\n%s", err, out)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("icws identity did not create %s: %v\n%s", path, err, out)
	}
	for _, f := range strings.Fields(out) {
		if p, err := principal.Decode(f); err == nil && len(p.Raw) == 29 {
			gateway = f
		}
	}
	return path, gateway
}

// RoleOptions configure an edge, submitter or poller process.
type RoleOptions struct {
	NATSURL      string // comma-separated (ICWS_NATS_URL)
	ICURL        string // ICWS_IC_URL
	IdentityFile string // ICWS_IDENTITY_FILE
	ID           string // ICWS_EDGE_ID / ICWS_SUBMITTER_ID / ICWS_POLLER_ID
	// StreamReplicas is ICWS_STREAM_REPLICAS; 0 means 3 for a cluster URL list, else 1.
	StreamReplicas int
	Env            map[string]string
}

// Role is a running role process with its admin endpoint.
type Role struct {
	Name     string
	AdminURL string // http://127.0.0.1:<port>
	Proc     *Process
}

// Edge is a running edge; WSURL is where clients connect.
type Edge struct {
	Role
	WSURL string // ws://127.0.0.1:<port>
}

func (o RoleOptions) env(t testing.TB, idVar string) (map[string]string, string) {
	admin := freeAddr(t)
	replicas := o.StreamReplicas
	if replicas == 0 {
		replicas = 1
		if strings.Contains(o.NATSURL, ",") {
			replicas = 3
		}
	}
	env := map[string]string{
		"ICWS_NATS_URL":        o.NATSURL,
		"ICWS_IC_URL":          o.ICURL,
		"ICWS_IDENTITY_FILE":   o.IdentityFile,
		"ICWS_ADMIN_LISTEN":    admin,
		"ICWS_STREAM_REPLICAS": strconv.Itoa(replicas),
		"ICWS_DATA_DIR":        t.TempDir(),
		"ICWS_LOG_LEVEL":       "debug",
		idVar:                  o.ID,
	}
	maps.Copy(env, o.Env)
	return env, "http://" + admin
}

func startRole(t testing.TB, role, idVar string, o RoleOptions, extra map[string]string) Role {
	t.Helper()
	if o.ID == "" {
		o.ID = role
	}
	env, admin := o.env(t, idVar)
	maps.Copy(env, extra)
	r := Role{Name: o.ID, AdminURL: admin}
	r.Proc = startProcess(t, o.ID, icwsBinary(t), []string{role}, env)
	waitReady(t, admin, r.Proc)
	return r
}

// startEdge runs `icws edge` on free loopback ports and waits for /readyz.
func startEdge(t testing.TB, o RoleOptions) *Edge {
	t.Helper()
	addr := freeAddr(t)
	r := startRole(t, "edge", "ICWS_EDGE_ID", o, map[string]string{"ICWS_LISTEN": addr})
	return &Edge{Role: r, WSURL: "ws://" + addr}
}

// startSubmitter runs `icws submitter` and waits for /readyz.
func startSubmitter(t testing.TB, o RoleOptions) *Role {
	t.Helper()
	r := startRole(t, "submitter", "ICWS_SUBMITTER_ID", o, nil)
	return &r
}

// startPoller runs `icws poller` and waits for /readyz.
func startPoller(t testing.TB, o RoleOptions) *Role {
	t.Helper()
	r := startRole(t, "poller", "ICWS_POLLER_ID", o, nil)
	return &r
}

// Dev is an `icws dev` process: replica, embedded NATS and every role in one.
type Dev struct {
	Replica
	GatewayURL string // ws://127.0.0.1:<port>
	AdminURL   string
	DemoURL    string // http://127.0.0.1:<port>/, the demo page (ICWS_DEMO_LISTEN)
}

// startDev runs `icws dev` with every address on a free loopback port and waits for /readyz.
func startDev(t testing.TB, o ReplicaOptions) *Dev {
	t.Helper()
	ws, rep, admin, page := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	env := o.env()
	maps.Copy(env, map[string]string{
		"ICWS_LISTEN":         ws,
		"ICWS_REPLICA_LISTEN": rep,
		"ICWS_ADMIN_LISTEN":   admin,
		"ICWS_DEMO_LISTEN":    page,
		"ICWS_DATA_DIR":       dir,
		"ICWS_IDENTITY_FILE":  filepath.Join(dir, "key_pair"),
		"ICWS_LOG_LEVEL":      "debug",
	})
	maps.Copy(env, o.Env)
	d := &Dev{Replica: newReplicaHandle("http://" + rep), GatewayURL: "ws://" + ws, AdminURL: "http://" + admin, DemoURL: "http://" + page + "/"}
	d.Proc = startProcess(t, "icws-dev", icwsBinary(t), []string{"dev"}, env)
	waitReady(t, d.AdminURL, d.Proc)
	waitHTTP200(t, d.URL+"/api/v2/status", 10*time.Second, d.Proc)
	return d
}

// Deployment is the roles as separate processes: replica, NATS, edges, submitters, pollers.
type Deployment struct {
	Replica      *Replica
	NATS         *NATSCluster
	IdentityFile string
	Gateway      string // gateway principal text, if `icws identity` printed it
	Edges        []*Edge
	Submitters   []*Role
	Pollers      []*Role
}

// DeploymentOptions size a Deployment.
type DeploymentOptions struct {
	NATSNodes                      int // 1 or 3
	Edges, Submitters, Pollers     int
	Replica                        ReplicaOptions
	EdgeEnv, SubmitterEnv, PollEnv map[string]string
}

// startDeployment starts NATS, the replica, then pollers, submitters and edges (each waited for).
func startDeployment(t testing.TB, o DeploymentOptions) *Deployment {
	t.Helper()
	if o.NATSNodes == 0 {
		o.NATSNodes = 1
	}
	d := &Deployment{}
	d.NATS = startNATSCluster(t, o.NATSNodes)
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
