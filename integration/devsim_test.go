//go:build icws_devsim

package integration

// TEMPORARY: an in-process stand-in for `icws dev`, only to exercise the JS test before the
// subcommand exists. Run: go test -tags icws_devsim -run TestDevSimJS ./integration/

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/broker"
	"github.com/icws/icws/edge"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/poller"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
	"github.com/icws/icws/submitter"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

func startDevSim(t *testing.T, o ReplicaOptions) *Dev {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	lf, _ := os.Create("/tmp/devsim-" + strings.ReplaceAll(t.Name(), "/", "_") + ".log")
	t.Logf("devsim log: %s", lf.Name())
	logger := slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelDebug}))

	rep, err := replica.New(replica.Config{Logger: logger, NoDelegation: os.Getenv("NODELEG") != "", UpdateLatency: o.UpdateLatency})
	if err != nil {
		t.Fatal(err)
	}
	cid, _ := principal.Decode(DemoCanisterID)
	wcfg := wscanister.DefaultConfig()
	if o.AckInterval > 0 {
		wcfg.AckInterval, wcfg.KeepAliveTimeout = o.AckInterval, o.KeepAliveTimeout
	}
	wcfg.Logger = logger
	if err := rep.Install(cid, func(h replica.Host) (replica.Canister, error) { return wscanister.New(wcfg, h) }); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go rep.Serve(ctx, ln)
	icURL := "http://" + ln.Addr().String()

	emb, err := broker.StartEmbedded(ctx, broker.ServerConfig{DataDir: t.TempDir(), ServerName: "devsim", MaxMemory: 64 << 20, MaxStore: 1 << 30, ReadyTimeout: 30 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Shutdown(context.Background()) })
	nc, err := emb.Connect(ctx, "devsim")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if err := broker.Ensure(ctx, js, broker.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	id, _ := identity.NewRandomEd25519Identity()
	ic, err := icclient.New(ctx, icclient.Config{URL: icURL, Identity: id, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	scfg := submitter.DefaultConfig()
	scfg.ID = "s1"
	sub, err := submitter.New(scfg, submitter.Deps{NC: nc, JS: js, IC: ic, Logger: logger, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	go sub.Run(ctx)
	pol, err := poller.New(poller.Config{ID: "p1"}, poller.Deps{NC: nc, JS: js, IC: ic, Logger: logger, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	go pol.Run(ctx)
	ecfg := edge.DefaultConfig()
	ecfg.ID = "e1"
	ecfg.Listen = freeAddr(t)
	ed, err := edge.New(ecfg, edge.Deps{NC: nc, JS: js, Gateway: id.Sender(), Logger: logger, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	go ed.Run(ctx)
	waitFor(t, 10*time.Second, 50*time.Millisecond, "edge listening", func() error {
		c, err := net.Dial("tcp", ecfg.Listen)
		if err == nil {
			c.Close()
		}
		return err
	})
	return &Dev{Replica: newReplicaHandle(icURL), GatewayURL: "ws://" + ecfg.Listen}
}

func TestDevSimAllInOne(t *testing.T) { allInOne(t, startDevSim(t, ReplicaOptions{})) }

func TestDevSimKeepAlive(t *testing.T) {
	keepAliveCycle(t, startDevSim(t, ReplicaOptions{AckInterval: 3 * time.Second, KeepAliveTimeout: 2 * time.Second}), 3*time.Second, 2*time.Second, 4)
}

func TestDevSimBurst(t *testing.T) {
	dev := startDevSim(t, ReplicaOptions{})
	burstOrdered(t, dev.GatewayURL, dev.URL, dev.CanisterID, dev.Control, 1, 500)
}

func TestDevSimBurstLatency(t *testing.T) {
	dev := startDevSim(t, ReplicaOptions{UpdateLatency: 200 * time.Millisecond})
	burstOrdered(t, dev.GatewayURL, dev.URL, dev.CanisterID, dev.Control, 4, 100)
}
