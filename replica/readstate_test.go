package replica_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/replica"
)

func readStateBody(t testing.TB, id identity.Identity, paths ...[][]byte) []byte {
	t.Helper()
	ps := make([]any, len(paths))
	for i, p := range paths {
		labels := make([]any, len(p))
		for j, l := range p {
			labels[j] = l
		}
		ps[i] = labels
	}
	sender := principal.AnonymousID
	if id != nil {
		sender = id.Sender()
	}
	b, _ := envelope(t, map[string]any{
		"request_type":   "read_state",
		"sender":         sender.Raw,
		"ingress_expiry": uint64(time.Now().Add(2 * time.Minute).UnixNano()),
		"paths":          ps,
	}, id, nil, nil)
	return b
}

func labels(parts ...any) [][]byte {
	out := make([][]byte, len(parts))
	for i, p := range parts {
		switch p := p.(type) {
		case string:
			out[i] = []byte(p)
		case []byte:
			out[i] = p
		}
	}
	return out
}

// TestReadStateAuthorization follows dfinity/ic read_state/canister.rs verify_paths.
func TestReadStateAuthorization(t *testing.T) {
	e := start(t, replica.Config{})
	ids := identities(t)
	owner, stranger := ids["ed25519"], ids["secp256k1"]
	arg := testkit.CandidArgs(t, "rs")
	callBody, reqID := envelope(t, callContent(t, "call", owner.Sender(), "echo", arg), owner, nil, nil)
	if code, body := post(t, e.endpoint("v3", testCanisterID.String(), "call"), callBody); code != 200 {
		t.Fatalf("call: %d %s", code, body)
	}
	other := principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai")
	unknownID := bytes.Repeat([]byte{7}, 32)
	cid := testCanisterID.Raw
	rsURL := e.endpoint("v2", testCanisterID.String(), "read_state")
	for _, c := range []struct {
		name   string
		id     identity.Identity
		paths  [][][]byte
		url    string
		status int
		check  func(t *testing.T, cert certification.Certificate)
	}{
		{name: "time", paths: [][][]byte{labels("time")}, status: 200},
		{name: "no paths", status: 200},
		{name: "request status of own request", id: owner, paths: [][][]byte{labels("request_status", reqID[:])}, status: 200,
			check: func(t *testing.T, cert certification.Certificate) {
				reply, err := cert.Tree.Lookup(hashtree.Label("request_status"), reqID[:], hashtree.Label("reply"))
				if err != nil || !bytes.Equal(reply, arg) {
					t.Fatalf("reply %x, %v", reply, err)
				}
			}},
		{name: "request status field", id: owner, paths: [][][]byte{labels("request_status", reqID[:], "status")}, status: 200},
		{name: "request status of someone else", id: stranger, paths: [][][]byte{labels("request_status", reqID[:])}, status: 403},
		{name: "anonymous reading a signed request", paths: [][][]byte{labels("request_status", reqID[:])}, status: 403},
		{name: "unknown request id is absent", paths: [][][]byte{labels("request_status", unknownID)}, status: 200,
			check: func(t *testing.T, cert certification.Certificate) {
				_, err := cert.Tree.Lookup(hashtree.Label("request_status"), unknownID, hashtree.Label("status"))
				var le hashtree.LookupError
				if !asLookup(err, &le) || le.Type != hashtree.LookupResultAbsent {
					t.Fatalf("lookup: %v, want absent", err)
				}
			}},
		{name: "two request ids", id: owner, paths: [][][]byte{labels("request_status", reqID[:]), labels("request_status", unknownID)}, status: 400},
		{name: "short request id", paths: [][][]byte{labels("request_status", []byte{1, 2})}, status: 400},
		{name: "bad request status field", paths: [][][]byte{labels("request_status", unknownID, "nope")}, status: 404},
		{name: "subnet", paths: [][][]byte{labels("subnet")}, status: 200,
			check: func(t *testing.T, cert certification.Certificate) {
				sid := cert.Delegation.SubnetId
				pk, err := cert.Tree.Lookup(hashtree.Label("subnet"), sid.Raw, hashtree.Label("node"), e.r.NodeID().Raw, hashtree.Label("public_key"))
				if err != nil || len(pk) != 44 {
					t.Fatalf("node key %x, %v", pk, err)
				}
			}},
		{name: "controllers", paths: [][][]byte{labels("canister", cid, "controllers")}, status: 200},
		{name: "module hash", paths: [][][]byte{labels("canister", cid, "module_hash")}, status: 200},
		{name: "metadata", paths: [][][]byte{labels("canister", cid, "metadata", "candid:service")}, status: 200,
			check: func(t *testing.T, cert certification.Certificate) {
				md, err := cert.Tree.Lookup(hashtree.Label("canister"), cid, hashtree.Label("metadata"), hashtree.Label("candid:service"))
				if err != nil || string(md) != testCandid {
					t.Fatalf("metadata %q, %v", md, err)
				}
			}},
		{name: "certified_data not readable by users", paths: [][][]byte{labels("canister", cid, "certified_data")}, status: 404},
		{name: "other canister's info", paths: [][][]byte{labels("canister", other.Raw, "controllers")}, status: 400},
		{name: "unknown top-level path", paths: [][][]byte{labels("secrets")}, status: 404},
		{name: "empty path", paths: [][][]byte{{}}, status: 404},
		{name: "time with suffix", paths: [][][]byte{labels("time", "x")}, status: 404},
		{name: "syncTime-style read of an unknown canister", url: e.endpoint("v2", other.String(), "read_state"),
			paths: [][][]byte{labels("time")}, status: 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			u := c.url
			if u == "" {
				u = rsURL
			}
			code, body := post(t, u, readStateBody(t, c.id, c.paths...))
			if code != c.status {
				t.Fatalf("HTTP %d, want %d: %s", code, c.status, body)
			}
			if code != 200 {
				return
			}
			var m map[string][]byte // what agent-go decodes into
			if err := cbor.Unmarshal(body, &m); err != nil || len(m) != 1 {
				t.Fatalf("answer %x: %v", body, err)
			}
			var cert certification.Certificate
			if err := cbor.Unmarshal(m["certificate"], &cert); err != nil {
				t.Fatal(err)
			}
			ecid := testCanisterID
			if c.url != "" {
				ecid = other
			}
			if err := certification.VerifyCertificate(cert, ecid, e.r.RootKey()); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if err := cert.VerifyTime(time.Minute); err != nil {
				t.Fatal(err)
			}
			if c.check != nil {
				c.check(t, cert)
			}
		})
	}
}

