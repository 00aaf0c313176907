package poller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/internal/testkit/natstest"
	"github.com/icws/icws/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeCanister simulates the ic-websocket CDK's queue for one gateway.
type fakeCanister struct {
	mu       sync.Mutex
	gateway  principal.Principal
	queue    []protocol.CanisterOutputMessage
	first    uint64 // nonce of queue[0]
	seqs     map[string]uint64
	gen      int // bumped on reset, so new content differs from old
	maxBatch int
	// fail, when set, is asked before every query; a non-nil error is returned instead of an answer.
	fail func(nonce uint64) error
	// reply, when set, replaces the answer bytes.
	reply func(nonce uint64) []byte
	// queried records the nonces asked for.
	queried []uint64
	// certPad makes every answer's certificate (and its undecodable tree) this many bytes longer.
	certPad int
	// neverEnds makes every answer say the queue goes on (is_end_of_queue false).
	neverEnds bool
}

func newFakeCanister(gateway principal.Principal) *fakeCanister {
	return &fakeCanister{gateway: gateway, seqs: map[string]uint64{}, maxBatch: 50}
}

func testClient(i int) protocol.ClientKey {
	return protocol.ClientKey{ClientPrincipal: principal.Principal{Raw: []byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9}}, ClientNonce: uint64(1000 + i)}
}

// push queues n messages round-robin over clients.
func (f *fakeCanister) push(n int, clients ...protocol.ClientKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 0; i < n; i++ {
		ck := clients[i%len(clients)]
		f.seqs[ck.Token()]++
		nonce := f.first + uint64(len(f.queue))
		content, err := protocol.EncodeWebsocketMessageCBOR(protocol.WebsocketMessage{
			ClientKey: ck, SequenceNum: f.seqs[ck.Token()], Timestamp: uint64(time.Now().UnixNano()),
			Content: []byte(fmt.Sprintf("gen%d-msg%d", f.gen, nonce)),
		})
		if err != nil {
			panic(err)
		}
		f.queue = append(f.queue, protocol.CanisterOutputMessage{ClientKey: ck, Key: protocol.MessageKey(f.gateway, nonce), Content: content})
	}
}

// reset simulates an upgrade: empty queue, nonces and sequence numbers from the start.
func (f *fakeCanister) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue, f.first, f.seqs = nil, 0, map[string]uint64{}
	f.gen++
}

func (f *fakeCanister) answer(nonce uint64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queried = append(f.queried, nonce)
	if f.fail != nil {
		if err := f.fail(nonce); err != nil {
			return nil, err
		}
	}
	if f.reply != nil {
		if b := f.reply(nonce); b != nil {
			return b, nil
		}
	}
	var out []protocol.CanisterOutputMessage
	start := 0
	if nonce > f.first {
		start = int(nonce - f.first)
	}
	end := min(start+f.maxBatch, len(f.queue))
	if start < len(f.queue) {
		out = append(out, f.queue[start:end]...)
	}
	if out == nil {
		out = []protocol.CanisterOutputMessage{}
	}
	cert := []byte(fmt.Sprintf("cert-%d-%d-%d", f.gen, nonce, len(out)) + strings.Repeat("c", f.certPad))
	return candid.Marshal([]any{protocol.CanisterWsGetMessagesResult{Ok: &protocol.CanisterOutputCertifiedMessages{
		Messages: out, Cert: cert, Tree: []byte("tree-" + string(cert)), IsEndOfQueue: end >= len(f.queue) && !f.neverEnds,
	}}})
}

// fakeIC is one poller process's view of the IC; it counts that process's queries.
type fakeIC struct {
	canisters map[string]*fakeCanister
	gateway   principal.Principal
	queries   atomic.Int64
	mu        sync.Mutex
	polled    map[string]int // queries per canister id
}

func (ic *fakeIC) queriesOf(canister string) int {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	return ic.polled[canister]
}

func (ic *fakeIC) Principal() principal.Principal { return ic.gateway }

