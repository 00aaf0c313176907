package wscanister

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/did"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
)

func TestConfigValidation(t *testing.T) {
	host := newFakeHost(t, newFakeClock())
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"ack equal keep-alive", func(c *Config) { c.AckInterval = c.KeepAliveTimeout }, false},
		{"ack below keep-alive", func(c *Config) { c.AckInterval = time.Second; c.KeepAliveTimeout = 2 * time.Second }, false},
		{"zero keep-alive", func(c *Config) { c.KeepAliveTimeout = 0 }, false},
		{"zero max returned", func(c *Config) { c.MaxReturnedMessages = 0 }, false},
		{"zero delete batch", func(c *Config) { c.DeleteBatch = 0 }, false},
		{"zero burst", func(c *Config) { c.MaxBurst = 0 }, false},
		{"ms intervals", func(c *Config) { c.AckInterval = 20 * time.Millisecond; c.KeepAliveTimeout = 10 * time.Millisecond }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			_, err := New(cfg, host)
			if (err == nil) != tc.ok {
				t.Fatalf("ok=%v, err=%v", tc.ok, err)
			}
		})
	}
}

func TestNewSetsEmptyCertifiedData(t *testing.T) {
	e := newEnv(t, nil)
	want := labeledHash([]byte("websocket"), emptyHash)
	if got := e.host.certifiedData(); string(got) != string(want[:]) {
		t.Fatalf("certified data %x, want labeled empty %x", got, want)
	}
}

func TestOpenQueuesOpenMessage(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	cl := newPrincipal(t, 2)
	e.mustOk(e.open(cl, 42, gw))
	out := e.poll(gw, 0)
	if len(out.Messages) != 1 || !out.IsEndOfQueue {
		t.Fatalf("want one message at end of queue, got %d end=%v", len(out.Messages), out.IsEndOfQueue)
	}
	m := decodeMessages(t, out)[0]
	k := protocol.ClientKey{ClientPrincipal: cl, ClientNonce: 42}
	if m.key != protocol.MessageKey(gw, 0) {
		t.Fatalf("key %q, want %q", m.key, protocol.MessageKey(gw, 0))
	}
	if m.msg.SequenceNum != 1 || !m.msg.IsServiceMessage || m.service.OpenMessage == nil {
		t.Fatalf("want OpenMessage with sequence 1, got %+v", m)
	}
	if !m.service.OpenMessage.ClientKey.Equal(k) || !out.Messages[0].ClientKey.Equal(k) {
		t.Fatalf("OpenMessage client key %s, want %s", m.service.OpenMessage.ClientKey, k)
	}
	if m.msg.Timestamp != uint64(e.clock.Now().UnixNano()) {
		t.Fatalf("timestamp %d, want call time", m.msg.Timestamp)
	}
	if got := e.c.Clients(); len(got) != 1 || !got[0].Equal(k) {
		t.Fatalf("clients %v", got)
	}
	if l := e.c.Received(k); !l.Open {
		t.Fatalf("log not open: %+v", l)
	}
}

func TestOpenRules(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	cl := newPrincipal(t, 2)
	e.mustContain(e.errOf(e.open(principal.AnonymousID, 1, gw)), "Anonymous principal is not allowed")

	e.mustOk(e.open(cl, 1, gw))
	e.mustContain(e.errOf(e.open(cl, 1, gw)), "already has an open connection")

	// The same principal with another key replaces the old client silently.
	e.mustOk(e.open(cl, 2, gw))
	old := protocol.ClientKey{ClientPrincipal: cl, ClientNonce: 1}
	nk := protocol.ClientKey{ClientPrincipal: cl, ClientNonce: 2}
	ms, _ := e.drain(gw, 0)
	if len(ms) != 2 {
		t.Fatalf("want 2 messages (two OpenMessages, no CloseMessage), got %d", len(ms))
	}
	var s1, s2 uint64
	if got := forClient(t, ms, old, &s1); len(got) != 1 || got[0].service.OpenMessage == nil {
		t.Fatalf("old client got %+v", got)
	}
	if got := forClient(t, ms, nk, &s2); len(got) != 1 || got[0].service.OpenMessage == nil {
		t.Fatalf("new client got %+v", got)
	}
	if l := e.c.Received(old); l.Open || len(l.Closes) != 1 || l.Closes[0] != "replaced" {
		t.Fatalf("old client log %+v", l)
	}
	// The old key can no longer send.
	e.mustContain(e.errOf(e.appMessage(old, 1, "x")), "has a different key")
	e.mustOk(e.appMessage(nk, 1, "x"))
}

