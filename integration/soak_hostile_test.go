package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

// TestHostileSoak throws at least 10,000 hostile inputs of many kinds at an edge process (with a
// submitter, a poller and the replica behind it) while a good client exchanges echo messages
// through the same edge. The good client must lose nothing and keep its echo p99 within 3× its
// unloaded value; afterwards the edge's goroutines, file descriptors and RSS must come back near
// their baseline and the sessions bucket must hold no session but the good client's.
func TestHostileSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("hostile soak: long")
	}
	// The good client keeps what it sent until the canister acknowledges it, at most MaxPending
	// (10,000) messages: at the CDK's default ack interval (300 s) an echo loop faster than 33 a
	// second would run into that limit before the first ack, so the canister acks every 10 s.
	const ackInterval = 10 * time.Second
	d := startDeployment(t, DeploymentOptions{
		NATSNodes: 1, Edges: 1, Submitters: 1, Pollers: 1,
		Replica: ReplicaOptions{AckInterval: ackInterval, KeepAliveTimeout: ackInterval / 2},
		EdgeEnv: map[string]string{
			"ICWS_MAX_MESSAGE_BYTES": "65536",
			"ICWS_OPEN_TIMEOUT":      "2s",
			"ICWS_HANDSHAKE_TIMEOUT": "2s",
			"ICWS_RESUME_GRACE":      "2s",
			"ICWS_MAX_CLIENT_BURST":  "100",
		},
	})
	edge := d.Edges[0]
	canister, err := principal.Decode(d.Replica.CanisterID)
	if err != nil {
		t.Fatal(err)
	}
	gateway := principal.MustDecode(d.Gateway)
	metrics := edge.AdminURL + "/metrics"

	good := dialClient(t, edge.WSURL, d.Replica.URL, d.Replica.CanisterID, dialOptions{Resume: true, AckInterval: ackInterval})
	echo := &echoer{c: good}
	echo.run(t, 30) // warm up
	unloaded := echo.run(t, 100)
	base := readProcessFigures(t, metrics)
	t.Logf("baseline: echo p50 %s p99 %s; edge goroutines %.0f, fds %.0f, RSS %.1f MiB",
		unloaded.p(50), unloaded.p(99), base.goroutines, base.fds, base.rss/(1<<20))

	s := &soak{t: t, url: edge.WSURL, canister: canister, gateway: gateway}
	kinds := s.kinds()
	const target = 10000
	// Every kind is tried often: cheap kinds at least minPerKind inputs, none (the ping flood in
	// particular) more than maxPerKind, so no single kind makes up the total.
	const minPerKind, maxPerKind = 250, 2500
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var loaded latencies
	echoDone := make(chan struct{})
	stopEcho := make(chan struct{})
	go func() {
		defer close(echoDone)
		loaded = echo.until(t, stopEcho)
	}()
	start := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 24; w++ {
		wg.Go(func() {
			for ctx.Err() == nil && !s.done(kinds, target, minPerKind) {
				k := kinds[int(next.Add(1))%len(kinds)]
				if (k.expensive && k.runs.Load() >= k.maxRuns) || k.inputs.Load() >= maxPerKind {
					continue
				}
				k.runs.Add(1)
				n, err := k.run(ctx)
				s.total.Add(int64(n))
				k.inputs.Add(int64(n))
				if err != nil {
					k.failures.Add(1)
					s.fail(k.name, err)
				}
			}
		})
	}
	wg.Wait()
	close(stopEcho)
	<-echoDone
	elapsed := time.Since(start)

	var report []string
	for _, k := range kinds {
		report = append(report, fmt.Sprintf("%s=%d", k.name, k.inputs.Load()))
	}
	t.Logf("SOAK: %d hostile inputs of %d kinds in %s (%s)", s.total.Load(), len(kinds), elapsed.Round(time.Millisecond), strings.Join(report, " "))
	t.Logf("SOAK: good client echo under attack: %d round trips, p50 %s p99 %s (unloaded p99 %s)",
		len(loaded), loaded.p(50), loaded.p(99), unloaded.p(99))
	s.reportFailures()
	if s.total.Load() < target {
		t.Fatalf("only %d hostile inputs sent", s.total.Load())
	}
	if echo.lost != 0 {
		t.Fatalf("the good client lost %d echoes", echo.lost)
	}
	// On a shared two-core machine a few milliseconds of scheduling noise are not the attack's
	// doing: the bound is 3× the unloaded p99, but never below 3× a 10 ms floor.
	if limit := 3 * max(unloaded.p(99), 10*time.Millisecond); loaded.p(99) > limit {
		t.Errorf("echo p99 under attack %s exceeds %s (3× unloaded p99 %s)", loaded.p(99), limit, unloaded.p(99))
	}

	// Everything the attack opened is released.
	var after processFigures
	testkit.WaitForNil(t, 60*time.Second, time.Second, "edge back near its baseline", func() error {
		after = readProcessFigures(t, metrics)
		switch {
		case after.goroutines > base.goroutines+20:
			return fmt.Errorf("goroutines %.0f (baseline %.0f)", after.goroutines, base.goroutines)
		case after.fds > base.fds+10:
			return fmt.Errorf("open fds %.0f (baseline %.0f)", after.fds, base.fds)
		case after.rss > 2*base.rss+64<<20:
			return fmt.Errorf("RSS %.1f MiB (baseline %.1f MiB)", after.rss/(1<<20), base.rss/(1<<20))
		}
		return nil
	})
	t.Logf("SOAK: after: edge goroutines %.0f, fds %.0f, RSS %.1f MiB", after.goroutines, after.fds, after.rss/(1<<20))
	goodKey := bus.SessionKey(d.Replica.CanisterID, good.Key.Token())
	testkit.WaitForNil(t, 30*time.Second, 500*time.Millisecond, "sessions bucket empty but for the good client", func() error {
		keys := sessionKeys(t, d.NATS.URLs())
		if len(keys) == 1 && keys[0] == goodKey {
			return nil
		}
		return fmt.Errorf("%d sessions: %v", len(keys), keys[:min(len(keys), 5)])
	})
	echo.run(t, 10) // still served
}

