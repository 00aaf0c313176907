package icclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/replica"
)

var testCanisterID = principal.MustDecode("rrkah-fqaaa-aaaaa-aaaaq-cai")

// echoCanister: update "echo" and query "get" return their argument; "reject"/"qreject" reject;
// "whoami" returns the caller; query "fill" returns as many bytes as its argument says.
type echoCanister struct {
	mu    sync.Mutex
	calls int
}

func (c *echoCanister) Update(_ context.Context, call replica.Call) ([]byte, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	switch call.Method {
	case "echo":
		return call.Arg, nil
	case "whoami":
		return call.Caller.Raw, nil
	case "reject":
		return nil, replica.CanisterRejected("no: " + string(call.Arg))
	}
	return nil, replica.MethodNotFound(testCanisterID, call.Method, false)
}

func (c *echoCanister) Query(_ context.Context, call replica.Call) ([]byte, error) {
	switch call.Method {
	case "get":
		return call.Arg, nil
	case "qreject":
		return nil, replica.CanisterRejected("query no")
	case "fill":
		// A reply of as many bytes as the 4-byte big-endian argument asks for.
		if len(call.Arg) != 4 {
			return nil, replica.CanisterRejected("fill wants 4 bytes")
		}
		return bytes.Repeat([]byte{0xa5}, int(binary.BigEndian.Uint32(call.Arg))), nil
	}
	return nil, replica.MethodNotFound(testCanisterID, call.Method, true)
}

type icEnv struct {
	r      *replica.Replica
	url    string
	can    *echoCanister
	counts sync.Map     // path suffix → *atomic.Int64
	conns  atomic.Int64 // TCP connections accepted
}

func (e *icEnv) count(kind string) int64 {
	v, ok := e.counts.Load(kind)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

func startReplica(t testing.TB, cfg replica.Config) *icEnv {
	t.Helper()
	cfg.TestHooks = true
	r, err := replica.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &icEnv{r: r, can: &echoCanister{}}
	if err := r.Install(testCanisterID, func(replica.Host) (replica.Canister, error) { return e.can, nil }); err != nil {
		t.Fatal(err)
	}
	inner := r.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		kind := req.URL.Path[strings.LastIndexByte(req.URL.Path, '/')+1:]
		v, _ := e.counts.LoadOrStore(kind, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		inner.ServeHTTP(w, req)
	}))
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			e.conns.Add(1)
		}
	}
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.RunCanisters(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	e.url = srv.URL
	return e
}