func TestEcho(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	cl := newPrincipal(t, 2)
	k := protocol.ClientKey{ClientPrincipal: cl, ClientNonce: 7}
	e.mustOk(e.open(cl, 7, gw))
	for i := 1; i <= 3; i++ {
		e.clock.Advance(time.Millisecond)
		e.mustOk(e.appMessage(k, uint64(i), fmt.Sprintf("hello %d", i)))
	}
	ms, next := e.drain(gw, 0)
	if next != 4 {
		t.Fatalf("next nonce %d, want 4", next)
	}
	var seq uint64
	got := forClient(t, ms, k, &seq)
	for i, m := range got[1:] {
		if m.msg.IsServiceMessage || m.app.Text != fmt.Sprintf("hello %d", i+1) {
			t.Fatalf("echo %d: %+v", i+1, m)
		}
		if m.app.Timestamp != m.msg.Timestamp || m.app.Timestamp == 0 {
			t.Fatalf("echo timestamp %d, message timestamp %d", m.app.Timestamp, m.msg.Timestamp)
		}
	}
	l := e.c.Received(k)
	if strings.Join(l.Texts, ",") != "hello 1,hello 2,hello 3" || l.Received != 3 || l.LastIncomingSeq != 3 {
		t.Fatalf("log %+v", l)
	}
}

func TestBurstAcrossPolls(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxReturnedMessages = 50 })
	gw := newPrincipal(t, 1)
	cl := newPrincipal(t, 2)
	k := protocol.ClientKey{ClientPrincipal: cl, ClientNonce: 1}
	e.mustOk(e.open(cl, 1, gw))
	e.mustOk(e.appMessage(k, 1, "burst:120"))

	// 121 messages: OpenMessage + 120. Polls: [0,49], [50,99], [100,120].
	nonce := uint64(0)
	var sizes []int
	var ends []bool
	var all []decoded
	for {
		out := e.poll(gw, nonce)
		ms := decodeMessages(t, out)
		sizes = append(sizes, len(ms))
		ends = append(ends, out.IsEndOfQueue)
		for _, m := range ms {
			if m.nonce != nonce {
				t.Fatalf("nonce %d, want %d", m.nonce, nonce)
			}
			nonce++
		}
		all = append(all, ms...)
		if out.IsEndOfQueue {
			break
		}
	}
	if fmt.Sprint(sizes) != "[50 50 21]" || fmt.Sprint(ends) != "[false false true]" {
		t.Fatalf("batch sizes %v ends %v", sizes, ends)
	}
	var seq uint64
	got := forClient(t, all, k, &seq)
	for i, m := range got[1:] {
		if m.app.Text != fmt.Sprintf("burst:%d", i+1) {
			t.Fatalf("message %d: %q", i+1, m.app.Text)
		}
	}
	// The nonce is inclusive: polling an already received nonce returns it again.
	out := e.poll(gw, 120)
	if len(out.Messages) != 1 || out.Messages[0].Key != protocol.MessageKey(gw, 120) || !out.IsEndOfQueue {
		t.Fatalf("re-poll of 120: %d messages", len(out.Messages))
	}
	// Past the end: nothing.
	if out := e.poll(gw, 121); len(out.Messages) != 0 {
		t.Fatalf("poll past end returned %d", len(out.Messages))
	}
	// A batch ending exactly at the end of the queue is the end of the queue.
	if out := e.poll(gw, 71); len(out.Messages) != 50 || !out.IsEndOfQueue {
		t.Fatalf("poll 71: %d end=%v", len(out.Messages), out.IsEndOfQueue)
	}
}

