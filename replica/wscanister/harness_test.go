package wscanister

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
	"github.com/icws/icws/replica"
)

// fakeHost records certified data and signs data certificates with its own root key, the way the
// replica does, so tests can run the client's full check on every poll.
type fakeHost struct {
	id      principal.Principal
	auth    *certauth.Authority
	rootDER []byte
	clock   *fakeClock

	mu        sync.Mutex
	certified []byte
	sets      int
}

func newFakeHost(t *testing.T, clock *fakeClock) *fakeHost {
	t.Helper()
	auth, err := certauth.New(certauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeHost{
		id:      principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai"),
		auth:    auth,
		rootDER: auth.RootKey(),
		clock:   clock,
	}
}

func (h *fakeHost) CanisterID() principal.Principal { return h.id }

func (h *fakeHost) SetCertifiedData(data []byte) error {
	if len(data) > 32 {
		return fmt.Errorf("certified data too long: %d", len(data))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.certified = append([]byte(nil), data...)
	h.sets++
	return nil
}

func (h *fakeHost) certifiedData() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]byte(nil), h.certified...)
}

// dataCertificate builds what ic0.data_certificate returns: a signed tree with time and
// canister/<id>/certified_data.
func (h *fakeHost) dataCertificate() ([]byte, error) {
	return h.auth.Certificate(h.id, h.certifiedData(), h.clock.Now())
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one canister under test with a fake host and clock.
type env struct {
	t     *testing.T
	clock *fakeClock
	host  *fakeHost
	c     *Canister
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.AckInterval = 300 * time.Second
	cfg.KeepAliveTimeout = 60 * time.Second
	return cfg
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	clock := newFakeClock()
	host := newFakeHost(t, clock)
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	cfg.Now = clock.Now
	c, err := New(cfg, host)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, clock: clock, host: host, c: c}
}

func newPrincipal(t *testing.T, seed byte) principal.Principal {
	t.Helper()
	pub := bytes.Repeat([]byte{seed}, 44)
	return principal.NewSelfAuthenticating(pub)
}

// openClient opens a session of the client newPrincipal(seed) with nonce through gw and returns
// its key.
func (e *env) openClient(seed byte, nonce uint64, gw principal.Principal) protocol.ClientKey {
	e.t.Helper()
	k := protocol.ClientKey{ClientPrincipal: newPrincipal(e.t, seed), ClientNonce: nonce}
	e.mustOk(e.open(k.ClientPrincipal, nonce, gw))
	return k
}

func (e *env) update(caller principal.Principal, method string, args ...any) ([]byte, error) {
	arg, err := candid.Marshal(args)
	if err != nil {
		e.t.Fatalf("marshal %s: %v", method, err)
	}
	return e.c.Update(context.Background(), replica.Call{Caller: caller, Method: method, Arg: arg, Time: e.clock.Now()})
}

// result decodes a variant { Ok; Err : text } reply; it fails the test on a reject.
func (e *env) result(reply []byte, err error) (string, bool) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("call rejected: %v", err)
	}
	var r protocol.CanisterWsResult
	if err := candid.Unmarshal(reply, []any{&r}); err != nil {
		e.t.Fatalf("decode result: %v", err)
	}
	if r.Err != nil {
		return *r.Err, false
	}
	return "", true
}

func (e *env) mustOk(reply []byte, err error) {
	e.t.Helper()
	if msg, ok := e.result(reply, err); !ok {
		e.t.Fatalf("want Ok, got Err %q", msg)
	}
}

// errOf fails the test unless the reply is Err, and returns its message.
func (e *env) errOf(reply []byte, err error) string {
	e.t.Helper()
	msg, ok := e.result(reply, err)
	if ok {
		e.t.Fatal("want Err, got Ok")
	}
	return msg
}

func (e *env) mustContain(msg, sub string) {
	e.t.Helper()
	if !strings.Contains(msg, sub) {
		e.t.Fatalf("want Err containing %q, got %q", sub, msg)
	}
}

func (e *env) open(client principal.Principal, nonce uint64, gw principal.Principal) ([]byte, error) {
	return e.update(client, "ws_open", protocol.CanisterWsOpenArguments{ClientNonce: nonce, GatewayPrincipal: gw})
}

func (e *env) wsMessage(k protocol.ClientKey, seq uint64, service bool, content []byte) ([]byte, error) {
	var none *protocol.AppMessage
	return e.update(k.ClientPrincipal, "ws_message", protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{
		ClientKey: k, SequenceNum: seq, Timestamp: uint64(e.clock.Now().UnixNano()), IsServiceMessage: service, Content: content,
	}}, none)
}

func (e *env) appMessage(k protocol.ClientKey, seq uint64, text string) ([]byte, error) {
	b, err := candid.Marshal([]any{protocol.AppMessage{Text: text, Timestamp: uint64(e.clock.Now().UnixNano())}})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.wsMessage(k, seq, false, b)
}

func (e *env) keepAlive(k protocol.ClientKey, seq, last uint64) ([]byte, error) {
	b, err := candid.Marshal([]any{protocol.WebsocketServiceMessageContent{
		KeepAliveMessage: &protocol.ClientKeepAliveMessageContent{LastIncomingSequenceNum: last},
	}})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.wsMessage(k, seq, true, b)
}

func (e *env) close(gw principal.Principal, k protocol.ClientKey) ([]byte, error) {
	return e.update(gw, "ws_close", protocol.CanisterWsCloseArguments{ClientKey: k})
}

