package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
)

var testCanister = principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")

// testEnv is the replica simulator with the demo canister, plus a small in-test gateway in front.
type testEnv struct {
	replicaURL string
	rootKey    []byte
	can        *wscanister.Canister
	gw         *fakeGateway
}

func startEnv(t *testing.T, canCfg wscanister.Config, resume bool) *testEnv {
	t.Helper()
	canCfg.Logger = testkit.Logger(t, slog.LevelInfo)
	r, can := testkit.StartWSReplica(t, replica.Config{Logger: testkit.Logger(t, slog.LevelWarn)}, testCanister, canCfg)
	e := &testEnv{rootKey: r.RootKey(), can: can, replicaURL: r.URL}
	// The gateway stops before the replica (cleanups run last in, first out).
	ctx, cancel := context.WithCancel(context.Background())
	e.gw = newFakeGateway(t, ctx, r.URL, resume)
	t.Cleanup(func() {
		cancel()
		e.gw.close()
	})
	return e
}

func (e *testEnv) config(t *testing.T, id identity.Identity) Config {
	return Config{
		GatewayURL:    e.gw.url,
		ICURL:         e.replicaURL,
		Canister:      testCanister,
		Identity:      id,
		Logger:        testkit.Logger(t, slog.LevelDebug),
		ReconnectMin:  20 * time.Millisecond,
		ReconnectMax:  200 * time.Millisecond,
		ResumeTimeout: 10 * time.Second,
		OpenTimeout:   20 * time.Second,
	}
}

// fakeGateway is a minimal ic-websocket gateway for tests: handshake, envelopes POSTed byte for
// byte to the replica's v3 call endpoint (in order, synchronously), one poller querying
// ws_get_messages as the gateway identity, and — when resume is on — the icws resume extension
// (sessions outlive sockets; frames are kept and replayed by sequence number).
type fakeGateway struct {
	t          *testing.T
	ctx        context.Context
	replicaURL string
	id         identity.Identity
	agent      *agent.Agent
	srv        *httptest.Server
	url        string
	resume     bool
	wg         sync.WaitGroup
	writeLocks sync.Map // *websocket.Conn → *sync.Mutex
	// heartbeat, when set before clients connect, is the interval of heartbeat frames sent to
	// connections that ask for them.
	heartbeat time.Duration

	// tamper flips a byte of the next app message's content before forwarding it.
	tamper atomic.Bool
	// dropBeforeSeq, when > 0, drops the socket right before forwarding this canister seq.
	dropBeforeSeq atomic.Uint64
	drops         atomic.Int64
	// loseResumeAnswers, while positive, makes a resume take the session over and then drop the
	// connection before the answer.
	loseResumeAnswers atomic.Int32
	// resetAfterResumeAnswers, while positive, makes a resume answer and then reset the
	// connection (the client is re-sending its unacknowledged messages meanwhile).
	resetAfterResumeAnswers atomic.Int32
	// discardClientMessages makes the gateway read client messages and forget them, so they stay
	// unacknowledged; discarded counts them.
	discardClientMessages atomic.Bool
	discarded             atomic.Int64

	mu       sync.Mutex
	sessions map[string]*fgSession // by client key token
	tokens   map[string]*fgSession // by hex token
	pollOnce sync.Once
}

type fgSession struct {
	key           protocol.ClientKey
	mu            sync.Mutex
	ws            *websocket.Conn
	frozen        *atomic.Bool // of ws: stop answering pings
	frames        [][]byte     // canister frames by seq-1
	lastClientSeq uint64
}

func newFakeGateway(t *testing.T, ctx context.Context, replicaURL string, resume bool) *fakeGateway {
	t.Helper()
	id := testkit.NewIdentity(t)
	u, _ := url.Parse(replicaURL)
	a, err := agent.New(agent.Config{Identity: id, FetchRootKey: true, ClientConfig: []agent.ClientOption{agent.WithHostURL(u)}, DisableSignedQueryVerification: true})
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{t: t, ctx: ctx, replicaURL: replicaURL, id: id, agent: a, resume: resume,
		sessions: map[string]*fgSession{}, tokens: map[string]*fgSession{}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	g.url = "ws" + strings.TrimPrefix(g.srv.URL, "http")
	return g
}

func (g *fakeGateway) close() {
	g.srv.CloseClientConnections()
	g.srv.Close()
	g.wg.Wait()
}

// freezeAll makes every client socket silent without closing it (a half-open connection): no
// frames, no pongs.
func (g *fakeGateway) freezeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.sessions {
		s.mu.Lock()
		if s.ws != nil {
			s.frozen.Store(true)
			s.ws = nil
		}
		s.mu.Unlock()
	}
}

