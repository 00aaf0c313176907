package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica/wscanister"
)

func defaultCanister() wscanister.Config {
	c := wscanister.DefaultConfig()
	return c
}

func ed25519ID(t *testing.T) identity.Identity {
	t.Helper()
	id := testkit.NewIdentity(t)
	return id
}

func secp256k1ID(t *testing.T) identity.Identity {
	t.Helper()
	id, err := identity.NewRandomSecp256k1Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func dial(t *testing.T, cfg Config) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *Conn, text string) {
	t.Helper()
	b, err := EncodeAppMessage(protocol.AppMessage{Text: text, Timestamp: uint64(time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(context.Background(), b); err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
}

// receive reads the next app message, failing after a deadline.
// echoed sends text and checks that the canister's next message echoes it.
func echoed(t *testing.T, c *Conn, text string) {
	t.Helper()
	send(t, c, text)
	if _, app := receive(t, c); app.Text != text {
		t.Fatalf("echo = %q, want %q", app.Text, text)
	}
}

func receive(t *testing.T, c *Conn) (Message, protocol.AppMessage) {
	t.Helper()
	select {
	case m, ok := <-c.Messages():
		if !ok {
			t.Fatalf("connection ended: %v", c.Err())
		}
		app, err := DecodeAppMessage(m.Content)
		if err != nil {
			t.Fatal(err)
		}
		return m, app
	case <-time.After(20 * time.Second):
		t.Fatal("no message within 20s")
	}
	panic("unreachable")
}

func TestOpenEchoBurstClose(t *testing.T) {
	e := startEnv(t, defaultCanister(), false)
	for name, mk := range map[string]func(*testing.T) identity.Identity{"ed25519": ed25519ID, "secp256k1": secp256k1ID} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, e.config(t, mk(t)))
			if !c.Gateway().Equal(e.gw.id.Sender()) {
				t.Fatalf("gateway %s, want %s", c.Gateway(), e.gw.id.Sender())
			}
			send(t, c, "hello")
			m, app := receive(t, c)
			if app.Text != "hello" || m.Seq != 2 {
				t.Fatalf("echo = %+v (seq %d)", app, m.Seq)
			}
			send(t, c, "burst:100")
			for i := 1; i <= 100; i++ {
				m, app := receive(t, c)
				if want := fmt.Sprintf("burst:%d", i); app.Text != want || m.Seq != uint64(2+i) {
					t.Fatalf("message %d = %q seq %d, want %q seq %d", i, app.Text, m.Seq, want, 2+i)
				}
			}
			log := e.can.Received(c.ClientKey())
			if log.Received != 2 || log.SequenceErrors != 0 || !log.Open {
				t.Fatalf("canister log = %+v", log)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if c.Err() != nil {
				t.Fatalf("Err after Close = %v", c.Err())
			}
			if _, ok := <-c.Messages(); ok {
				t.Fatal("Messages not closed after Close")
			}
			if err := c.Send(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
				t.Fatalf("Send after Close = %v", err)
			}
		})
	}
}

// With a 3 s ack interval the canister acks and the client answers with keep-alives; the
// connection must survive several rounds and the canister must count the keep-alives. (The
// keep-alive timeout leaves room for a loaded machine: poll, verify, sign and relay must fit in it.)
func TestAckKeepAlive(t *testing.T) {
	cc := defaultCanister()
	cc.AckInterval, cc.KeepAliveTimeout = 3*time.Second, 2500*time.Millisecond
	e := startEnv(t, cc, false)
	cfg := e.config(t, ed25519ID(t))
	cfg.AckInterval = 3 * time.Second
	c := dial(t, cfg)
	send(t, c, "one")
	receive(t, c)
	testkit.WaitFor(t, 20*time.Second, "2 keep-alives", func() bool { return e.can.Received(c.ClientKey()).KeepAlives >= 2 })
	send(t, c, "two")
	if _, app := receive(t, c); app.Text != "two" {
		t.Fatalf("echo = %q", app.Text)
	}
	log := e.can.Received(c.ClientKey())
	if !log.Open || log.SequenceErrors != 0 || len(log.Closes) != 0 {
		t.Fatalf("canister log = %+v", log)
	}
	select {
	case <-c.Done():
		t.Fatalf("connection ended: %v", c.Err())
	default:
	}
}

