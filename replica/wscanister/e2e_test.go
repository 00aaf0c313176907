package wscanister_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
)

var canisterID = principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")

type e2e struct {
	r    *replica.Replica
	url  *url.URL
	can  *wscanister.Canister
	ctrl *wscanister.ControlClient
}

func startE2E(t *testing.T, cfg wscanister.Config) *e2e {
	t.Helper()
	r, can := testkit.StartWSReplica(t, replica.Config{CanisterControl: true}, canisterID, cfg)
	e := &e2e{r: r.Replica, can: can}
	e.url, _ = url.Parse(r.URL)
	e.ctrl = &wscanister.ControlClient{BaseURL: r.URL + "/_/control/" + canisterID.Encode(), HTTP: r.Server.Client()}
	return e
}

func (e *e2e) agent(t *testing.T, id identity.Identity) *agent.Agent {
	t.Helper()
	a, err := agent.New(agent.Config{Identity: id, FetchRootKey: true, ClientConfig: []agent.ClientOption{agent.WithHostURL(e.url)}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newIdentity(t *testing.T) identity.Identity {
	t.Helper()
	id := testkit.NewIdentity(t)
	return id
}

func callResult(t *testing.T, a *agent.Agent, method string, args ...any) protocol.CanisterWsResult {
	t.Helper()
	var res protocol.CanisterWsResult
	if err := a.Call(canisterID, method, args, []any{&res}); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return res
}

// pollVerified queries ws_get_messages as the gateway (agent-go checks the node signature) and
// runs the client's check on the batch against the replica's root key.
func pollVerified(t *testing.T, gw *agent.Agent, rootKey []byte, nonce uint64) protocol.CanisterOutputCertifiedMessages {
	t.Helper()
	var res protocol.CanisterWsGetMessagesResult
	if err := gw.Query(canisterID, "ws_get_messages", []any{protocol.CanisterWsGetMessagesArguments{Nonce: nonce}}, []any{&res}); err != nil {
		t.Fatalf("ws_get_messages: %v", err)
	}
	if res.Ok == nil {
		t.Fatalf("ws_get_messages Err: %v", *res.Err)
	}
	out := *res.Ok
	if len(out.Messages) == 0 {
		return out
	}
	v := &protocol.Verifier{Canister: canisterID, RootKey: rootKey}
	for _, m := range out.Messages {
		frame := protocol.CanisterToClientMessage{Key: m.Key, Content: m.Content, Cert: out.Cert, Tree: out.Tree}
		if _, err := v.Verify(frame, time.Now()); err != nil {
			t.Fatalf("message %s: %v", m.Key, err)
		}
	}
	return out
}

func TestEndToEndThroughReplica(t *testing.T) {
	cfg := wscanister.DefaultConfig()
	cfg.MaxReturnedMessages = 10
	e := startE2E(t, cfg)
	gwID := newIdentity(t)
	gw := e.agent(t, gwID)
	clientID := newIdentity(t)
	client := e.agent(t, clientID)
	rootKey := e.r.RootKey()

	// Metadata candid:service is readable through read_state.
	if did, err := client.GetCanisterMetadata(canisterID, "candid:service"); err != nil || !strings.Contains(string(did), "opt AppMessage") {
		t.Fatalf("candid:service: %v %q", err, did)
	}

	k := protocol.ClientKey{ClientPrincipal: clientID.Sender(), ClientNonce: 77}
	if res := callResult(t, client, "ws_open", protocol.CanisterWsOpenArguments{ClientNonce: 77, GatewayPrincipal: gwID.Sender()}); res.Ok == nil {
		t.Fatalf("ws_open: %v", *res.Err)
	}
	msg := func(seq uint64, text string) {
		content, err := candid.Marshal([]any{protocol.AppMessage{Text: text, Timestamp: uint64(time.Now().UnixNano())}})
		if err != nil {
			t.Fatal(err)
		}
		var none *protocol.AppMessage
		res := callResult(t, client, "ws_message", protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{
			ClientKey: k, SequenceNum: seq, Timestamp: uint64(time.Now().UnixNano()), Content: content,
		}}, none)
		if res.Ok == nil {
			t.Fatalf("ws_message %d: %v", seq, *res.Err)
		}
	}
	msg(1, "hello")
	msg(2, "burst:25")

	// Drain: Open + echo + 25 burst = 27 messages in batches of 10.
	var texts []string
	var seq uint64
	nonce := uint64(0)
	for {
		out := pollVerified(t, gw, rootKey, nonce)
		for _, m := range out.Messages {
			if m.Key != protocol.MessageKey(gwID.Sender(), nonce) {
				t.Fatalf("key %s, want nonce %d", m.Key, nonce)
			}
			nonce++
			wm, err := protocol.DecodeWebsocketMessageCBOR(m.Content)
			if err != nil {
				t.Fatal(err)
			}
			seq++
			if wm.SequenceNum != seq || !wm.ClientKey.Equal(k) {
				t.Fatalf("message %s: seq %d (want %d), key %s", m.Key, wm.SequenceNum, seq, wm.ClientKey)
			}
			if wm.IsServiceMessage {
				texts = append(texts, "<service>")
				continue
			}
			var app protocol.AppMessage
			if err := candid.Unmarshal(wm.Content, []any{&app}); err != nil {
				t.Fatal(err)
			}
			texts = append(texts, app.Text)
		}
		if out.IsEndOfQueue {
			break
		}
	}
	if len(texts) != 27 || texts[0] != "<service>" || texts[1] != "hello" || texts[26] != "burst:25" {
		t.Fatalf("texts %v", texts)
	}

	// Control API over HTTP.
	ctx := context.Background()
	if err := e.ctrl.Send(ctx, k, "from control"); err != nil {
		t.Fatal(err)
	}
	if n, err := e.ctrl.Broadcast(ctx, "to all"); err != nil || n != 1 {
		t.Fatalf("broadcast: %d %v", n, err)
	}
	keys, err := e.ctrl.Clients(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Equal(k) {
		t.Fatalf("clients %v %v", keys, err)
	}
	l, err := e.ctrl.Received(ctx, k)
	if err != nil || fmt.Sprint(l.Texts) != "[hello burst:25]" || !l.Open || l.LastIncomingSeq != 2 {
		t.Fatalf("received %+v %v", l, err)
	}
	if err := e.ctrl.CloseClient(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := e.ctrl.CloseClient(ctx, k); !errors.Is(err, wscanister.ErrNotConnected) {
		t.Fatalf("second close: %v", err)
	}
	out := pollVerified(t, gw, rootKey, nonce)
	if len(out.Messages) != 3 {
		t.Fatalf("want send, broadcast and close, got %d", len(out.Messages))
	}

	// ws_close by the gateway now fails: the canister already dropped the client.
	if res := callResult(t, gw, "ws_close", protocol.CanisterWsCloseArguments{ClientKey: k}); res.Err == nil {
		t.Fatal("ws_close of a closed client succeeded")
	}

	// Upgrade wipes everything: a new client starts again at nonce 0.
	if err := e.ctrl.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if out := pollVerified(t, gw, rootKey, 0); len(out.Messages) != 0 || !out.IsEndOfQueue {
		t.Fatalf("after upgrade: %d messages", len(out.Messages))
	}
	if res := callResult(t, client, "ws_open", protocol.CanisterWsOpenArguments{ClientNonce: 78, GatewayPrincipal: gwID.Sender()}); res.Ok == nil {
		t.Fatalf("ws_open after upgrade: %v", *res.Err)
	}
	if out := pollVerified(t, gw, rootKey, 0); len(out.Messages) != 1 || out.Messages[0].Key != protocol.MessageKey(gwID.Sender(), 0) {
		t.Fatalf("after upgrade and open: %+v", out.Messages)
	}

	// An unknown method is rejected by the replica as the IC does.
	var res protocol.CanisterWsResult
	err = client.Call(canisterID, "nope", []any{}, []any{&res})
	if err == nil {
		t.Fatal("unknown method succeeded")
	}
}

func TestEndToEndTimers(t *testing.T) {
	cfg := wscanister.DefaultConfig()
	cfg.AckInterval = 200 * time.Millisecond
	cfg.KeepAliveTimeout = 100 * time.Millisecond
	e := startE2E(t, cfg)
	gwID := newIdentity(t)
	gw := e.agent(t, gwID)
	clientID := newIdentity(t)
	client := e.agent(t, clientID)
	k := protocol.ClientKey{ClientPrincipal: clientID.Sender(), ClientNonce: 1}
	if res := callResult(t, client, "ws_open", protocol.CanisterWsOpenArguments{ClientNonce: 1, GatewayPrincipal: gwID.Sender()}); res.Ok == nil {
		t.Fatalf("ws_open: %v", *res.Err)
	}
	// The replica runs the canister's timers: without keep-alives the client is closed.
	deadline := time.Now().Add(15 * time.Second)
	for len(e.can.Clients()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("client was never timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l := e.can.Received(k); fmt.Sprint(l.Closes) != "[KeepAliveTimeout]" {
		t.Fatalf("log %+v", l)
	}
	out := pollVerified(t, gw, e.r.RootKey(), 0)
	if len(out.Messages) == 0 {
		t.Fatal("no messages retained")
	}
	last, err := protocol.DecodeWebsocketMessageCBOR(out.Messages[len(out.Messages)-1].Content)
	if err != nil {
		t.Fatal(err)
	}
	var svc protocol.WebsocketServiceMessageContent
	if err := candid.Unmarshal(last.Content, []any{&svc}); err != nil || svc.CloseMessage == nil || svc.CloseMessage.Reason.String() != "KeepAliveTimeout" {
		t.Fatalf("last message: %+v %v", svc, err)
	}
}