// closeAll closes every client socket with a close frame of code.
func (g *fakeGateway) closeAll(code int, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.sessions {
		s.mu.Lock()
		if s.ws != nil {
			_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
			s.ws.NetConn().Close()
			s.ws = nil
		}
		s.mu.Unlock()
	}
}

// dropAll cuts every client socket without a close frame, as a network failure would.
func (g *fakeGateway) dropAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.sessions {
		s.mu.Lock()
		if s.ws != nil {
			s.ws.NetConn().Close()
			s.ws = nil
		}
		s.mu.Unlock()
	}
	g.drops.Add(1)
}

var upgrader = websocket.Upgrader{}

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	frozen := new(atomic.Bool)
	ws.SetPingHandler(func(data string) error {
		if frozen.Load() {
			return nil
		}
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	hs := protocol.GatewayHandshake{GatewayPrincipal: g.id.Sender().Raw}
	token := make([]byte, 32)
	_, _ = rand.Read(token)
	offer := g.resume && r.URL.Query().Get(ResumeQueryParam) == "1"
	heartbeat := offer && g.heartbeat > 0 && r.URL.Query().Get(HeartbeatQueryParam) == "1"
	if offer {
		hs.Resume = &protocol.ResumeOffer{Version: protocol.ResumeVersion, Token: token}
		if heartbeat {
			hs.Resume.HeartbeatMillis = uint64(g.heartbeat.Milliseconds())
		}
	}
	b, _ := hs.Encode()
	if err := g.write(ws, b); err != nil {
		return
	}
	defer g.writeLocks.Delete(ws)
	if heartbeat {
		stop := make(chan struct{})
		defer close(stop)
		go g.sendHeartbeats(ws, frozen, stop)
	}
	_, first, err := ws.ReadMessage()
	if err != nil {
		return
	}
	ff, err := protocol.DecodeFirstFrame(first)
	if err != nil {
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseProtocolError, "bad frame"), time.Now().Add(time.Second))
		return
	}
	var s *fgSession
	if req := ff.Resume; req != nil && offer {
		g.mu.Lock()
		s = g.tokens[hex.EncodeToString(req.Token)]
		if s != nil {
			delete(g.tokens, hex.EncodeToString(req.Token))
			g.tokens[hex.EncodeToString(token)] = s
		}
		known := g.sessions[protocol.ClientKey{ClientPrincipal: principal.Principal{Raw: req.ClientKey.ClientPrincipal}, ClientNonce: req.ClientKey.ClientNonce}.Token()] != nil
		g.mu.Unlock()
		if s == nil {
			reason := "icws: not resumable: unknown session"
			if known {
				reason = "icws: not resumable: wrong token"
			}
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(CloseNotResumable, reason), time.Now().Add(time.Second))
			return
		}
		if g.loseResumeAnswers.Load() > 0 {
			// The session is taken over with this connection's token, and the answer is lost.
			g.loseResumeAnswers.Add(-1)
			ws.NetConn().Close()
			return
		}
		s.mu.Lock()
		ans, _ := protocol.ResumedAnswer{LastClientSeq: s.lastClientSeq}.Encode()
		err := g.write(ws, ans)
		for i := req.LastSeq; err == nil && i < uint64(len(s.frames)); i++ {
			err = g.write(ws, s.frames[i])
		}
		if err == nil && g.resetAfterResumeAnswers.Load() > 0 {
			g.resetAfterResumeAnswers.Add(-1)
			if tc, ok := ws.NetConn().(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // a reset, so the client's next writes fail
			}
			ws.NetConn().Close()
			s.mu.Unlock()
			return
		}
		if err == nil {
			s.ws, s.frozen = ws, frozen
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	} else {
		env, err := protocol.DecodeClientFrame(first)
		if err != nil {
			return
		}
		var args protocol.CanisterWsOpenArguments
		if err := candid.Unmarshal(env.Content.Arg, []any{&args}); err != nil {
			return
		}
		s = &fgSession{key: protocol.ClientKey{ClientPrincipal: principal.Principal{Raw: env.Content.Sender}, ClientNonce: args.ClientNonce}, ws: ws, frozen: frozen}
		g.mu.Lock()
		g.sessions[s.key.Token()] = s
		if offer {
			g.tokens[hex.EncodeToString(token)] = s
		}
		g.mu.Unlock()
		g.pollOnce.Do(func() { g.wg.Add(1); go g.poll() })
		if err := g.post(env.Raw); err != nil {
			g.t.Logf("fake gateway: ws_open: %v", err)
		}
	}
	for {
		_, frame, err := ws.ReadMessage()
		if err != nil {
			s.mu.Lock()
			if s.ws == ws {
				s.ws = nil
			}
			s.mu.Unlock()
			return
		}
		if g.discardClientMessages.Load() {
			g.discarded.Add(1)
			continue
		}
		env, err := protocol.DecodeClientFrame(frame)
		if err != nil {
			return
		}
		ts, vs, err := candid.Decode(env.Content.Arg)
		var m protocol.CanisterWsMessageArguments
		if err == nil {
			err = idl.UnmarshalGo(ts[0], vs[0], &m)
		}
		if err != nil {
			g.t.Logf("fake gateway: undecodable ws_message: %v", err)
			return
		}
		s.mu.Lock()
		dup := m.Msg.SequenceNum <= s.lastClientSeq
		if !dup {
			s.lastClientSeq = m.Msg.SequenceNum
		}
		s.mu.Unlock()
		if dup {
			continue
		}
		if err := g.post(env.Raw); err != nil {
			g.t.Logf("fake gateway: ws_message: %v", err)
		}
	}
}

