package testkit

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/icclient"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
)

// Canister is a canister for StartReplica to install.
type Canister struct {
	ID  principal.Principal
	New func(replica.Host) (replica.Canister, error)
}

// Replica is a replica simulator served by an httptest server.
type Replica struct {
	*replica.Replica
	Server *httptest.Server
	URL    string
}

// StartReplica runs a replica simulator made from cfg with canisters installed, its canisters'
// runners, and an httptest server for its HTTP interface; all stop at cleanup.
func StartReplica(t testing.TB, cfg replica.Config, canisters ...Canister) *Replica {
	t.Helper()
	r, err := replica.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range canisters {
		if err := r.Install(c.ID, c.New); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(r.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.RunCanisters(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return &Replica{Replica: r, Server: srv, URL: srv.URL}
}

// StartWSReplica is StartReplica with one ic-websocket demo canister id made from canCfg, which
// it returns too.
func StartWSReplica(t testing.TB, cfg replica.Config, id principal.Principal, canCfg wscanister.Config) (*Replica, *wscanister.Canister) {
	t.Helper()
	var can *wscanister.Canister
	r := StartReplica(t, cfg, Canister{ID: id, New: func(h replica.Host) (replica.Canister, error) {
		c, err := wscanister.New(canCfg, h)
		can = c
		return c, err
	}})
	return r, can
}

// GatewayClient makes an icclient for url with a fresh gateway identity, whose principal it
// returns too. A nil logger discards.
func GatewayClient(t testing.TB, url string, logger *slog.Logger) (*icclient.Client, principal.Principal) {
	t.Helper()
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ic, err := icclient.New(ctx, icclient.Config{URL: url, Identity: id, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return ic, id.Sender()
}
