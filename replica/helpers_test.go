package replica_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"

	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
)

type env struct {
	r   *replica.Replica
	url string
	can *testCanister
}

// start runs a replica with the test canister behind an httptest server.
func start(t *testing.T, cfg replica.Config) *env {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testkit.Logger(t, slog.LevelWarn)
	}
	e := &env{}
	r := testkit.StartReplica(t, cfg, testkit.Canister{ID: testCanisterID, New: func(h replica.Host) (replica.Canister, error) {
		c, err := newTestCanister(h)
		e.can, _ = c.(*testCanister)
		return c, err
	}})
	e.r, e.url = r.Replica, r.URL
	return e
}

func (e *env) agent(t *testing.T, id identity.Identity, mod ...func(*agent.Config)) *agent.Agent {
	t.Helper()
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{Identity: id, FetchRootKey: true, ClientConfig: []agent.ClientOption{agent.WithHostURL(u)}}
	for _, m := range mod {
		m(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func identities(t testing.TB) map[string]identity.Identity {
	t.Helper()
	ed := testkit.NewIdentity(t)
	k1, err := identity.NewRandomSecp256k1Identity()
	if err != nil {
		t.Fatal(err)
	}
	p256, err := identity.NewRandomPrime256v1Identity()
	if err != nil {
		t.Fatal(err)
	}
	return map[string]identity.Identity{
		"anonymous": new(identity.AnonymousIdentity),
		"ed25519":   ed,
		"secp256k1": k1,
		"p256":      p256,
	}
}

func nonce(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// callContent is the content map of a call (or query) to the test canister.
func callContent(t testing.TB, typ string, sender principal.Principal, method string, arg []byte) map[string]any {
	return map[string]any{
		"request_type":   typ,
		"sender":         sender.Raw,
		"ingress_expiry": uint64(time.Now().Add(3 * time.Minute).UnixNano()),
		"nonce":          nonce(t, 16),
		"canister_id":    testCanisterID.Raw,
		"method_name":    method,
		"arg":            arg,
	}
}

type signedDelegation struct {
	Delegation map[string]any `cbor:"delegation"`
	Signature  []byte         `cbor:"signature"`
}

// envelope signs content as id would; dels (if any) delegate from id to signer.
func envelope(t testing.TB, content map[string]any, id identity.Identity, dels []signedDelegation, signer identity.Identity) ([]byte, protocol.RequestID) {
	t.Helper()
	raw, err := cbor.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	reqID, err := protocol.RequestIDOfContent(raw)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{"content": cbor.RawMessage(raw)}
	if id != nil && id.PublicKey() != nil {
		if signer == nil {
			signer = id
		}
		m["sender_pubkey"] = id.PublicKey()
		m["sender_sig"] = signer.Sign(append([]byte("\x0Aic-request"), reqID[:]...))
		if dels != nil {
			m["sender_delegation"] = dels
		}
	}
	body, err := cbor.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return body, reqID
}

// delegate makes from delegate to "to" until exp, optionally restricted to targets.
func delegate(t testing.TB, from, to identity.Identity, exp time.Time, targets [][]byte) signedDelegation {
	t.Helper()
	d := map[string]any{"pubkey": to.PublicKey(), "expiration": uint64(exp.UnixNano())}
	if targets != nil {
		ts := make([]any, len(targets))
		for i, tg := range targets {
			ts[i] = tg
		}
		d["targets"] = ts
	}
	h, err := protocol.HashOfMap(d)
	if err != nil {
		t.Fatal(err)
	}
	return signedDelegation{Delegation: d, Signature: from.Sign(append([]byte("\x1Aic-request-auth-delegation"), h[:]...))}
}

func post(t *testing.T, u string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(u, "application/cbor", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func (e *env) endpoint(version, ecid, op string) string {
	return e.url + "/api/" + version + "/canister/" + ecid + "/" + op
}

// certifiedReply verifies a v3 answer's certificate and returns request_status/<id>/reply.
func certifiedReply(t *testing.T, e *env, resp []byte, reqID []byte) []byte {
	t.Helper()
	var ans struct {
		Status      string `cbor:"status"`
		Certificate []byte `cbor:"certificate"`
	}
	if err := cbor.Unmarshal(resp, &ans); err != nil || ans.Status != "replied" {
		t.Fatalf("answer %x: %v", resp, err)
	}
	var cert certification.Certificate
	if err := cbor.Unmarshal(ans.Certificate, &cert); err != nil {
		t.Fatal(err)
	}
	if err := certification.VerifyCertificate(cert, testCanisterID, e.r.RootKey()); err != nil {
		t.Fatalf("verify: %v", err)
	}
	reply, err := cert.Tree.Lookup(hashtree.Label("request_status"), reqID, hashtree.Label("reply"))
	if err != nil {
		t.Fatalf("lookup reply: %v", err)
	}
	return reply
}