// A client that never answers acks is closed by the canister with KeepAliveTimeout; the client
// surfaces the CloseMessage.
func TestCanisterCloseMessage(t *testing.T) {
	e := startEnv(t, defaultCanister(), false)
	c := dial(t, e.config(t, ed25519ID(t)))
	if err := e.can.CloseClient(c.ClientKey()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("not closed")
	}
	if !errors.Is(c.Err(), ErrClosedByApplication) {
		t.Fatalf("Err = %v, want ErrClosedByApplication", c.Err())
	}
}

func TestTamperedFrameClosesWithError(t *testing.T) {
	e := startEnv(t, defaultCanister(), false)
	c := dial(t, e.config(t, ed25519ID(t)))
	e.gw.tamper.Store(true)
	send(t, c, "hello")
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("tampered frame did not close the connection")
	}
	if !errors.Is(c.Err(), ErrInvalidMessage) || !errors.Is(c.Err(), protocol.ErrContentHash) {
		t.Fatalf("Err = %v, want ErrInvalidMessage wrapping ErrContentHash", c.Err())
	}
	for m := range c.Messages() {
		t.Fatalf("delivered %+v after tampering", m)
	}
}

func TestWrongRootKeyFailsOpen(t *testing.T) {
	e := startEnv(t, defaultCanister(), false)
	cfg := e.config(t, ed25519ID(t))
	other := startEnv(t, defaultCanister(), false)
	cfg.RootKey = other.rootKey
	_, err := Dial(context.Background(), cfg)
	if !errors.Is(err, protocol.ErrCertificateSignature) {
		t.Fatalf("Dial = %v, want a certificate signature error", err)
	}
}

// Drops in the middle of a burst: the client resumes, gets exactly the missing messages in order,
// and re-sends what the gateway never got.
func TestResume(t *testing.T) {
	e := startEnv(t, defaultCanister(), true)
	cfg := e.config(t, ed25519ID(t))
	cfg.Resume = true
	c := dial(t, cfg)
	echoed(t, c, "hello")
	e.gw.dropBeforeSeq.Store(40)
	send(t, c, "burst:100")
	for i := 1; i <= 100; i++ {
		m, app := receive(t, c)
		if want := fmt.Sprintf("burst:%d", i); app.Text != want || m.Seq != uint64(2+i) {
			t.Fatalf("message %d = %q seq %d, want %q seq %d", i, app.Text, m.Seq, want, 2+i)
		}
	}
	if c.Resumes() != 1 || e.gw.drops.Load() != 1 {
		t.Fatalf("resumes %d, drops %d; want 1, 1", c.Resumes(), e.gw.drops.Load())
	}
	// Messages sent while the socket is down are queued and sent on resume.
	e.gw.dropAll()
	send(t, c, "while down")
	if _, app := receive(t, c); app.Text != "while down" {
		t.Fatalf("echo = %q", app.Text)
	}
	testkit.WaitFor(t, 10*time.Second, "second resume", func() bool { return c.Resumes() == 2 })
	if c.Resent() < 1 {
		t.Fatalf("resent = %d, want the message sent while down to be re-sent", c.Resent())
	}
	log := e.can.Received(c.ClientKey())
	if log.Received != 3 || log.SequenceErrors != 0 || !log.Open {
		t.Fatalf("canister log = %+v", log)
	}
}

func TestResumeRefused(t *testing.T) {
	e := startEnv(t, defaultCanister(), true)
	cfg := e.config(t, ed25519ID(t))
	cfg.Resume = true
	c := dial(t, cfg)
	// Forget every token, as a gateway whose grace period ran out would.
	e.gw.mu.Lock()
	clear(e.gw.tokens)
	e.gw.mu.Unlock()
	e.gw.dropAll()
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("not ended")
	}
	if !errors.Is(c.Err(), ErrNotResumable) {
		t.Fatalf("Err = %v, want ErrNotResumable", c.Err())
	}
}