func TestBurstParsingAndCap(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBurst = 5 })
	gw := newPrincipal(t, 1)
	cl := newPrincipal(t, 2)
	k := protocol.ClientKey{ClientPrincipal: cl, ClientNonce: 1}
	e.mustOk(e.open(cl, 1, gw))
	for i, text := range []string{"burst:0", "burst:x", "burst:-1", "burst:9"} {
		e.mustOk(e.appMessage(k, uint64(i+1), text))
	}
	ms, _ := e.drain(gw, 0)
	var texts []string
	for _, m := range ms[1:] {
		texts = append(texts, m.app.Text)
	}
	want := "burst:0,burst:x,burst:-1,burst:1,burst:2,burst:3,burst:4,burst:5"
	if strings.Join(texts, ",") != want {
		t.Fatalf("got %v", texts)
	}
}

func TestSequenceError(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	cl := newPrincipal(t, 2)
	k := protocol.ClientKey{ClientPrincipal: cl, ClientNonce: 1}
	e.mustOk(e.open(cl, 1, gw))
	e.mustOk(e.appMessage(k, 1, "a"))
	e.mustContain(e.errOf(e.appMessage(k, 3, "c")), "Expected incoming sequence number 2 but got 3")
	ms, _ := e.drain(gw, 0)
	var seq uint64
	got := forClient(t, ms, k, &seq)
	if len(got) != 3 || closeReason(got[2]) != "WrongSequenceNumber" {
		t.Fatalf("want Open, echo, CloseMessage WrongSequenceNumber; got %+v", got)
	}
	if len(e.c.Clients()) != 0 {
		t.Fatal("client not removed")
	}
	l := e.c.Received(k)
	if l.SequenceErrors != 1 || l.Open || fmt.Sprint(l.Closes) != "[WrongSequenceNumber]" {
		t.Fatalf("log %+v", l)
	}
	e.mustContain(e.errOf(e.appMessage(k, 2, "b")), "doesn't have an open connection")
}

func TestWsMessageRules(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	cl := newPrincipal(t, 2)
	other := newPrincipal(t, 3)
	k := protocol.ClientKey{ClientPrincipal: cl, ClientNonce: 1}
	e.mustOk(e.open(cl, 1, gw))

	// Unregistered caller.
	e.mustContain(e.errOf(e.appMessage(protocol.ClientKey{ClientPrincipal: other, ClientNonce: 1}, 1, "x")), "doesn't have an open connection")
	// Registered caller, key in the message differs.
	wrong := protocol.ClientKey{ClientPrincipal: cl, ClientNonce: 2}
	arg := protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{ClientKey: wrong, SequenceNum: 1, Content: []byte{}}}
	e.mustContain(e.errOf(e.update(cl, "ws_message", arg, (*protocol.AppMessage)(nil))), "has a different key than the one used in the message")

	// Service messages: keep-alive is fine, other variants are invalid, garbage does not decode.
	e.mustOk(e.keepAlive(k, 1, 1))
	ack, _ := candid.Marshal([]any{protocol.WebsocketServiceMessageContent{AckMessage: &protocol.CanisterAckMessageContent{}}})
	e.mustContain(e.errOf(e.wsMessage(k, 2, true, ack)), "Invalid service message")
	e.mustContain(e.errOf(e.wsMessage(k, 3, true, []byte("garbage"))), "Error decoding service message content")
	// Errors after the sequence check still consumed the sequence number, as in the CDK.
	e.mustOk(e.appMessage(k, 4, "after"))
	if l := e.c.Received(k); l.KeepAlives != 1 || l.LastIncomingSeq != 4 || l.Received != 1 {
		t.Fatalf("log %+v", l)
	}

	// App content that is not an AppMessage traps (no state change: 5 is still expected).
	_, err := e.wsMessage(k, 5, false, []byte("not candid"))
	var rej *replica.Reject
	if !errors.As(err, &rej) || rej.Code != replica.CanisterError {
		t.Fatalf("want trap, got %v", err)
	}
	e.mustOk(e.appMessage(k, 5, "still 5"))

	// ws_message with one argument only, and with a second opt of another type.
	one, _ := candid.Marshal([]any{protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{ClientKey: k, SequenceNum: 6, IsServiceMessage: true, Content: mustKeepAlive(t)}}})
	e.mustOk(e.c.Update(context.Background(), replica.Call{Caller: cl, Method: "ws_message", Arg: one, Time: e.clock.Now()}))
	var optText *string
	e.mustOk(e.update(cl, "ws_message", protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{ClientKey: k, SequenceNum: 7, IsServiceMessage: true, Content: mustKeepAlive(t)}}, optText))
}