// ---- the good client ----

type latencies []time.Duration

func (l latencies) p(q int) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*q/100)]
}

type echoer struct {
	c    *testClient
	n    int
	lost int
}

// run does n echo round trips, one at a time.
func (e *echoer) run(t *testing.T, n int) latencies {
	t.Helper()
	out := make(latencies, 0, n)
	for range n {
		out = append(out, e.once(t))
	}
	return out
}

func (e *echoer) until(t *testing.T, stop <-chan struct{}) latencies {
	var out latencies
	for {
		select {
		case <-stop:
			return out
		default:
		}
		out = append(out, e.once(t))
	}
}

func (e *echoer) once(t *testing.T) time.Duration {
	e.n++
	text := fmt.Sprintf("echo-%d", e.n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.c.Send(ctx, appMessage(t, text)); err != nil {
		t.Errorf("good client: send %s: %v", text, err)
		e.lost++
		return 0
	}
	got, err := e.c.collectTexts(1, 30*time.Second)
	if err != nil || len(got) != 1 || got[0] != text {
		t.Errorf("good client: echo of %s: got %v, %v", text, got, err)
		e.lost++
	}
	return time.Since(start)
}

// ---- process figures ----

type processFigures struct{ goroutines, fds, rss float64 }

func readProcessFigures(t *testing.T, url string) processFigures {
	t.Helper()
	var f processFigures
	for name, dst := range map[string]*float64{"go_goroutines": &f.goroutines, "process_open_fds": &f.fds, "process_resident_memory_bytes": &f.rss} {
		v, err := metricValue(url, name)
		if err != nil {
			t.Fatal(err)
		}
		*dst = v
	}
	return f
}

func sessionKeys(t *testing.T, natsURL string) []string {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bus.BucketSessions)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// ---- the attacks ----

type soak struct {
	t        *testing.T
	url      string
	canister principal.Principal
	gateway  principal.Principal
	total    atomic.Int64

	mu       sync.Mutex
	failures map[string][]string
}

// done reports whether the soak has sent target inputs and every kind its share.
func (s *soak) done(kinds []*attack, target int64, minPerKind int64) bool {
	if s.total.Load() < target {
		return false
	}
	for _, k := range kinds {
		if k.expensive {
			if k.runs.Load() < k.maxRuns {
				return false
			}
		} else if k.inputs.Load() < minPerKind {
			return false
		}
	}
	return true
}

func (s *soak) fail(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures == nil {
		s.failures = map[string][]string{}
	}
	if len(s.failures[kind]) < 5 {
		s.failures[kind] = append(s.failures[kind], err.Error())
	}
}

func (s *soak) reportFailures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.failures))
	for k := range s.failures {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s.t.Errorf("attack %s was not answered as expected: %s", k, strings.Join(s.failures[k], "; "))
	}
}

