package replica_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/replica"
	"github.com/kelseyhightower/envconfig"
)

// TestConfigFromEnv: the Config works when filled by envconfig, as cmd/icws does.
func TestConfigFromEnv(t *testing.T) {
	t.Setenv("ICWS_REPLICA_UPDATE_LATENCY", "5ms")
	var cfg replica.Config
	if err := envconfig.Process("ICWS", &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.UpdateLatency != 5*time.Millisecond || cfg.SyncCallTimeout != 10*time.Second || cfg.MaxRequestBytes != 5<<20 || cfg.TestHooks {
		t.Fatalf("config %+v", cfg)
	}
	e := start(t, cfg)
	var out string
	if err := e.agent(t, nil).Call(testCanisterID, "echo", []any{"env"}, []any{&out}); err != nil || out != "env" {
		t.Fatalf("%q, %v", out, err)
	}
	var usage bytes.Buffer
	if err := envconfig.Usagef("ICWS", &cfg, &usage, envconfig.DefaultListFormat); err != nil || !strings.Contains(usage.String(), "ICWS_REPLICA_SYNC_CALL_TIMEOUT") {
		t.Fatalf("usage %q, %v", usage.String(), err)
	}
}

// TestOutcomePruned: a call's outcome stays readable until its ingress_expiry plus
// ReplyRetention, then it is forgotten.
func TestOutcomePruned(t *testing.T) {
	e := start(t, replica.Config{ReplyRetention: time.Nanosecond})
	content := callContent(t, "call", principal.AnonymousID, "echo", testkit.CandidArgs(t, "short-lived"))
	content["ingress_expiry"] = uint64(time.Now().Add(300 * time.Millisecond).UnixNano())
	body, reqID := envelope(t, content, nil, nil, nil)
	if code, resp := post(t, e.endpoint("v3", testCanisterID.String(), "call"), body); code != 200 {
		t.Fatalf("HTTP %d %s", code, resp)
	}
	statusOf := func() error {
		code, resp := post(t, e.endpoint("v2", testCanisterID.String(), "read_state"),
			readStateBody(t, nil, labels("request_status", reqID[:], "status")))
		if code != 200 {
			t.Fatalf("read_state HTTP %d %s", code, resp)
		}
		var m map[string][]byte
		var cert certification.Certificate
		if err := cbor.Unmarshal(resp, &m); err != nil {
			t.Fatal(err)
		}
		if err := cbor.Unmarshal(m["certificate"], &cert); err != nil {
			t.Fatal(err)
		}
		_, err := cert.Tree.Lookup(hashtree.Label("request_status"), reqID[:], hashtree.Label("status"))
		return err
	}
	if err := statusOf(); err != nil {
		t.Fatalf("fresh outcome not readable: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for statusOf() == nil {
		if time.Now().After(deadline) {
			t.Fatal("outcome never pruned")
		}
		// Pruning happens when new calls arrive.
		b, _ := envelope(t, callContent(t, "call", principal.AnonymousID, "echo", testkit.CandidArgs(t, "tick")), nil, nil, nil)
		post(t, e.endpoint("v2", testCanisterID.String(), "call"), b)
		time.Sleep(100 * time.Millisecond) // pacing of the poll loop, not synchronisation
	}
}

// TestSubnetReadState: /api/v2/subnet/<sid>/read_state as agent-go's subnet calls use it.
func TestSubnetReadState(t *testing.T) {
	e := start(t, replica.Config{})
	sid := e.r.SubnetID()
	code, resp := post(t, e.url+"/api/v2/subnet/"+sid.String()+"/read_state", readStateBody(t, nil, labels("subnet", sid.Raw, "public_key")))
	if code != 200 {
		t.Fatalf("HTTP %d %s", code, resp)
	}
	var m map[string][]byte
	var cert certification.Certificate
	if err := cbor.Unmarshal(resp, &m); err != nil {
		t.Fatal(err)
	}
	if err := cbor.Unmarshal(m["certificate"], &cert); err != nil {
		t.Fatal(err)
	}
	if err := certification.VerifySubnetCertificate(cert, sid, e.r.RootKey()); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if code, _ := post(t, e.url+"/api/v2/subnet/"+sid.String()+"/read_state", readStateBody(t, nil, labels("canister", testCanisterID.Raw, "controllers"))); code != 404 {
		t.Fatalf("canister path on subnet read_state: HTTP %d", code)
	}
	if code, _ := post(t, e.url+"/api/v2/subnet/"+testCanisterID.String()+"/read_state", readStateBody(t, nil, labels("time"))); code != 404 {
		t.Fatalf("unknown subnet: HTTP %d", code)
	}
}
