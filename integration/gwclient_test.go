package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/client"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica/wscanister"
)

// syncBuffer is a log sink shared by a client's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// testClient is a Go client session plus what the test needs around it.
type testClient struct {
	*client.Conn
	t   testing.TB
	Key protocol.ClientKey
}

// dialOptions tune dialClient.
type dialOptions struct {
	AckInterval time.Duration // the canister's ack interval; 0 = client default (300 s)
	Resume      bool
}

// dialClient opens a session with a fresh Ed25519 identity and waits for the OpenMessage. The
// client's debug log is dumped (tail) if the test fails; the session is closed in Cleanup.
func dialClient(t testing.TB, gatewayURL, icURL, canister string, o dialOptions) *testClient {
	t.Helper()
	return dialClientWith(t, gatewayURL, icURL, canister, o, nil)
}

// dialClientWith is dialClient; onConn, if set, sees every TCP connection the client opens.
func dialClientWith(t testing.TB, gatewayURL, icURL, canister string, o dialOptions, onConn func(net.Conn)) *testClient {
	t.Helper()
	dialer := &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	if onConn != nil {
		var nd net.Dialer
		dialer.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err == nil {
				onConn(c)
			}
			return c, err
		}
	}
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	cid, err := principal.Decode(canister)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	start := time.Now()
	conn, err := client.Dial(ctx, client.Config{
		GatewayURL:  gatewayURL,
		ICURL:       icURL,
		Canister:    cid,
		Identity:    id,
		AckInterval: o.AckInterval,
		Resume:      o.Resume,
		Dialer:      dialer,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("----- client %s log (tail) -----\n%s", id.Sender().Encode(), tail(logs.Bytes(), dumpTailBytes))
		}
	})
	if err != nil {
		t.Fatalf("client.Dial %s: %v", gatewayURL, err)
	}
	t.Logf("client %s open after %s", conn.ClientKey().Token(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { conn.Close() })
	return &testClient{Conn: conn, t: t, Key: conn.ClientKey()}
}

// appMessage is the Candid of the demo app's AppMessage.
func appMessage(t testing.TB, text string) []byte {
	t.Helper()
	b, err := client.EncodeAppMessage(protocol.AppMessage{Text: text, Timestamp: uint64(time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sendTexts sends texts as app messages, back to back.
func (c *testClient) sendTexts(texts []string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range texts {
		if err := c.Send(ctx, appMessage(c.t, s)); err != nil {
			c.t.Fatalf("send %q: %v", s, err)
		}
	}
}

// receiveTexts reads n app messages and returns their texts; it fails the test if the connection
// ends or nothing complete arrives within timeout.
func (c *testClient) receiveTexts(n int, timeout time.Duration) []string {
	c.t.Helper()
	out, err := c.collectTexts(n, timeout)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// collectTexts is receiveTexts for other goroutines than the test's.
func (c *testClient) collectTexts(n int, timeout time.Duration) ([]string, error) {
	out := make([]string, 0, n)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for len(out) < n {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return out, fmt.Errorf("connection ended after %d of %d messages: %v", len(out), n, c.Err())
			}
			am, err := client.DecodeAppMessage(m.Content)
			if err != nil {
				return out, fmt.Errorf("message seq %d: %w", m.Seq, err)
			}
			out = append(out, am.Text)
		case <-timer.C:
			return out, fmt.Errorf("received %d of %d messages in %s (last %q)", len(out), n, timeout, lastOf(out))
		}
	}
	return out, nil
}

func lastOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// numbered returns prefix1 … prefixN.
func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	return out
}

// assertSameTexts compares in order and reports the first difference.
func assertSameTexts(t testing.TB, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at %d: got %q, want %q (got %d, want %d texts)", what, i, got[i], want[i], len(got), len(want))
		}
	}
	t.Fatalf("%s: got %d texts, want %d", what, len(got), len(want))
}

// waitCanisterLog polls the control API until cond accepts the client's log.
func waitCanisterLog(t testing.TB, ctl *wscanister.ControlClient, key protocol.ClientKey, timeout time.Duration, what string, cond func(wscanister.ClientLog) error) wscanister.ClientLog {
	t.Helper()
	var last wscanister.ClientLog
	testkit.WaitForNil(t, timeout, 50*time.Millisecond, what, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l, err := ctl.Received(ctx, key)
		if err != nil {
			return err
		}
		last = l
		return cond(l)
	})
	return last
}

// waitEnded waits for the session to end and returns its error.
func (c *testClient) waitEnded(timeout time.Duration) error {
	c.t.Helper()
	go func() {
		// Drain, so a full message buffer does not hold the reader.
		for range c.Messages() {
		}
	}()
	select {
	case <-c.Done():
		return c.Err()
	case <-time.After(timeout):
		c.t.Fatalf("session still open after %s", timeout)
		return errors.New("unreachable")
	}
}