type attack struct {
	name string
	run  func(ctx context.Context) (inputs int, err error)
	// expensive attacks make the IC execute a call; maxRuns bounds them.
	expensive bool
	maxRuns   int64
	runs      atomic.Int64
	inputs    atomic.Int64
	failures  atomic.Int64
}

var (
	codesRefused  = []int{websocket.ClosePolicyViolation, websocket.CloseProtocolError}
	codesNotBound = []int{4100}
)

func (s *soak) kinds() []*attack {
	forgedOpen := func(mutate func(env map[any]any)) func(ctx context.Context) (int, error) {
		return func(ctx context.Context) (int, error) {
			id := newID()
			env := s.signedMap(id, s.canister, "ws_open", s.openArg(randomNonce()))
			mutate(env)
			return 1, s.expectClose(encodeFrame(env), codesRefused...)
		}
	}
	openWithArg := func(arg []byte) func(ctx context.Context) (int, error) {
		return func(ctx context.Context) (int, error) {
			env := s.signedMap(newID(), s.canister, "ws_open", arg)
			return 1, s.expectClose(encodeFrame(env), codesRefused...)
		}
	}
	afterOpen := func(frame func(id identity.Identity, nonce uint64) []byte, codes ...int) func(ctx context.Context) (int, error) {
		return func(ctx context.Context) (int, error) {
			id, nonce := newID(), randomNonce()
			ws, err := s.openSession(id, nonce, false)
			if err != nil {
				return 1, err
			}
			defer ws.Close()
			if err := ws.WriteMessage(websocket.BinaryMessage, frame(id, nonce)); err != nil {
				return 2, err
			}
			return 2, expectCloseOn(ws, codes...)
		}
	}
	return []*attack{
		{name: "forged_signature", run: forgedOpen(func(env map[any]any) { flip(env["sender_sig"].([]byte)) })},
		{name: "victim_sender", run: forgedOpen(func(env map[any]any) {
			// Claims another principal's client key while signing with its own key.
			env["content"].(map[any]any)["sender"] = newID().Sender().Raw
		})},
		{name: "no_signature", run: forgedOpen(func(env map[any]any) { delete(env, "sender_sig"); delete(env, "sender_pubkey") })},
		{name: "expired_envelope", run: forgedOpen(func(env map[any]any) {
			env["content"].(map[any]any)["ingress_expiry"] = uint64(time.Now().Add(-time.Hour).UnixNano())
		})},
		{name: "candid_principal_bomb", run: openWithArg(append([]byte("DIDL\x00\x01\x68\x01"), uleb(1<<50)...))},
		{name: "candid_vec_null_bomb", run: openWithArg(append([]byte("DIDL\x01\x6d\x7f\x01\x00"), uleb(50_000_000)...))},
		{name: "candid_nested_opt", run: openWithArg(nestedOpt(2000))},
		{name: "random_bytes", run: func(ctx context.Context) (int, error) {
			b := make([]byte, 1+mrand.IntN(512))
			_, _ = rand.Read(b)
			return 1, s.expectClose(b, websocket.CloseProtocolError, websocket.ClosePolicyViolation)
		}},
		{name: "truncated_cbor", run: func(ctx context.Context) (int, error) {
			f := encodeFrame(s.signedMap(newID(), s.canister, "ws_open", s.openArg(randomNonce())))
			return 1, s.expectClose(f[:1+mrand.IntN(len(f)-1)], websocket.CloseProtocolError, websocket.ClosePolicyViolation)
		}},
		{name: "deep_cbor_nesting", run: func(ctx context.Context) (int, error) {
			b := append(bytes.Repeat([]byte{0x81}, 60000), 0x00)
			return 1, s.expectClose(b, websocket.CloseProtocolError, websocket.ClosePolicyViolation)
		}},
		{name: "text_frame", run: func(ctx context.Context) (int, error) {
			ws, err := s.dial(false)
			if err != nil {
				return 1, err
			}
			defer ws.Close()
			if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"envelope":1}`)); err != nil {
				return 1, err
			}
			return 1, expectCloseOn(ws, websocket.CloseUnsupportedData)
		}},
		{name: "ping_flood", run: func(ctx context.Context) (int, error) {
			ws, err := s.dial(false)
			if err != nil {
				return 1, err
			}
			defer ws.Close()
			n := 0
			for ; n < 150; n++ { // above ICWS_MAX_CLIENT_BURST
				if err := ws.WriteControl(websocket.PingMessage, []byte("x"), time.Now().Add(time.Second)); err != nil {
					break
				}
			}
			// Pings count against the message rate: the flood ends the connection (the close
			// frame can be lost to a reset, since the flood leaves unread pings behind).
			if err := expectCloseOn(ws, websocket.ClosePolicyViolation); err != nil && !endedAbruptly(err) {
				return n, err
			}
			return n, nil
		}},
		{name: "oversize_frame", run: func(ctx context.Context) (int, error) {
			ws, err := s.dial(false)
			if err != nil {
				return 1, err
			}
			defer ws.Close()
			// A masked binary frame header announcing 1 MiB; the edge refuses on the length.
			if _, err := ws.NetConn().Write([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4}); err != nil {
				return 1, err
			}
			return 1, expectCloseOn(ws, websocket.CloseMessageTooBig)
		}},
		{name: "plain_http_keepalive", run: func(ctx context.Context) (int, error) {
			return 1, s.plainHTTP()
		}},
		{name: "half_open_upgrade", run: func(ctx context.Context) (int, error) {
			return 1, s.silentTCP()
		}},
		{name: "slow_upgrade", run: func(ctx context.Context) (int, error) {
			return 1, s.slowHeaders()
		}},
		{name: "resume_unknown_session", run: func(ctx context.Context) (int, error) {
			ws, err := s.dial(true)
			if err != nil {
				return 1, err
			}
			defer ws.Close()
			token := make([]byte, 32)
			_, _ = rand.Read(token)
			if err := ws.WriteMessage(websocket.BinaryMessage, resumeFrame(token, s.canister, newID().Sender(), randomNonce(), 0)); err != nil {
				return 1, err
			}
			return 1, expectCloseOn(ws, codesNotBound...)
		}},
		{name: "resume_rotated_token", expensive: true, maxRuns: 60, run: func(ctx context.Context) (int, error) {
			return s.rotatedToken()
		}},
		{name: "forged_open_random_canister", expensive: true, maxRuns: 150, run: func(ctx context.Context) (int, error) {
			// Validly signed, for a canister that does not exist: the IC refuses ws_open, the
			// edge closes with the refusal, and no poller ever polls that id.
			other := principal.NewSelfAuthenticating(randomBytes(16))
			env := s.signedMap(newID(), other, "ws_open", s.openArg(randomNonce()))
			return 1, s.expectClose(encodeFrame(env), websocket.ClosePolicyViolation)
		}},
		{name: "message_candid_bomb", expensive: true, maxRuns: 100, run: afterOpen(func(id identity.Identity, nonce uint64) []byte {
			return encodeFrame(s.signedMap(id, s.canister, "ws_message", append([]byte("DIDL\x00\x01\x68\x01"), uleb(1<<50)...)))
		}, codesRefused...)},
		{name: "message_other_canister", expensive: true, maxRuns: 100, run: afterOpen(func(id identity.Identity, nonce uint64) []byte {
			return encodeFrame(s.signedMap(id, principal.NewSelfAuthenticating(randomBytes(8)), "ws_message", s.messageArg(id, nonce, 1)))
		}, codesRefused...)},
		{name: "message_other_client", expensive: true, maxRuns: 100, run: afterOpen(func(_ identity.Identity, nonce uint64) []byte {
			other := newID()
			return encodeFrame(s.signedMap(other, s.canister, "ws_message", s.messageArg(other, nonce, 1)))
		}, codesRefused...)},
		{name: "method_not_allowed", expensive: true, maxRuns: 100, run: afterOpen(func(id identity.Identity, nonce uint64) []byte {
			return encodeFrame(s.signedMap(id, s.canister, "ws_close", s.messageArg(id, nonce, 1)))
		}, codesRefused...)},
	}
}

// ---- building blocks ----

func newID() identity.Identity {
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		panic(err)
	}
	return id
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomNonce() uint64 { return binary.BigEndian.Uint64(randomBytes(8)) >> 1 }

func flip(b []byte) {
	if len(b) > 0 {
		b[len(b)/2] ^= 0x55
	}
}

func uleb(v uint64) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}

// nestedOpt is a Candid argument whose type table chains n opt types (type i = opt type i+1,
// the last opt null) with one value of the outermost type.
func nestedOpt(n int) []byte {
	b := append([]byte("DIDL"), uleb(uint64(n))...)
	for i := 0; i < n-1; i++ {
		b = append(b, 0x6e)
		b = append(b, uleb(uint64(i+1))...)
	}
	b = append(b, 0x6e, 0x7f, 0x01, 0x00)
	for i := 0; i < n; i++ {
		b = append(b, 0x01)
	}
	return b
}

func (s *soak) openArg(nonce uint64) []byte {
	b, err := candid.Marshal([]any{protocol.CanisterWsOpenArguments{ClientNonce: nonce, GatewayPrincipal: s.gateway}})
	if err != nil {
		panic(err)
	}
	return b
}

func (s *soak) messageArg(id identity.Identity, nonce, seq uint64) []byte {
	b, err := candid.Marshal([]any{protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{
		ClientKey:   protocol.ClientKey{ClientPrincipal: id.Sender(), ClientNonce: nonce},
		SequenceNum: seq, Timestamp: uint64(time.Now().UnixNano()), Content: []byte("x"),
	}}})
	if err != nil {
		panic(err)
	}
	return b
}

// signedMap is a validly signed call envelope as a generic CBOR map, for tampering.
func (s *soak) signedMap(id identity.Identity, canister principal.Principal, method string, arg []byte) map[any]any {
	env := testkit.SignedCall(s.t, id, canister, method, arg)
	var m map[any]any
	if err := cbor.Unmarshal(protocol.StripSelfDescribe(env), &m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

func encodeFrame(env map[any]any) []byte {
	b, err := cbor.Marshal(env)
	if err != nil {
		panic(err)
	}
	f, err := protocol.EncodeClientFrame(b)
	if err != nil {
		panic(err)
	}
	return f
}

func resumeFrame(token []byte, canister, client principal.Principal, nonce, lastSeq uint64) []byte {
	b, err := cbor.Marshal(map[string]any{"icws_resume": map[string]any{
		"token": token, "canister_id": canister.Raw,
		"client_key": map[string]any{"client_principal": client.Raw, "client_nonce": nonce}, "last_seq": lastSeq,
	}})
	if err != nil {
		panic(err)
	}
	return b
}

// dial opens a WebSocket and reads the handshake; with resume it returns the offered token too.
func (s *soak) dialToken(resume bool) (*websocket.Conn, []byte, error) {
	u := s.url
	if resume {
		u += "/?" + protocol.ResumeQueryParam + "=1"
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	resp.Body.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, hs, err := ws.ReadMessage()
	if err != nil {
		ws.Close()
		return nil, nil, fmt.Errorf("handshake: %w", err)
	}
	var h struct {
		Resume struct {
			Token []byte `cbor:"token"`
		} `cbor:"icws_resume"`
	}
	_ = cbor.Unmarshal(protocol.StripSelfDescribe(hs), &h)
	return ws, h.Resume.Token, nil
}

func (s *soak) dial(resume bool) (*websocket.Conn, error) {
	ws, _, err := s.dialToken(resume)
	return ws, err
}

// expectClose sends one first frame on a new connection and expects one of codes.
func (s *soak) expectClose(frame []byte, codes ...int) error {
	ws, err := s.dial(false)
	if err != nil {
		return err
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
		return err
	}
	return expectCloseOn(ws, codes...)
}

func expectCloseOn(ws *websocket.Conn, codes ...int) error {
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if slices.Contains(codes, ce.Code) {
				return nil
			}
			return fmt.Errorf("closed with %d %q, want one of %v", ce.Code, ce.Text, codes)
		}
		return fmt.Errorf("no close frame (want one of %v): %w", codes, err)
	}
}

// openSession opens a real session (the IC executes its ws_open) and reads its OpenMessage.
func (s *soak) openSession(id identity.Identity, nonce uint64, resume bool) (*websocket.Conn, error) {
	ws, _, err := s.openSessionToken(id, nonce, resume)
	return ws, err
}

func (s *soak) openSessionToken(id identity.Identity, nonce uint64, resume bool) (*websocket.Conn, []byte, error) {
	ws, token, err := s.dialToken(resume)
	if err != nil {
		return nil, nil, err
	}
	env := s.signedMap(id, s.canister, "ws_open", s.openArg(nonce))
	if err := ws.WriteMessage(websocket.BinaryMessage, encodeFrame(env)); err != nil {
		ws.Close()
		return nil, nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, _, err := ws.ReadMessage(); err != nil {
		ws.Close()
		return nil, nil, fmt.Errorf("open message: %w", err)
	}
	return ws, token, nil
}

// rotatedToken: open a resumable session, drop it, resume (the token rotates), drop again, then
// resume with the first, no longer valid token.
func (s *soak) rotatedToken() (int, error) {
	id, nonce := newID(), randomNonce()
	ws, first, err := s.openSessionToken(id, nonce, true)
	if err != nil {
		return 1, err
	}
	ws.Close()
	var second []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws, tok, err := s.dialToken(true)
		if err != nil {
			return 2, err
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, resumeFrame(first, s.canister, id.Sender(), nonce, 1)); err != nil {
			ws.Close()
			return 2, err
		}
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err = ws.ReadMessage()
		ws.Close()
		if err == nil {
			second = tok
			break
		}
		// The edge may not have detached the session yet: a resume of a live session is refused
		// only while the old socket is still bound; try again.
		if time.Now().After(deadline) {
			return 2, fmt.Errorf("legitimate resume failed: %w", err)
		}
	}
	_ = second
	ws, _, err = s.dialToken(true)
	if err != nil {
		return 3, err
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.BinaryMessage, resumeFrame(first, s.canister, id.Sender(), nonce, 1)); err != nil {
		return 3, err
	}
	return 3, expectCloseOn(ws, codesNotBound...)
}

// endedAbruptly: the edge closed the connection, but its close frame was lost to a reset or the
// client saw the end of the stream first.
func endedAbruptly(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "connection reset") ||
		strings.Contains(err.Error(), "1006")
}

func (s *soak) hostPort() string { return strings.TrimPrefix(s.url, "ws://") }

func (s *soak) plainHTTP() error {
	nc, err := net.Dial("tcp", s.hostPort())
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"); err != nil {
		return err
	}
	b, err := io.ReadAll(nc) // ends when the edge closes the connection
	if err != nil {
		return fmt.Errorf("connection not closed after a plain request: %w", err)
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 426")) {
		return fmt.Errorf("plain request answered %q", firstLine(b))
	}
	return nil
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// silentTCP connects and sends nothing: the edge must close within its handshake timeout.
func (s *soak) silentTCP() error {
	nc, err := net.Dial("tcp", s.hostPort())
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.ReadAll(nc); err != nil {
		return fmt.Errorf("silent connection not closed: %w", err)
	}
	return nil
}

// slowHeaders sends an upgrade request one header line at a time, slower than the handshake
// timeout allows in total.
func (s *soak) slowHeaders() error {
	nc, err := net.Dial("tcp", s.hostPort())
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	lines := []string{"GET / HTTP/1.1\r\n", "Host: x\r\n", "Upgrade: websocket\r\n", "Connection: Upgrade\r\n", "X-Slow: 1\r\n", "X-Slow: 2\r\n", "X-Slow: 3\r\n", "X-Slow: 4\r\n"}
	for _, l := range lines {
		if _, err := io.WriteString(nc, l); err != nil {
			return nil // closed by the edge: what we want
		}
		time.Sleep(700 * time.Millisecond) // the attack is being slow, not synchronisation
	}
	b, err := io.ReadAll(nc)
	if err != nil {
		return fmt.Errorf("slow upgrade not closed: %w", err)
	}
	if len(b) > 0 && !bytes.HasPrefix(b, []byte("HTTP/1.1 408")) && !bytes.HasPrefix(b, []byte("HTTP/1.1 400")) {
		return fmt.Errorf("slow upgrade answered %q", firstLine(b))
	}
	return nil
}