func TestDropWithoutResumeEnds(t *testing.T) {
	e := startEnv(t, defaultCanister(), false)
	c := dial(t, e.config(t, ed25519ID(t)))
	e.gw.dropAll()
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("not ended")
	}
	if !errors.Is(c.Err(), ErrConnectionLost) {
		t.Fatalf("Err = %v, want ErrConnectionLost", c.Err())
	}
}

// The SDK's watchdog: once something was sent, an AckMessage must come every ack interval plus
// the latency bound, or the client gives up.
func TestAckWatchdog(t *testing.T) {
	e := startEnv(t, defaultCanister(), false) // the canister acks every 300 s
	cfg := e.config(t, ed25519ID(t))
	cfg.AckInterval, cfg.LatencyBound = 300*time.Millisecond, 300*time.Millisecond
	c := dial(t, cfg)
	send(t, c, "hello")
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("watchdog did not fire")
	}
	if !errors.Is(c.Err(), ErrAckTimeout) {
		t.Fatalf("Err = %v, want ErrAckTimeout", c.Err())
	}
}

// A gateway that goes silent without closing the socket (half-open TCP) is noticed by the ping
// watchdog and the session resumes on a new connection.
func TestResumeAfterSilentGateway(t *testing.T) {
	e := startEnv(t, defaultCanister(), true)
	cfg := e.config(t, ed25519ID(t))
	cfg.Resume, cfg.PingInterval = true, 200*time.Millisecond
	c := dial(t, cfg)
	echoed(t, c, "before")
	e.gw.freezeAll()
	send(t, c, "after")
	m, app := receive(t, c)
	if app.Text != "after" || m.Seq != 3 {
		t.Fatalf("echo = %q seq %d", app.Text, m.Seq)
	}
	if c.Resumes() != 1 {
		t.Fatalf("resumes = %d, want 1", c.Resumes())
	}
	if log := e.can.Received(c.ClientKey()); log.Received != 2 || log.SequenceErrors != 0 {
		t.Fatalf("canister log = %+v", log)
	}
}

// A gateway that announces heartbeats and then hangs (no frames, no pongs) is left after twice the
// heartbeat interval, long before the ping watchdog would notice; heartbeats are never delivered as
// messages and an idle session with heartbeats never resumes.
func TestResumeAfterHeartbeatsStop(t *testing.T) {
	e := startEnv(t, defaultCanister(), true)
	e.gw.heartbeat = 250 * time.Millisecond
	cfg := e.config(t, ed25519ID(t))
	cfg.Resume, cfg.PingInterval = true, time.Minute
	c := dial(t, cfg)
	echoed(t, c, "before")
	// Idle for many heartbeat intervals: nothing delivered, nothing resumed.
	select {
	case m := <-c.Messages():
		t.Fatalf("message %d while idle", m.Seq)
	case <-time.After(8 * e.gw.heartbeat):
	}
	if c.Resumes() != 0 {
		t.Fatalf("resumes = %d while heartbeats flowed", c.Resumes())
	}
	e.gw.freezeAll()
	send(t, c, "after")
	m, app := receive(t, c)
	if app.Text != "after" || m.Seq != 3 {
		t.Fatalf("echo = %q seq %d", app.Text, m.Seq)
	}
	if c.Resumes() != 1 {
		t.Fatalf("resumes = %d, want 1", c.Resumes())
	}
}

// Close code 4103 (the gateway lost its message bus) is a resumable drop, resumed at once.
func TestResumeAfterResumeElsewhere(t *testing.T) {
	e := startEnv(t, defaultCanister(), true)
	cfg := e.config(t, ed25519ID(t))
	cfg.Resume = true
	cfg.ReconnectMin = time.Minute // only the immediate first attempt can resume in time
	c := dial(t, cfg)
	echoed(t, c, "before")
	e.gw.closeAll(CloseResumeElsewhere, "icws: edge lost its message bus, resume elsewhere")
	send(t, c, "after")
	m, app := receive(t, c)
	if app.Text != "after" || m.Seq != 3 {
		t.Fatalf("echo = %q seq %d", app.Text, m.Seq)
	}
	if c.Resumes() != 1 {
		t.Fatalf("resumes = %d, want 1", c.Resumes())
	}
}

