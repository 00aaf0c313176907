package submitter

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/icclient"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/natstest"
	"github.com/icws/icws/protocol"
)

// testCanister is the session canister of the fake tests.
var testCanister = principal.Principal{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 7, 1, 1}}

// env is a NATS server with the icws topology and a publisher connection.
type env struct {
	url        string
	js         jetstream.JetStream
	partitions int
	connOpts   []nats.Option // of the submitters' connections
}

func newEnv(t testing.TB, partitions int) *env {
	t.Helper()
	topo := bus.DefaultTopology()
	topo.Partitions = partitions
	url, _, js := testkit.StartBroker(t, topo)
	return &env{url: url, js: js, partitions: partitions}
}

func testConfig(id string) Config {
	c := DefaultConfig()
	c.ID = id
	c.SettleDelay = 300 * time.Millisecond
	c.RetryMin = 10 * time.Millisecond
	c.RetryMax = 50 * time.Millisecond
	c.CallTimeout = 5 * time.Second
	// Long enough for a loaded 2-core machine running -race, short enough for quick take-overs.
	c.LeaseTTL = 2 * time.Second
	c.CloseRetryFor = 2 * time.Second
	c.DrainTimeout = 2 * time.Second
	return c
}

type running struct {
	s      *Submitter
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error
}

// stop ends Run gracefully and waits for it.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("Run: %v", r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
}

// kill ends Run as a crash: no drain, no lease release.
func (r *running) kill(t testing.TB) {
	t.Helper()
	r.s.crash()
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after crash")
	}
	r.cancel()
}

func (e *env) start(t testing.TB, cfg Config, ic IC) *running {
	t.Helper()
	return e.startWith(t, cfg, ic, nil)
}

// startWith starts a submitter like start after prepare (if not nil) has set its test hooks.
func (e *env) startWith(t testing.TB, cfg Config, ic IC, prepare func(*Submitter)) *running {
	t.Helper()
	nc, js := natstest.Connect(t, e.url, e.connOpts...)
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Deps{NC: nc, JS: js, IC: ic, Logger: testkit.Logger(t, slog.LevelWarn).With("test_submitter", cfg.ID), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = s.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
		}
	})
	testkit.WaitFor(t, 10*time.Second, "submitter ready", func() bool { return s.Ready(ctx) == nil })
	return r
}