func newTestClient(t testing.TB, e *icEnv, mod ...func(*Config)) *Client {
	t.Helper()
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{URL: e.url, Identity: id}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func layouts(t *testing.T, f func(t *testing.T, cfg replica.Config)) {
	t.Run("delegation", func(t *testing.T) { f(t, replica.Config{}) })
	t.Run("no-delegation", func(t *testing.T) { f(t, replica.Config{NoDelegation: true}) })
}

func TestRootKeyFetchedFromStatus(t *testing.T) {
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	if string(c.RootKey()) != string(e.r.RootKey()) {
		t.Fatal("root key differs from the replica's")
	}
	if e.count("status") != 1 {
		t.Fatalf("status fetched %d times", e.count("status"))
	}
	// An empty (non-nil) key, as hex.DecodeString("") gives, also means "fetch".
	c = newTestClient(t, e, func(cfg *Config) { cfg.RootKey = []byte{} })
	if string(c.RootKey()) != string(e.r.RootKey()) || e.count("status") != 2 {
		t.Fatal("empty root key not treated as unset")
	}
}

func TestMainnetRootKeyNeverFetched(t *testing.T) {
	id, _ := identity.NewRandomEd25519Identity()
	rt := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("no network in tests")
	})
	c, err := New(context.Background(), Config{URL: "https://icp-api.io", Identity: id, HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RootKey()) != 133 {
		t.Fatalf("root key of %d bytes", len(c.RootKey()))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestCallAndQuery(t *testing.T) {
	layouts(t, func(t *testing.T, cfg replica.Config) {
		e := startReplica(t, cfg)
		c := newTestClient(t, e)
		got, err := c.Call(ctx(t), testCanisterID, "echo", []byte("hello"))
		if err != nil || string(got) != "hello" {
			t.Fatalf("Call: %q, %v", got, err)
		}
		who, err := c.Call(ctx(t), testCanisterID, "whoami", nil)
		if err != nil || !principal.Principal(principal.Principal{Raw: who}).Equal(c.Principal()) {
			t.Fatalf("whoami: %x, %v", who, err)
		}
		for i := 0; i < 20; i++ {
			got, err := c.Query(ctx(t), testCanisterID, "get", []byte{byte(i)})
			if err != nil || len(got) != 1 || got[0] != byte(i) {
				t.Fatalf("Query %d: %x, %v", i, got, err)
			}
		}
		if n := e.count("read_state"); n > 1 {
			t.Fatalf("%d read_state requests for 20 queries; node keys must be cached", n)
		}
		_, err = c.Query(ctx(t), testCanisterID, "qreject", nil)
		var re *RejectError
		if !errors.As(err, &re) || re.Code != RejectCanisterReject || re.ErrorCode != "IC0406" {
			t.Fatalf("query reject: %v", err)
		}
		_, err = c.Call(ctx(t), testCanisterID, "reject", []byte("x"))
		if !errors.As(err, &re) || re.Code != RejectCanisterReject || re.Message != "no: x" {
			t.Fatalf("call reject: %v", err)
		}
	})
}

// queryConcurrently makes n queries at once and fails the test if one fails.
func queryConcurrently(t *testing.T, c *Client, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if _, err := c.Query(ctx(t), testCanisterID, "get", []byte("x")); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestConcurrentQueriesShareOneKeyFetch(t *testing.T) {
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	queryConcurrently(t, c, 20)
	if n := e.count("read_state"); n != 1 {
		t.Fatalf("%d read_state requests, want 1", n)
	}
}

// The gateway has more requests to the IC in flight than Go's default transport keeps idle
// connections for (two); each request beyond that must not cost a new connection.
func TestConcurrentRequestsReuseConnections(t *testing.T) {
	const concurrent, rounds = 16, 10
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	for range rounds {
		queryConcurrently(t, c, concurrent)
	}
	// One round's worth of connections, with room for a connection that was not back in the
	// pool yet when the next round began; without reuse it would be about concurrent × rounds.
	if n := e.conns.Load(); n > 2*concurrent {
		t.Fatalf("%d rounds of %d concurrent queries opened %d connections", rounds, concurrent, n)
	}
}

func TestSubmitCallWithClientEnvelope(t *testing.T) {
	layouts(t, func(t *testing.T, cfg replica.Config) {
		e := startReplica(t, cfg)
		c := newTestClient(t, e)
		client, _ := identity.NewRandomEd25519Identity()
		env, rid, err := SignEnvelope(client, Request{Type: RequestCall, Canister: testCanisterID, Method: "whoami",
			Arg: []byte{}, Nonce: []byte("n1"), IngressExpiry: time.Now().Add(3 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.SubmitCall(ctx(t), testCanisterID, env)
		if err != nil {
			t.Fatal(err)
		}
		if out.Status != CallReplied || out.RequestID != rid || !client.Sender().Equal(principal.Principal{Raw: out.Reply}) {
			t.Fatalf("outcome %+v", out)
		}
		// Re-sending the same envelope does not execute it again.
		calls := e.can.calls
		out2, err := c.SubmitCall(ctx(t), testCanisterID, env)
		if err != nil || out2.Status != CallReplied {
			t.Fatalf("resubmit: %+v, %v", out2, err)
		}
		e.can.mu.Lock()
		defer e.can.mu.Unlock()
		if e.can.calls != calls {
			t.Fatalf("resubmitted envelope executed again")
		}
	})
}

func TestSubmitCallErrors(t *testing.T) {
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	client, _ := identity.NewRandomEd25519Identity()
	other, _ := identity.NewRandomEd25519Identity()
	env, _, err := SignEnvelope(client, Request{Type: RequestCall, Canister: testCanisterID, Method: "echo", Arg: []byte("a"),
		IngressExpiry: time.Now().Add(3 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	// A signature by the wrong key: 4xx, not retryable.
	forged := []byte(strings.Replace(string(env), string(client.PublicKey()), string(other.PublicKey()), 1))
	_, err = c.SubmitCall(ctx(t), testCanisterID, forged)
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode/100 != 4 || IsRetryable(err) {
		t.Fatalf("forged envelope: %v", err)
	}
	// Expired.
	env, _, _ = SignEnvelope(client, Request{Type: RequestCall, Canister: testCanisterID, Method: "echo", Arg: []byte("a"),
		IngressExpiry: time.Now().Add(-time.Minute)})
	if _, err = c.SubmitCall(ctx(t), testCanisterID, env); !errors.As(err, &he) || IsRetryable(err) {
		t.Fatalf("expired envelope: %v", err)
	}
	// Rejected call: certified reject outcome, no error.
	env, _, _ = SignEnvelope(client, Request{Type: RequestCall, Canister: testCanisterID, Method: "reject", Arg: []byte("b"),
		IngressExpiry: time.Now().Add(3 * time.Minute)})
	out, err := c.SubmitCall(ctx(t), testCanisterID, env)
	if err != nil || out.Status != CallRejected || out.RejectCode != RejectCanisterReject || out.ErrorCode == "" {
		t.Fatalf("rejected: %+v, %v", out, err)
	}
	// Unreachable IC: retryable.
	dead := newTestClient(t, e, func(cfg *Config) { cfg.RootKey = e.r.RootKey() })
	dead.base = "http://127.0.0.1:1"
	if _, err := dead.SubmitCall(ctx(t), testCanisterID, env); !IsRetryable(err) {
		t.Fatalf("unreachable: %v (retryable %v)", err, IsRetryable(err))
	}
}

func TestAcceptedThenPolled(t *testing.T) {
	for _, v := range []int{2, 3} {
		e := startReplica(t, replica.Config{UpdateLatency: 300 * time.Millisecond, SyncCallTimeout: 50 * time.Millisecond})
		c := newTestClient(t, e, func(cfg *Config) { cfg.CallAPIVersion = v })
		client, _ := identity.NewRandomEd25519Identity()
		env, rid, _ := SignEnvelope(client, Request{Type: RequestCall, Canister: testCanisterID, Method: "echo", Arg: []byte("slow"),
			IngressExpiry: time.Now().Add(3 * time.Minute)})
		out, err := c.SubmitCall(ctx(t), testCanisterID, env)
		if err != nil || out.Status != CallAccepted || out.RequestID != rid {
			t.Fatalf("v%d: want accepted: %+v, %v", v, out, err)
		}
		got, err := c.Call(ctx(t), testCanisterID, "echo", []byte("slow too"))
		if err != nil || string(got) != "slow too" {
			t.Fatalf("v%d: Call after 202: %q, %v", v, got, err)
		}
		if e.count("read_state") == 0 {
			t.Fatalf("v%d: no read_state polling", v)
		}
	}
}

func TestCorruptedAnswersAreRefused(t *testing.T) {
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	if _, err := c.Query(ctx(t), testCanisterID, "get", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	e.r.SetCorruption(false, true)
	before := e.count("read_state")
	var ve *VerificationError
	for i := 0; i < 10; i++ {
		_, err := c.Query(ctx(t), testCanisterID, "get", []byte("x"))
		if !errors.As(err, &ve) {
			t.Fatalf("corrupted query signature accepted: %v", err)
		}
	}
	if n := e.count("read_state") - before; n > 1 {
		t.Fatalf("%d node key refreshes for 10 bad answers; want at most 1", n)
	}
	e.r.SetCorruption(true, false)
	client, _ := identity.NewRandomEd25519Identity()
	env, _, _ := SignEnvelope(client, Request{Type: RequestCall, Canister: testCanisterID, Method: "echo", Arg: []byte("c"),
		IngressExpiry: time.Now().Add(3 * time.Minute)})
	if _, err := c.SubmitCall(ctx(t), testCanisterID, env); !errors.As(err, &ve) {
		t.Fatalf("corrupted call certificate accepted: %v", err)
	}
	// A fresh client cannot even fetch node keys from corrupted certificates.
	c2 := newTestClient(t, e)
	if _, err := c2.Query(ctx(t), testCanisterID, "get", nil); !errors.As(err, &ve) {
		t.Fatalf("node keys from corrupted certificate accepted: %v", err)
	}
	e.r.SetCorruption(false, false)
	// The failed key fetch is held off for a moment, then retried.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c2.Query(ctx(t), testCanisterID, "get", nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after corruption off: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWrongRootKeyIsRefused(t *testing.T) {
	e := startReplica(t, replica.Config{})
	other := startReplica(t, replica.Config{})
	c := newTestClient(t, e, func(cfg *Config) { cfg.RootKey = other.r.RootKey() })
	var ve *VerificationError
	for i := 0; i < 5; i++ {
		if _, err := c.Query(ctx(t), testCanisterID, "get", nil); !errors.As(err, &ve) {
			t.Fatalf("query verified against the wrong root key: %v", err)
		}
	}
	if n := e.count("read_state"); n != 1 {
		t.Fatalf("%d read_state requests for 5 queries with failing key fetches; want 1 (hold-off)", n)
	}
	start := time.Now()
	if _, err := c.Call(ctx(t), testCanisterID, "echo", nil); !errors.As(err, &ve) {
		t.Fatalf("call verified against the wrong root key: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Call kept retrying a verification failure for %s", d)
	}
}

// The answered hint comes with every certified answer, before the verdict on its certificate: a
// forged certificate is still refused, after the hint.
func TestSubmitCallHintsAnswerBeforeVerifying(t *testing.T) {
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	client, _ := identity.NewRandomEd25519Identity()
	submit := func(nonce string) (int, CallOutcome, error) {
		env, _, err := SignEnvelope(client, Request{Type: RequestCall, Canister: testCanisterID, Method: "whoami",
			Arg: []byte{}, Nonce: []byte(nonce), IngressExpiry: time.Now().Add(3 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		hints := 0
		out, err := c.SubmitCallHinted(ctx(t), testCanisterID, env, func() { hints++ })
		return hints, out, err
	}
	hints, out, err := submit("h1")
	if err != nil || out.Status != CallReplied || hints != 1 {
		t.Fatalf("certified call: %d hints, outcome %+v, err %v; want 1 hint and a reply", hints, out, err)
	}
	e.r.SetCorruption(true, false)
	t.Cleanup(func() { e.r.SetCorruption(false, false) })
	hints, _, err = submit("h2")
	var ve *VerificationError
	if !errors.As(err, &ve) || hints != 1 {
		t.Fatalf("forged certificate: %d hints, err %v; want 1 hint and a verification error", hints, err)
	}
}

// Status only says whether the IC answers: an answer with an error status is an answer, a
// closed endpoint is a transport error.
func TestStatusProbesReachability(t *testing.T) {
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	if err := c.Status(ctx(t)); err != nil {
		t.Fatalf("status of a running replica: %v", err)
	}
	if n := e.count("status"); n < 2 {
		t.Fatalf("status requests seen = %d, want the root key fetch and the probe", n)
	}
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	c.base = refusing.URL
	var he *HTTPError
	if err := c.Status(ctx(t)); !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status of an endpoint answering 503: %v, want an HTTPError 503", err)
	}
	refusing.Close()
	var te *TransportError
	if err := c.Status(ctx(t)); !errors.As(err, &te) {
		t.Fatalf("status of a closed endpoint: %v, want a TransportError", err)
	}
}