// poll runs ws_get_messages as a query and verifies the reply as a client would: the certificate's
// signature and certified_data, the tree's root, and every message's leaf.
func (e *env) poll(gw principal.Principal, nonce uint64) protocol.CanisterOutputCertifiedMessages {
	e.t.Helper()
	arg, err := candid.Marshal([]any{protocol.CanisterWsGetMessagesArguments{Nonce: nonce}})
	if err != nil {
		e.t.Fatal(err)
	}
	reply, err := e.c.Query(context.Background(), replica.Call{
		Caller: gw, Method: "ws_get_messages", Arg: arg, Time: e.clock.Now(), DataCertificate: e.host.dataCertificate,
	})
	if err != nil {
		e.t.Fatalf("ws_get_messages: %v", err)
	}
	var r protocol.CanisterWsGetMessagesResult
	if err := candid.Unmarshal(reply, []any{&r}); err != nil {
		e.t.Fatalf("decode ws_get_messages: %v", err)
	}
	if r.Ok == nil {
		e.t.Fatalf("ws_get_messages returned Err %q", *r.Err)
	}
	out := *r.Ok
	if len(out.Messages) == 0 {
		if len(out.Cert) != 0 || len(out.Tree) != 0 || !out.IsEndOfQueue {
			e.t.Fatalf("empty batch must have empty cert and tree and is_end_of_queue: %+v", out)
		}
		return out
	}
	if err := verifyBatch(e.host.id, e.host.rootDER, out); err != nil {
		e.t.Fatalf("verify batch from nonce %d: %v", nonce, err)
	}
	return out
}

// verifyBatch is the client's check (SDK isMessageBodyValid) for every message of a batch.
func verifyBatch(canister principal.Principal, rootDER []byte, out protocol.CanisterOutputCertifiedMessages) error {
	cert, err := certificate.Decode(out.Cert)
	if err != nil {
		return fmt.Errorf("decode cert: %w", err)
	}
	if err := cert.Verify(rootDER, canister.Raw); err != nil {
		return fmt.Errorf("verify cert: %w", err)
	}
	certified, st := cert.Tree.Lookup([]byte("canister"), canister.Raw, []byte("certified_data"))
	if st != hashtree.Found {
		return fmt.Errorf("certified_data is %s", st)
	}
	if !bytes.HasPrefix(out.Tree, protocol.SelfDescribeTag) {
		return errors.New("tree lacks the self-describe tag")
	}
	tree, err := hashtree.Decode(out.Tree)
	if err != nil {
		return fmt.Errorf("decode tree: %w", err)
	}
	root := tree.Digest()
	if !bytes.Equal(root[:], certified) {
		return fmt.Errorf("tree root %x != certified_data %x", root, certified)
	}
	for _, m := range out.Messages {
		leaf, st := tree.Lookup([]byte(labelWebsocket), []byte(m.Key))
		if st != hashtree.Found {
			return fmt.Errorf("lookup %s: %s", m.Key, st)
		}
		sum := sha256.Sum256(m.Content)
		if !bytes.Equal(leaf, sum[:]) {
			return fmt.Errorf("leaf of %s is not sha256(content)", m.Key)
		}
	}
	return nil
}

// decoded is one canister message, decoded for assertions.
type decoded struct {
	key     string
	nonce   uint64
	msg     protocol.WebsocketMessage
	service protocol.WebsocketServiceMessageContent
	app     protocol.AppMessage
}

func decodeMessages(t *testing.T, out protocol.CanisterOutputCertifiedMessages) []decoded {
	t.Helper()
	res := make([]decoded, 0, len(out.Messages))
	for _, m := range out.Messages {
		wm, err := protocol.DecodeWebsocketMessageCBOR(m.Content)
		if err != nil {
			t.Fatal(err)
		}
		if !wm.ClientKey.Equal(m.ClientKey) {
			t.Fatalf("content client key %s != output client key %s", wm.ClientKey, m.ClientKey)
		}
		n, err := protocol.MessageKeyNonce(m.Key)
		if err != nil {
			t.Fatal(err)
		}
		d := decoded{key: m.Key, nonce: n, msg: wm}
		if wm.IsServiceMessage {
			if err := candid.Unmarshal(wm.Content, []any{&d.service}); err != nil {
				t.Fatalf("decode service message: %v", err)
			}
		} else if err := candid.Unmarshal(wm.Content, []any{&d.app}); err != nil {
			t.Fatalf("decode app message: %v", err)
		}
		res = append(res, d)
	}
	return res
}

// drain polls from nonce until the end of the queue and returns every message, checking that the
// nonces are consecutive.
func (e *env) drain(gw principal.Principal, nonce uint64) ([]decoded, uint64) {
	e.t.Helper()
	var all []decoded
	for {
		out := e.poll(gw, nonce)
		ms := decodeMessages(e.t, out)
		for _, m := range ms {
			if m.nonce != nonce {
				e.t.Fatalf("want nonce %d, got %d (%s)", nonce, m.nonce, m.key)
			}
			nonce++
		}
		all = append(all, ms...)
		if out.IsEndOfQueue {
			return all, nonce
		}
	}
}

// forClient keeps the messages of one client and checks their sequence numbers continue from
// *seq.
func forClient(t *testing.T, ms []decoded, k protocol.ClientKey, seq *uint64) []decoded {
	t.Helper()
	var out []decoded
	for _, m := range ms {
		if !m.msg.ClientKey.Equal(k) {
			continue
		}
		*seq++
		if m.msg.SequenceNum != *seq {
			t.Fatalf("client %s: want sequence %d, got %d", k, *seq, m.msg.SequenceNum)
		}
		out = append(out, m)
	}
	return out
}

func closeReason(m decoded) string {
	if m.service.CloseMessage == nil {
		return ""
	}
	return m.service.CloseMessage.Reason.String()
}