func mustKeepAlive(t *testing.T) []byte {
	b, err := candid.Marshal([]any{protocol.WebsocketServiceMessageContent{KeepAliveMessage: &protocol.ClientKeepAliveMessageContent{}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadCandidAndUnknownMethods(t *testing.T) {
	e := newEnv(t, nil)
	cl := newPrincipal(t, 2)
	for _, m := range []string{"ws_open", "ws_message", "ws_close", "ws_get_messages"} {
		_, err := e.c.Update(context.Background(), replica.Call{Caller: cl, Method: m, Arg: []byte("DIDL\x00\x01\x71"), Time: e.clock.Now()})
		var rej *replica.Reject
		if !errors.As(err, &rej) || rej.Code != replica.CanisterError || !strings.Contains(rej.Message, m) {
			t.Fatalf("%s with bad Candid: want trap naming the method, got %v", m, err)
		}
	}
	// Wrong argument type.
	_, err := e.update(cl, "ws_open", "text")
	var rej *replica.Reject
	if !errors.As(err, &rej) || rej.Code != replica.CanisterError {
		t.Fatalf("ws_open(text): want trap, got %v", err)
	}
	_, err = e.update(cl, "greet")
	if !errors.As(err, &rej) || rej.Code != replica.DestinationInvalid {
		t.Fatalf("unknown update: %v", err)
	}
	_, err = e.c.Query(context.Background(), replica.Call{Caller: cl, Method: "ws_open", Arg: []byte("DIDL\x00\x00")})
	if !errors.As(err, &rej) || rej.Code != replica.DestinationInvalid || !strings.Contains(rej.Message, "query") {
		t.Fatalf("update method as query: %v", err)
	}
}

func TestWsGetMessagesAsUpdate(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	// Unregistered or empty: Ok empty, even replicated.
	reply, err := e.update(gw, "ws_get_messages", protocol.CanisterWsGetMessagesArguments{})
	if err != nil {
		t.Fatal(err)
	}
	var r protocol.CanisterWsGetMessagesResult
	if err := candid.Unmarshal(reply, []any{&r}); err != nil || r.Ok == nil || len(r.Ok.Messages) != 0 {
		t.Fatalf("empty replicated poll: %v %+v", err, r)
	}
	e.mustOk(e.open(newPrincipal(t, 2), 1, gw))
	// With messages the CDK's data_certificate().unwrap() traps.
	_, err = e.update(gw, "ws_get_messages", protocol.CanisterWsGetMessagesArguments{})
	var rej *replica.Reject
	if !errors.As(err, &rej) || rej.Code != replica.CanisterError {
		t.Fatalf("want trap, got %v", err)
	}
}

func TestUnregisteredGatewayPoll(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	e.mustOk(e.open(newPrincipal(t, 2), 1, gw))
	for _, caller := range []principal.Principal{newPrincipal(t, 9), principal.AnonymousID, newPrincipal(t, 2)} {
		out := e.poll(caller, 0)
		if len(out.Messages) != 0 || len(out.Cert) != 0 || len(out.Tree) != 0 || !out.IsEndOfQueue {
			t.Fatalf("poll by %s: %+v", caller, out)
		}
	}
}

func TestWsCloseRules(t *testing.T) {
	gw1 := newPrincipal(t, 1)
	gw2 := newPrincipal(t, 2)
	gwX := newPrincipal(t, 3)
	c1 := newPrincipal(t, 10)
	c2 := newPrincipal(t, 11)
	k1 := protocol.ClientKey{ClientPrincipal: c1, ClientNonce: 1}
	k2 := protocol.ClientKey{ClientPrincipal: c2, ClientNonce: 1}
	tests := []struct {
		name   string
		caller principal.Principal
		key    protocol.ClientKey
		err    string
	}{
		{"unregistered gateway", gwX, k1, "is not registered"},
		{"unknown client", gw1, protocol.ClientKey{ClientPrincipal: c1, ClientNonce: 99}, "doesn't have an open connection"},
		{"client of another gateway", gw1, k2, "was not registered to gateway"},
		{"client as caller", c1, k1, "is not registered"},
		{"ok", gw1, k1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.mustOk(e.open(c1, 1, gw1))
			e.mustOk(e.open(c2, 1, gw2))
			if tc.err != "" {
				e.mustContain(e.errOf(e.close(tc.caller, tc.key)), tc.err)
				if len(e.c.Clients()) != 2 {
					t.Fatal("a failed ws_close removed a client")
				}
				return
			}
			e.mustOk(e.close(tc.caller, tc.key))
			if l := e.c.Received(tc.key); l.Open || fmt.Sprint(l.Closes) != "[ws_close]" {
				t.Fatalf("log %+v", l)
			}
			// No CloseMessage is queued on ws_close.
			ms, _ := e.drain(gw1, 0)
			if len(ms) != 1 {
				t.Fatalf("want only the OpenMessage, got %d messages", len(ms))
			}
			e.mustContain(e.errOf(e.close(tc.caller, tc.key)), "doesn't have an open connection")
		})
	}
}

func TestMultipleGateways(t *testing.T) {
	e := newEnv(t, nil)
	gw1 := newPrincipal(t, 1)
	gw2 := newPrincipal(t, 2)
	k1 := protocol.ClientKey{ClientPrincipal: newPrincipal(t, 10), ClientNonce: 1}
	k2 := protocol.ClientKey{ClientPrincipal: newPrincipal(t, 11), ClientNonce: 1}
	e.mustOk(e.open(k1.ClientPrincipal, 1, gw1))
	e.mustOk(e.open(k2.ClientPrincipal, 1, gw2))
	e.mustOk(e.appMessage(k1, 1, "one"))
	e.mustOk(e.appMessage(k2, 1, "two"))
	for _, tc := range []struct {
		gw principal.Principal
		k  protocol.ClientKey
	}{{gw1, k1}, {gw2, k2}} {
		ms, next := e.drain(tc.gw, 0)
		if next != 2 || len(ms) != 2 {
			t.Fatalf("gateway %s: next %d, %d messages", tc.gw, next, len(ms))
		}
		for _, m := range ms {
			if !m.msg.ClientKey.Equal(tc.k) || !strings.HasPrefix(m.key, tc.gw.Encode()+"_") {
				t.Fatalf("gateway %s got %s for %s", tc.gw, m.key, m.msg.ClientKey)
			}
		}
	}
	// A client may move to another gateway after ws_close.
	e.mustOk(e.close(gw1, k1))
	k1b := protocol.ClientKey{ClientPrincipal: k1.ClientPrincipal, ClientNonce: 2}
	e.mustOk(e.open(k1.ClientPrincipal, 2, gw2))
	ms, _ := e.drain(gw2, 2)
	if len(ms) != 1 || !ms[0].msg.ClientKey.Equal(k1b) || ms[0].key != protocol.MessageKey(gw2, 2) {
		t.Fatalf("moved client: %+v", ms)
	}
}

func TestKeepAliveCycle(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	good := protocol.ClientKey{ClientPrincipal: newPrincipal(t, 10), ClientNonce: 1}
	silent := protocol.ClientKey{ClientPrincipal: newPrincipal(t, 11), ClientNonce: 1}
	e.mustOk(e.open(good.ClientPrincipal, 1, gw))
	e.mustOk(e.open(silent.ClientPrincipal, 1, gw))
	e.mustOk(e.appMessage(good, 1, "hi"))
	var goodSeq, silentSeq uint64
	nonce := uint64(0)
	ms, nonce := e.drain(gw, nonce)
	forClient(t, ms, good, &goodSeq)
	forClient(t, ms, silent, &silentSeq)

	// Ack round: every client gets an AckMessage with the last sequence number received.
	e.clock.Advance(300 * time.Second)
	e.c.AckRound()
	ms, nonce = e.drain(gw, nonce)
	acks := forClient(t, ms, good, &goodSeq)
	if len(acks) != 1 || acks[0].service.AckMessage == nil || acks[0].service.AckMessage.LastIncomingSequenceNum != 1 {
		t.Fatalf("good client ack: %+v", acks)
	}
	acks = forClient(t, ms, silent, &silentSeq)
	if len(acks) != 1 || acks[0].service.AckMessage == nil || acks[0].service.AckMessage.LastIncomingSequenceNum != 0 {
		t.Fatalf("silent client ack: %+v", acks)
	}

	// The good client answers within the timeout; the silent one does not.
	e.clock.Advance(10 * time.Second)
	e.mustOk(e.keepAlive(good, 2, goodSeq))
	e.clock.Advance(50*time.Second + time.Millisecond)
	e.c.KeepAliveCheck()
	ms, nonce = e.drain(gw, nonce)
	if got := forClient(t, ms, good, &goodSeq); len(got) != 0 {
		t.Fatalf("good client got %+v", got)
	}
	got := forClient(t, ms, silent, &silentSeq)
	if len(got) != 1 || closeReason(got[0]) != "KeepAliveTimeout" {
		t.Fatalf("silent client: %+v", got)
	}
	if cl := e.c.Clients(); len(cl) != 1 || !cl[0].Equal(good) {
		t.Fatalf("clients %v", cl)
	}
	if l := e.c.Received(silent); fmt.Sprint(l.Closes) != "[KeepAliveTimeout]" {
		t.Fatalf("silent log %+v", l)
	}

	// Next round: the good client, still "waiting" but with a fresh keep-alive, survives only if
	// it answers again.
	e.clock.Advance(240 * time.Second)
	e.c.AckRound()
	ms, nonce = e.drain(gw, nonce)
	if got := forClient(t, ms, good, &goodSeq); len(got) != 1 || got[0].service.AckMessage.LastIncomingSequenceNum != 2 {
		t.Fatalf("second ack: %+v", got)
	}
	e.clock.Advance(60*time.Second + time.Millisecond)
	e.c.KeepAliveCheck()
	ms, _ = e.drain(gw, nonce)
	if got := forClient(t, ms, good, &goodSeq); len(got) != 1 || closeReason(got[0]) != "KeepAliveTimeout" {
		t.Fatalf("good client second round: %+v", got)
	}
}

func TestKeepAliveOnlyAfterAck(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	e.openClient(10, 1, gw)
	// Without an ack round the client is not waiting, however old its keep-alive.
	e.clock.Advance(time.Hour)
	e.c.KeepAliveCheck()
	if len(e.c.Clients()) != 1 {
		t.Fatal("client removed without an ack")
	}
}

func TestRetention(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DeleteBatch = 5 })
	gw := newPrincipal(t, 1)
	k := e.openClient(10, 1, gw)
	e.mustOk(e.appMessage(k, 1, "burst:11")) // nonces 0..11
	if n := e.c.st.tree.len(); n != 12 {
		t.Fatalf("tree holds %d keys, want 12", n)
	}
	// Exactly the ack interval later nothing is older than the interval yet.
	e.clock.Advance(300 * time.Second)
	e.mustOk(e.appMessage(k, 2, "x")) // echo: nonce 12
	if out := e.poll(gw, 0); out.Messages[0].Key != protocol.MessageKey(gw, 0) {
		t.Fatalf("first retained key %s", out.Messages[0].Key)
	}
	e.clock.Advance(time.Millisecond)
	e.mustOk(e.appMessage(k, 3, "y")) // echo: nonce 13, deletes 0..4
	out := e.poll(gw, 0)
	if out.Messages[0].Key != protocol.MessageKey(gw, 5) || len(out.Messages) != 9 {
		t.Fatalf("after one send: first %s, %d messages", out.Messages[0].Key, len(out.Messages))
	}
	e.mustOk(e.appMessage(k, 4, "z")) // nonce 14, deletes 5..9
	e.mustOk(e.appMessage(k, 5, "w")) // nonce 15, deletes 10..11 (12 is younger)
	out = e.poll(gw, 0)
	if out.Messages[0].Key != protocol.MessageKey(gw, 12) || len(out.Messages) != 4 {
		t.Fatalf("after three sends: first %s, %d messages", out.Messages[0].Key, len(out.Messages))
	}
	if n := e.c.st.tree.len(); n != 4 {
		t.Fatalf("tree holds %d keys, want 4", n)
	}
	// The tree of retained keys is what is certified.
	cd := e.c.st.tree.certifiedData()
	if string(e.host.certifiedData()) != string(cd[:]) {
		t.Fatal("host certified data is stale")
	}
}

func TestGatewayRemovalRestartsNonce(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	k := e.openClient(10, 1, gw)
	e.mustOk(e.appMessage(k, 1, "a"))
	e.mustOk(e.close(gw, k))

	// Still registered (queue kept) until a keep-alive check one ack interval later.
	e.clock.Advance(100 * time.Second)
	e.c.KeepAliveCheck()
	if out := e.poll(gw, 0); len(out.Messages) != 2 {
		t.Fatalf("queue gone too early: %d", len(out.Messages))
	}
	e.clock.Advance(200*time.Second + time.Millisecond)
	e.c.KeepAliveCheck()
	if out := e.poll(gw, 0); len(out.Messages) != 0 {
		t.Fatalf("gateway not removed: %d messages", len(out.Messages))
	}
	if e.c.st.tree.len() != 0 {
		t.Fatal("certified keys of the removed gateway remain")
	}
	// Re-registered: nonce 0 again.
	e.openClient(11, 1, gw)
	if out := e.poll(gw, 0); len(out.Messages) != 1 || out.Messages[0].Key != protocol.MessageKey(gw, 0) {
		t.Fatalf("after re-registration: %+v", out.Messages)
	}
}

func TestGatewayRemovalCancelledByNewClient(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	k := e.openClient(10, 1, gw)
	e.mustOk(e.close(gw, k))
	e.mustOk(e.open(newPrincipal(t, 11), 1, gw))
	e.clock.Advance(time.Hour)
	e.c.KeepAliveCheck()
	if g := e.c.Gateways(); g[gw.Encode()] != 2 {
		t.Fatalf("gateways %v", g)
	}
}

func TestUpgradeWipesState(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	k := e.openClient(10, 1, gw)
	e.mustOk(e.appMessage(k, 1, "a"))
	e.c.Upgrade()
	if len(e.c.Clients()) != 0 || len(e.c.Gateways()) != 0 {
		t.Fatal("state survived the upgrade")
	}
	if out := e.poll(gw, 0); len(out.Messages) != 0 {
		t.Fatal("queue survived the upgrade")
	}
	if l := e.c.Received(k); l.Open || fmt.Sprint(l.Closes) != "[upgrade]" || l.Received != 1 {
		t.Fatalf("log %+v", l)
	}
	e.mustContain(e.errOf(e.appMessage(k, 2, "b")), "doesn't have an open connection")
	e.mustOk(e.open(k.ClientPrincipal, 2, gw))
	if out := e.poll(gw, 0); len(out.Messages) != 1 || out.Messages[0].Key != protocol.MessageKey(gw, 0) {
		t.Fatalf("after upgrade: %+v", out.Messages)
	}
}

func TestHooks(t *testing.T) {
	e := newEnv(t, nil)
	gw := newPrincipal(t, 1)
	k1 := protocol.ClientKey{ClientPrincipal: newPrincipal(t, 10), ClientNonce: 1}
	k2 := protocol.ClientKey{ClientPrincipal: newPrincipal(t, 11), ClientNonce: 1}
	e.mustOk(e.open(k1.ClientPrincipal, 1, gw))
	e.mustOk(e.open(k2.ClientPrincipal, 1, gw))
	if err := e.c.Send(k1, "only one"); err != nil {
		t.Fatal(err)
	}
	if n := e.c.Broadcast("all"); n != 2 {
		t.Fatalf("broadcast reached %d", n)
	}
	if err := e.c.CloseClient(k2); err != nil {
		t.Fatal(err)
	}
	unknown := protocol.ClientKey{ClientPrincipal: k1.ClientPrincipal, ClientNonce: 5}
	for _, err := range []error{e.c.Send(unknown, "x"), e.c.CloseClient(unknown), e.c.CloseClient(k2)} {
		if !errors.Is(err, ErrNotConnected) {
			t.Fatalf("want ErrNotConnected, got %v", err)
		}
	}
	ms, _ := e.drain(gw, 0)
	var s1, s2 uint64
	var t1, t2 []string
	for _, m := range forClient(t, ms, k1, &s1)[1:] {
		t1 = append(t1, m.app.Text)
	}
	for _, m := range forClient(t, ms, k2, &s2)[1:] {
		if r := closeReason(m); r != "" {
			t2 = append(t2, r)
			continue
		}
		t2 = append(t2, m.app.Text)
	}
	if fmt.Sprint(t1) != "[only one all]" || fmt.Sprint(t2) != "[all ClosedByApplication]" {
		t.Fatalf("k1 %v k2 %v", t1, t2)
	}
	if l := e.c.Received(k2); fmt.Sprint(l.Closes) != "[ClosedByApplication]" {
		t.Fatalf("log %+v", l)
	}
}

func TestLoggedTextsAreBounded(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxLoggedTexts = 3 })
	gw := newPrincipal(t, 1)
	k := e.openClient(10, 1, gw)
	for i := 1; i <= 10; i++ {
		e.mustOk(e.appMessage(k, uint64(i), fmt.Sprint(i)))
	}
	if l := e.c.Received(k); fmt.Sprint(l.Texts) != "[8 9 10]" || l.Received != 10 {
		t.Fatalf("log %+v", l)
	}
}