// TestCorruptionHooks: the TEST-ONLY switches make agents refuse certificates and signatures.
func TestCorruptionHooks(t *testing.T) {
	e := start(t, replica.Config{TestHooks: true})
	a := e.agent(t, nil)
	setCorrupt := func(q string) {
		t.Helper()
		resp, err := http.Post(e.url+"/_/control/replica/corrupt?"+q, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("control: %d", resp.StatusCode)
		}
	}
	setCorrupt("certificates=true")
	if _, err := a.GetTime(testCanisterID); err == nil || !strings.Contains(err.Error(), "signature verification failed") {
		t.Fatalf("corrupted read_state certificate accepted: %v", err)
	}
	setCorrupt("certificates=false&query_signatures=true")
	if err := a.Query(testCanisterID, "greet", []any{"x"}, []any{new(string)}); err == nil || !strings.Contains(err.Error(), "invalid replied signature") {
		t.Fatalf("corrupted query signature accepted: %v", err)
	}
	setCorrupt("query_signatures=false")
	if err := a.Query(testCanisterID, "greet", []any{"x"}, []any{new(string)}); err != nil {
		t.Fatal(err)
	}
	// Disabled hooks are not reachable.
	e2 := start(t, replica.Config{})
	resp, err := http.Post(e2.url+"/_/control/replica/corrupt?certificates=true", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("hooks reachable without TestHooks: %d", resp.StatusCode)
	}
}

func TestStatusAndCORS(t *testing.T) {
	e := start(t, replica.Config{})
	resp, err := http.Get(e.url + "/api/v2/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.HasPrefix(body, []byte{0xd9, 0xd9, 0xf7}) {
		t.Fatalf("status without self-describe tag: %x", body)
	}
	var st struct {
		RootKey []byte `cbor:"root_key"`
		Impl    string `cbor:"impl_version"`
		Health  string `cbor:"replica_health_status"`
		Height  uint64 `cbor:"certified_height"`
	}
	if err := cbor.Unmarshal(body, &st); err != nil || !bytes.Equal(st.RootKey, e.r.RootKey()) || st.Health != "healthy" || st.Impl == "" {
		t.Fatalf("status %+v: %v", st, err)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("no CORS header")
	}
	req, _ := http.NewRequest(http.MethodOptions, e.endpoint("v3", testCanisterID.String(), "call"), nil)
	req.Header.Set("Origin", "http://example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("preflight %d %v", resp.StatusCode, resp.Header)
	}
}