// sendHeartbeats writes a heartbeat frame every interval from the handshake on, until stop or
// while the connection is frozen.
func (g *fakeGateway) sendHeartbeats(ws *websocket.Conn, frozen *atomic.Bool, stop chan struct{}) {
	frame, _ := protocol.Heartbeat{}.Encode()
	t := time.NewTicker(g.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if !frozen.Load() {
			_ = g.write(ws, frame)
		}
	}
}

// write sends one binary frame; writes to one connection are serialised.
func (g *fakeGateway) write(ws *websocket.Conn, frame []byte) error {
	mu, _ := g.writeLocks.LoadOrStore(ws, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	return ws.WriteMessage(websocket.BinaryMessage, frame)
}

func (g *fakeGateway) post(envelope []byte) error {
	req, err := http.NewRequestWithContext(g.ctx, http.MethodPost, g.replicaURL+"/api/v3/canister/"+testCanister.Encode()+"/call", bytes.NewReader(envelope))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/cbor")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	return nil
}

func (g *fakeGateway) poll() {
	defer g.wg.Done()
	var nonce uint64
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
		for {
			var res protocol.CanisterWsGetMessagesResult
			err := g.agent.Query(testCanister, "ws_get_messages", []any{protocol.CanisterWsGetMessagesArguments{Nonce: nonce}}, []any{&res})
			if err != nil || res.Ok == nil {
				if g.ctx.Err() == nil {
					g.t.Logf("fake gateway: poll: %v %v", err, res.Err)
				}
				break
			}
			for _, m := range res.Ok.Messages {
				n, err := protocol.MessageKeyNonce(m.Key)
				if err != nil {
					continue
				}
				nonce = n + 1
				g.forward(m, res.Ok.Cert, res.Ok.Tree)
			}
			if res.Ok.IsEndOfQueue {
				break
			}
		}
	}
}

func (g *fakeGateway) forward(m protocol.CanisterOutputMessage, cert, tree []byte) {
	g.mu.Lock()
	s := g.sessions[m.ClientKey.Token()]
	g.mu.Unlock()
	if s == nil {
		return
	}
	wm, err := protocol.DecodeWebsocketMessageCBOR(m.Content)
	if err != nil {
		return
	}
	content := m.Content
	if !wm.IsServiceMessage && g.tamper.CompareAndSwap(true, false) {
		content = bytes.Clone(content)
		content[len(content)-1] ^= 0x01
	}
	frame, err := protocol.CanisterToClientMessage{Key: m.Key, Content: content, Cert: cert, Tree: tree}.Encode()
	if err != nil {
		return
	}
	if seq := g.dropBeforeSeq.Load(); seq != 0 && wm.SequenceNum == seq {
		g.dropBeforeSeq.Store(0)
		g.dropAll()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if uint64(len(s.frames))+1 != wm.SequenceNum {
		return // already stored (re-polled)
	}
	s.frames = append(s.frames, frame)
	if s.ws != nil {
		_ = g.write(s.ws, frame)
	}
}