func (ic *fakeIC) Query(ctx context.Context, canister principal.Principal, method string, arg []byte) ([]byte, error) {
	if method != "ws_get_messages" {
		return nil, fmt.Errorf("unexpected method %s", method)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ic.queries.Add(1)
	ic.mu.Lock()
	if ic.polled == nil {
		ic.polled = map[string]int{}
	}
	ic.polled[canister.Encode()]++
	ic.mu.Unlock()
	var a protocol.CanisterWsGetMessagesArguments
	if err := candid.Unmarshal(arg, []any{&a}); err != nil {
		return nil, err
	}
	c := ic.canisters[canister.Encode()]
	if c == nil {
		return nil, errors.New("no such canister")
	}
	// Like the IC client, a query is abandoned when its context ends, even while the canister is
	// still answering (a fail hook may block).
	type result struct {
		reply []byte
		err   error
	}
	done := make(chan result, 1)
	go func() {
		reply, err := c.answer(a.Nonce)
		done <- result{reply, err}
	}()
	select {
	case r := <-done:
		return r.reply, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type env struct {
	t  *testing.T
	nc *nats.Conn
	js jetstream.JetStream
	h  *bus.Handles
}

func startEnv(t *testing.T) *env {
	t.Helper()
	_, nc, js := testkit.StartBroker(t, bus.DefaultTopology())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := bus.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, nc: nc, js: js, h: h}
}

// newJS gives each poller its own connection, as separate processes have.
func (e *env) newJS() (*nats.Conn, jetstream.JetStream) {
	return natstest.Connect(e.t, e.nc.ConnectedUrl())
}

type runningPoller struct {
	p      *Poller
	ic     *fakeIC
	cancel context.CancelFunc
	done   chan error
}

func (e *env) startPoller(id string, cfg Config, ic IC, abandon bool) *runningPoller {
	e.t.Helper()
	return e.startPollerWith(id, cfg, ic, abandon, nil)
}

func (e *env) startPollerWith(id string, cfg Config, ic IC, abandon bool, reg *prometheus.Registry) *runningPoller {
	e.t.Helper()
	return e.start(id, cfg, ic, abandon, reg, nil)
}

// startPollerThrough starts a poller whose JetStream calls go through wrap.
func (e *env) startPollerThrough(id string, cfg Config, ic IC, wrap func(jetstream.JetStream) jetstream.JetStream) *runningPoller {
	e.t.Helper()
	return e.start(id, cfg, ic, false, nil, wrap)
}

func (e *env) start(id string, cfg Config, ic IC, abandon bool, reg *prometheus.Registry, wrap func(jetstream.JetStream) jetstream.JetStream) *runningPoller {
	e.t.Helper()
	nc, js := e.newJS()
	if wrap != nil {
		js = wrap(js)
	}
	cfg.ID = id
	p, err := New(cfg, Deps{NC: nc, JS: js, IC: ic, Registry: reg})
	if err != nil {
		e.t.Fatal(err)
	}
	p.abandonLeases = abandon
	ctx, cancel := context.WithCancel(context.Background())
	fic, _ := ic.(*fakeIC)
	rp := &runningPoller{p: p, ic: fic, cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- p.Run(ctx) }()
	e.t.Cleanup(func() { rp.stop(e.t) })
	return rp
}

func (rp *runningPoller) stop(t *testing.T) {
	rp.cancel()
	select {
	case err := <-rp.done:
		if err != nil {
			t.Errorf("poller Run: %v", err)
		}
		rp.done <- nil
	case <-time.After(10 * time.Second):
		t.Error("poller did not stop within 10s")
	}
}

// storedFrame is one canister message held by ICWS_OUT: the subject and headers of the stream
// message that holds it (bus.HeaderSeq is that message's first frame's), and its own frame.
type storedFrame struct {
	Subject string
	Header  nats.Header
	Seq     uint64
	Data    []byte
	Frames  int // frames of its stream message
}

// outMsgs returns every canister message stored in ICWS_OUT, in stream order.
func (e *env) outMsgs() []storedFrame {
	e.t.Helper()
	out, err := e.readOut()
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) readOut() ([]storedFrame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := e.h.Out.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []storedFrame
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := e.h.Out.GetMsg(ctx, seq)
		if err != nil {
			return nil, err
		}
		frames, err := bus.DecodeOutFrames(nil, m.Header, m.Data)
		if err != nil {
			return nil, fmt.Errorf("stream message %d: %w", seq, err)
		}
		for _, f := range frames {
			out = append(out, storedFrame{Subject: m.Subject, Header: m.Header, Seq: f.Seq, Data: f.Frame, Frames: len(frames)})
		}
	}
	return out, nil
}

// outCount is the number of canister messages stored in ICWS_OUT.
func (e *env) outCount() uint64 {
	out, err := e.readOut()
	if err != nil {
		return 0
	}
	return uint64(len(out))
}