// sessions is the session store, for the test to write the records an edge would.
func (e *env) sessions(ctx context.Context, t testing.TB) *bus.Sessions {
	t.Helper()
	h, err := bus.Open(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	return bus.NewSessions(h.Sessions, e.js)
}

// listen subscribes to a core NATS subject of the submitters' messages to the other roles (open
// results, close requests, poll kicks) before the test starts one; the channel holds n.
func (e *env) listen(t testing.TB, subject string, n int) chan *nats.Msg {
	t.Helper()
	nc, _ := natstest.Connect(t, e.url)
	ch := make(chan *nats.Msg, n)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

// testClient is a client key with its subject token.
type testClient struct {
	key   protocol.ClientKey
	token string
}

func newTestClient(i int) testClient {
	raw := make([]byte, 29)
	_, _ = rand.Read(raw)
	raw[28] = 0x02 // self-authenticating
	k := protocol.ClientKey{ClientPrincipal: principal.Principal{Raw: raw}, ClientNonce: uint64(1000 + i)}
	return testClient{key: k, token: k.Token()}
}

// fakeEnvelope is an unsigned call envelope whose arg names the client and sequence number, so the
// fake IC can check order without Candid.
func fakeEnvelope(t testing.TB, client string, seq uint64, expiry time.Time) []byte {
	t.Helper()
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	b, err := cbor.Marshal(map[string]any{"content": map[string]any{
		"request_type":   "call",
		"canister_id":    testCanister.Raw,
		"method_name":    "ws_message",
		"arg":            []byte(client + "|" + strconv.FormatUint(seq, 10)),
		"sender":         []byte{4},
		"ingress_expiry": uint64(expiry.UnixNano()),
		"nonce":          nonce,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte{}, protocol.SelfDescribeTag...), b...)
}

func parseFakeEnvelope(env []byte) (client string, seq uint64, err error) {
	var v struct {
		Content struct {
			Arg []byte `cbor:"arg"`
		} `cbor:"content"`
	}
	if err := cbor.Unmarshal(protocol.StripSelfDescribe(env), &v); err != nil {
		return "", 0, err
	}
	c, s, ok := strings.Cut(string(v.Content.Arg), "|")
	if !ok {
		return "", 0, errors.New("bad fake arg")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return c, n, err
}

// publisher publishes ICWS_IN messages as an edge does.
type publisher struct {
	t   testing.TB
	e   *env
	ctx context.Context
}

func (e *env) publisher(t testing.TB) *publisher {
	return &publisher{t: t, e: e, ctx: context.Background()}
}

func (p *publisher) msg(canister principal.Principal, client testClient, kind string, seq uint64, body []byte) *nats.Msg {
	ct := canister.Encode()
	m := nats.NewMsg(bus.InSubject(bus.Partition(ct, client.token, p.e.partitions), ct, client.token))
	m.Header.Set(bus.HeaderKind, kind)
	switch kind {
	case bus.KindMessage:
		m.Header.Set(bus.HeaderClientSeq, strconv.FormatUint(seq, 10))
		m.Header.Set(bus.HeaderMsgID, fmt.Sprintf("msg.%s.%s.%d", ct, client.token, seq))
	case bus.KindOpen:
		m.Header.Set(bus.HeaderMsgID, fmt.Sprintf("open.%s.%s", ct, client.token))
	case bus.KindClose:
		m.Header.Set(bus.HeaderCloseReason, "test")
		m.Header.Set(bus.HeaderMsgID, fmt.Sprintf("close.%s.%s", ct, client.token))
	}
	m.Data = body
	return m
}

// async publishes messages in order without waiting for each ack, then waits for all acks.
func (p *publisher) async(msgs []*nats.Msg) {
	p.t.Helper()
	const window = 1000 // below the client's limit of outstanding async publishes
	for len(msgs) > window {
		p.async(msgs[:window])
		msgs = msgs[window:]
	}
	futs := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := p.e.js.PublishMsgAsync(m)
		if err != nil {
			p.t.Fatal(err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			p.t.Fatal(err)
		case <-time.After(10 * time.Second):
			p.t.Fatal("publish timed out")
		}
	}
}

// burst builds n message envelopes for a client, seq from..from+n-1.
func (p *publisher) burst(client testClient, from, n uint64) []*nats.Msg {
	out := make([]*nats.Msg, 0, n)
	exp := time.Now().Add(4 * time.Minute)
	for s := from; s < from+n; s++ {
		out = append(out, p.msg(testCanister, client, bus.KindMessage, s, fakeEnvelope(p.t, client.token, s, exp)))
	}
	return out
}

// interleave merges per-client bursts round-robin, keeping each client's order.
func interleave(bursts ...[]*nats.Msg) []*nats.Msg {
	var out []*nats.Msg
	for i := 0; ; i++ {
		added := false
		for _, b := range bursts {
			if i < len(b) {
				out = append(out, b[i])
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

type fakeCall struct {
	by     string
	client string
	seq    uint64
	start  time.Time
	end    time.Time
	status icclient.CallStatus
}

type fakeClose struct {
	by         string
	key        protocol.ClientKey
	execsSoFar int
}

// fakeStore plays the IC for fake tests: it executes each request id once, at arrival, in arrival
// order, and answers repeats with the first outcome. Submitters reach it through fakeIC views.
type fakeStore struct {
	latency time.Duration
	// script decides the answer to the attempt-th arrival of (client, seq); nil means replied.
	script func(client string, seq uint64, attempt int) (icclient.CallStatus, error)
	// closeScript decides the answer to the attempt-th ws_close of a client; nil means Ok.
	closeScript func(client string, attempt int) (protocol.CanisterWsResult, error)

	mu         sync.Mutex
	executed   map[protocol.RequestID]bool
	bodies     map[protocol.RequestID][]byte
	attempts   map[protocol.RequestID]int
	order      map[string][]uint64
	calls      []fakeCall
	closes     []fakeClose
	inFlight   map[string]map[string]int // by → client → calls
	clientsNow map[string]int
	maxClients int
	violations []string
}

func newFakeStore() *fakeStore {
	return &fakeStore{
		executed: map[protocol.RequestID]bool{}, bodies: map[protocol.RequestID][]byte{},
		attempts: map[protocol.RequestID]int{}, order: map[string][]uint64{},
		inFlight: map[string]map[string]int{}, clientsNow: map[string]int{},
	}
}

type fakeIC struct {
	*fakeStore
	by string
}

func (f *fakeStore) as(by string) *fakeIC { return &fakeIC{fakeStore: f, by: by} }

func (f *fakeIC) SubmitCall(ctx context.Context, canister principal.Principal, env []byte) (icclient.CallOutcome, error) {
	client, seq, err := parseFakeEnvelope(env)
	if err != nil {
		return icclient.CallOutcome{}, &icclient.HTTPError{StatusCode: 400, Body: err.Error()}
	}
	rid, err := protocol.RequestIDOfEnvelope(env)
	if err != nil {
		return icclient.CallOutcome{}, &icclient.HTTPError{StatusCode: 400, Body: err.Error()}
	}
	f.mu.Lock()
	if !canister.Equal(testCanister) {
		f.violations = append(f.violations, "wrong canister "+canister.Encode())
	}
	if prev, ok := f.bodies[rid]; ok && !bytes.Equal(prev, env) {
		f.violations = append(f.violations, fmt.Sprintf("%s seq %d: re-sent with different bytes", client, seq))
	}
	f.bodies[rid] = env
	f.attempts[rid]++
	attempt := f.attempts[rid]
	if f.inFlight[f.by] == nil {
		f.inFlight[f.by] = map[string]int{}
	}
	if f.inFlight[f.by][client]++; f.inFlight[f.by][client] > 1 {
		f.violations = append(f.violations, fmt.Sprintf("%s: %s has two calls in flight", f.by, client))
	}
	if f.clientsNow[client]++; f.clientsNow[client] == 1 && len(f.clientsNow) > f.maxClients {
		f.maxClients = len(f.clientsNow)
	}
	status, serr := icclient.CallReplied, error(nil)
	if f.script != nil {
		status, serr = f.script(client, seq, attempt)
	}
	if serr == nil && status != icclient.CallNonReplicatedRejection && !f.executed[rid] {
		f.executed[rid] = true
		f.order[client] = append(f.order[client], seq)
	}
	idx := len(f.calls)
	f.calls = append(f.calls, fakeCall{by: f.by, client: client, seq: seq, start: time.Now(), status: status})
	f.mu.Unlock()

	defer func() {
		f.mu.Lock()
		f.calls[idx].end = time.Now()
		f.inFlight[f.by][client]--
		if f.clientsNow[client]--; f.clientsNow[client] == 0 {
			delete(f.clientsNow, client)
		}
		f.mu.Unlock()
	}()
	if f.latency > 0 {
		t := time.NewTimer(f.latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return icclient.CallOutcome{}, &icclient.TransportError{Err: ctx.Err()}
		}
	}
	if serr != nil {
		return icclient.CallOutcome{}, serr
	}
	return icclient.CallOutcome{Status: status, RequestID: rid}, nil
}

func (f *fakeIC) Call(ctx context.Context, canister principal.Principal, method string, arg []byte) ([]byte, error) {
	if method != "ws_close" {
		return nil, &icclient.RejectError{Code: 3, Message: "no method " + method}
	}
	var a protocol.CanisterWsCloseArguments
	if err := candid.Unmarshal(arg, []any{&a}); err != nil {
		return nil, &icclient.RejectError{Code: 5, Message: err.Error()}
	}
	f.mu.Lock()
	f.closes = append(f.closes, fakeClose{by: f.by, key: a.ClientKey, execsSoFar: len(f.order[a.ClientKey.Token()])})
	attempt := 0
	for _, c := range f.closes {
		if c.key.Equal(a.ClientKey) {
			attempt++
		}
	}
	f.mu.Unlock()
	res := protocol.ResultOk()
	if f.closeScript != nil {
		var err error
		if res, err = f.closeScript(a.ClientKey.Token(), attempt); err != nil {
			return nil, err
		}
	}
	return candid.Marshal([]any{res})
}

func (f *fakeStore) executedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.executed)
}

// checkOrder asserts that every client's envelopes executed exactly once each, in order 1..n.
func (f *fakeStore) checkOrder(t testing.TB, want map[string]uint64) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.violations {
		t.Error(v)
	}
	for client, n := range want {
		got := f.order[client]
		if uint64(len(got)) != n {
			t.Errorf("client %s: %d envelopes executed, want %d", client, len(got), n)
		}
		for i, s := range got {
			if s != uint64(i+1) {
				t.Errorf("client %s: execution %d is seq %d, want %d (order %v)", client, i, s, i+1, head(got))
				break
			}
		}
	}
}

func head(s []uint64) []uint64 {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}