// TestServe runs the replica on a real listener: canisters' Run starts, agents work, and
// cancelling the context shuts everything down promptly.
func TestServe(t *testing.T) {
	r, err := replica.New(replica.Config{Logger: testkit.Logger(t, slog.LevelWarn)})
	if err != nil {
		t.Fatal(err)
	}
	var can *testCanister
	if err := r.Install(testCanisterID, func(h replica.Host) (replica.Canister, error) {
		c, err := newTestCanister(h)
		can = c.(*testCanister)
		return c, err
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.Install(testCanisterID, newTestCanister); err == nil {
		t.Fatal("installed the same canister twice")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, ln) }()
	select {
	case <-can.ran:
	case <-time.After(10 * time.Second):
		t.Fatal("canister Run not started")
	}
	// A canister installed while serving runs too.
	second := principal.MustDecode("r7inp-6aaaa-aaaaa-aaabq-cai")
	var can2 *testCanister
	if err := r.Install(second, func(h replica.Host) (replica.Canister, error) {
		c, err := newTestCanister(h)
		can2 = c.(*testCanister)
		return c, err
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-can2.ran:
	case <-time.After(10 * time.Second):
		t.Fatal("late canister Run not started")
	}
	e := &env{r: r, url: "http://" + ln.Addr().String(), can: can}
	var out string
	if err := e.agent(t, nil).Call(second, "echo", []any{"served"}, []any{&out}); err != nil || out != "served" {
		t.Fatalf("call over real listener: %q, %v", out, err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestConcurrentUpdatesSerialised: parallel callers, updates never overlap, each runs once.
func TestConcurrentUpdatesSerialised(t *testing.T) {
	e := start(t, replica.Config{})
	var wg sync.WaitGroup
	ids := identities(t)
	for i := range 24 {
		id := ids[[]string{"anonymous", "ed25519", "secp256k1", "p256"}[i%4]]
		wg.Go(func() {
			a := e.agent(t, id)
			var out string
			msg := fmt.Sprintf("parallel %d", i)
			if err := a.Call(testCanisterID, "echo", []any{msg}, []any{&out}); err != nil || out != msg {
				t.Errorf("call %d: %q, %v", i, out, err)
			}
			if err := a.Query(testCanisterID, "greet", []any{msg}, []any{&out}); err != nil {
				t.Errorf("query %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if e.can.overlap.Load() {
		t.Fatal("updates overlapped")
	}
	for i := range 24 {
		if n := e.can.count(testkit.CandidArgs(t, fmt.Sprintf("parallel %d", i))); n != 1 {
			t.Fatalf("call %d executed %d times", i, n)
		}
	}
}

// TestGarbage posts malformed and mutated bodies everywhere: never a 5xx, never a crash.
func TestGarbage(t *testing.T) {
	e := start(t, replica.Config{})
	id := identities(t)["ed25519"]
	valid, _ := envelope(t, callContent(t, "call", id.Sender(), "echo", testkit.CandidArgs(t, "g")), id, nil, nil)
	validRS := readStateBody(t, id, labels("time"))
	rng := rand.New(rand.NewPCG(1, 2))
	seeds := [][]byte{valid, validRS, {}, {0xff}, {0xa0}, {0xd9, 0xd9, 0xf7}, {0xbf}, {0x9f, 0x9f, 0x9f}, {0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	for i := 0; i < 300; i++ {
		b := append([]byte{}, seeds[rng.IntN(len(seeds))]...)
		for j := 0; j < 1+rng.IntN(4) && len(b) > 0; j++ {
			switch rng.IntN(3) {
			case 0:
				b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			case 1:
				b = b[:rng.IntN(len(b))]
			case 2:
				p := rng.IntN(len(b))
				b = append(b[:p], append([]byte{byte(rng.IntN(256))}, b[p:]...)...)
			}
		}
		for _, op := range []string{"v3/call", "v2/call", "v2/query", "v2/read_state"} {
			v, o, _ := strings.Cut(op, "/")
			code, body := post(t, e.endpoint(v, testCanisterID.String(), o), b)
			if code >= 500 {
				t.Fatalf("%s with %x: HTTP %d %s", op, b, code, body)
			}
		}
	}
}

func asLookup(err error, le *hashtree.LookupError) bool {
	if err == nil {
		return false
	}
	l, ok := err.(hashtree.LookupError)
	if ok {
		*le = l
	}
	return ok
}

// TestReadStateDelegationTargets: a read_state whose delegation does not allow the request's
// canister may not read its status (403), one that does may.
func TestReadStateDelegationTargets(t *testing.T) {
	e := start(t, replica.Config{})
	root := testkit.NewIdentity(t)
	session := testkit.NewIdentity(t)
	exp := time.Now().Add(time.Hour)
	toCanister := []signedDelegation{delegate(t, root, session, exp, [][]byte{testCanisterID.Raw})}
	elsewhere := []signedDelegation{delegate(t, root, session, exp, [][]byte{principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai").Raw})}
	call, reqID := envelope(t, callContent(t, "call", root.Sender(), "echo", testkit.CandidArgs(t, "dt")), root, toCanister, session)
	if code, body := post(t, e.endpoint("v3", testCanisterID.String(), "call"), call); code != 200 {
		t.Fatalf("call: %d %s", code, body)
	}
	for _, c := range []struct {
		dels   []signedDelegation
		status int
	}{{toCanister, 200}, {elsewhere, 403}} {
		rs, _ := envelope(t, map[string]any{
			"request_type":   "read_state",
			"sender":         root.Sender().Raw,
			"ingress_expiry": uint64(time.Now().Add(time.Minute).UnixNano()),
			"paths":          []any{[]any{[]byte("request_status"), reqID[:]}},
		}, root, c.dels, session)
		if code, body := post(t, e.endpoint("v2", testCanisterID.String(), "read_state"), rs); code != c.status {
			t.Fatalf("HTTP %d, want %d: %s", code, c.status, body)
		}
	}
}