func TestMetadata(t *testing.T) {
	e := newEnv(t, nil)
	did, ok := e.c.Metadata("candid:service")
	if !ok || !strings.Contains(string(did), `"ws_message" : (CanisterWsMessageArguments, opt AppMessage)`) {
		t.Fatalf("candid:service: %q", did)
	}
	if _, ok := e.c.Metadata("other"); ok {
		t.Fatal("unexpected metadata")
	}
}

func TestRunDrivesTimers(t *testing.T) {
	clock := newFakeClock()
	host := newFakeHost(t, clock)
	cfg := DefaultConfig()
	cfg.AckInterval = 30 * time.Millisecond
	cfg.KeepAliveTimeout = 10 * time.Millisecond
	// The canister's clock moves on its own here, so that the keep-alive check finds the client
	// stale.
	cfg.Now = time.Now
	c, err := New(cfg, host)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, clock: clock, host: host, c: c}
	gw := newPrincipal(t, 1)
	k := protocol.ClientKey{ClientPrincipal: newPrincipal(t, 10), ClientNonce: 1}
	clock.mu.Lock()
	clock.t = time.Now()
	clock.mu.Unlock()
	e.mustOk(e.open(k.ClientPrincipal, 1, gw))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if len(c.Clients()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("client never timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Old messages expire within milliseconds here, so look at what is left: the last message
	// must be the CloseMessage, and the log must say why.
	out := e.poll(gw, 0)
	ms := decodeMessages(t, out)
	if len(ms) == 0 || closeReason(ms[len(ms)-1]) != "KeepAliveTimeout" {
		t.Fatalf("last message is not CloseMessage KeepAliveTimeout: %d messages", len(ms))
	}
	if l := c.Received(k); fmt.Sprint(l.Closes) != "[KeepAliveTimeout]" {
		t.Fatalf("log %+v", l)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	done <- nil // for the cleanup
}

// BenchmarkEcho measures one ws_message (echo) plus a poll of its reply, without HTTP.
func BenchmarkEcho(b *testing.B) {
	t := &testing.T{}
	e := newEnv(t, nil)
	e.t = t
	gw := newPrincipal(t, 1)
	k := e.openClient(10, 1, gw)
	content, _ := candid.Marshal([]any{protocol.AppMessage{Text: "hello, benchmark", Timestamp: 1}})
	var none *protocol.AppMessage
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		arg, _ := candid.Marshal([]any{protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{ClientKey: k, SequenceNum: uint64(i + 1), Content: content}}, none})
		if _, err := e.c.Update(context.Background(), replica.Call{Caller: k.ClientPrincipal, Method: "ws_message", Arg: arg, Time: e.clock.Now()}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCandidServiceParses(t *testing.T) {
	desc, err := did.ParseDID([]rune(CandidService))
	if err != nil {
		t.Fatalf("demo.did does not parse: %v", err)
	}
	s := desc.String()
	for _, want := range []string{"ws_open", "ws_close", "ws_message", "ws_get_messages", "AppMessage"} {
		if !strings.Contains(s, want) {
			t.Fatalf("parsed service lacks %s:\n%s", want, s)
		}
	}
}