func TestIsHeartbeat(t *testing.T) {
	hb, err := cbor.Marshal(protocol.Heartbeat{})
	if err != nil {
		t.Fatal(err)
	}
	withKey, _ := cbor.Marshal(map[string]any{"icws_heartbeat": map[string]any{"later": 1}})
	for _, tc := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"heartbeat", hb, true},
		{"tagged heartbeat", append(append([]byte{}, protocol.SelfDescribeTag...), hb...), true},
		{"heartbeat with more keys", withKey, true},
		{"resume answer", []byte("\xa1\x6cicws_resumed\xa1\x6flast_client_seq\x00"), false},
		{"empty", nil, false},
		{"not CBOR", []byte("icws_heartbeat"), false},
		{"large frame", append(hb, make([]byte, maxHeartbeatFrame)...), false},
	} {
		if got := isHeartbeat(tc.frame); got != tc.want {
			t.Errorf("%s: isHeartbeat(%x) = %v, want %v", tc.name, tc.frame, got, tc.want)
		}
	}
}

func FuzzIsHeartbeat(f *testing.F) {
	hb, _ := cbor.Marshal(protocol.Heartbeat{})
	f.Add(hb)
	f.Add([]byte("\xa1\x6cicws_resumed\xa1\x6flast_client_seq\x00"))
	f.Add([]byte{0xd9, 0xd9, 0xf7, 0xa0})
	f.Fuzz(func(t *testing.T, frame []byte) {
		_ = isHeartbeat(frame)
	})
}

// A resume whose answer is lost after the gateway took the session over (its token rotated to the
// lost connection's) is retried with that connection's token: the session survives.
func TestResumeAfterLostResumeAnswers(t *testing.T) {
	e := startEnv(t, defaultCanister(), true)
	cfg := e.config(t, ed25519ID(t))
	cfg.Resume = true
	c := dial(t, cfg)
	echoed(t, c, "before")
	e.gw.loseResumeAnswers.Store(2)
	e.gw.dropAll()
	send(t, c, "after")
	m, app := receive(t, c)
	if app.Text != "after" || m.Seq != 3 {
		t.Fatalf("echo = %q seq %d", app.Text, m.Seq)
	}
	if c.Resumes() != 1 || e.gw.loseResumeAnswers.Load() != 0 {
		t.Fatalf("resumes = %d, answers still to lose %d", c.Resumes(), e.gw.loseResumeAnswers.Load())
	}
}

// A connection that fails while the client re-sends its unacknowledged messages after a resume
// was answered leaves the session on the new connection's token: the next resume uses it and
// the messages arrive.
func TestResumeSurvivesAFailureWhileResending(t *testing.T) {
	e := startEnv(t, defaultCanister(), true)
	cfg := e.config(t, ed25519ID(t))
	cfg.Resume = true
	c := dial(t, cfg)
	echoed(t, c, "before")
	const n = 40 // enough unacknowledged messages that re-sending them meets the reset
	e.gw.discardClientMessages.Store(true)
	for i := range n {
		send(t, c, fmt.Sprintf("m%d", i))
	}
	testkit.WaitFor(t, 10*time.Second, "messages read and forgotten", func() bool { return e.gw.discarded.Load() == n })
	e.gw.resetAfterResumeAnswers.Store(1)
	e.gw.discardClientMessages.Store(false)
	e.gw.dropAll()
	for i := range n {
		if _, app := receive(t, c); app.Text != fmt.Sprintf("m%d", i) {
			t.Fatalf("echo %d = %q", i, app.Text)
		}
	}
	if e.gw.resetAfterResumeAnswers.Load() != 0 {
		t.Fatal("the resume was never answered and reset")
	}
}
