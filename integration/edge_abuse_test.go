package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica/wscanister"
	"github.com/nats-io/nats.go/jetstream"
)

// TestGarbageAndEarlyDisconnects throws malformed first frames, text frames, oversized frames,
// silence, early disconnects and TCP resets at an edge process; each gets its close code (or
// nothing, when the peer is gone), and afterwards the edge holds no connections and the sessions
// bucket no sessions, and a normal client is still served.
func TestGarbageAndEarlyDisconnects(t *testing.T) {
	d := startDeployment(t, DeploymentOptions{
		NATSNodes: 1, Edges: 1, Submitters: 1, Pollers: 1,
		EdgeEnv: map[string]string{
			"ICWS_MAX_MESSAGE_BYTES": "65536",
			"ICWS_OPEN_TIMEOUT":      "2s",
			"ICWS_RESUME_GRACE":      "2s",
		},
	})
	edge := d.Edges[0]
	cid, err := principal.Decode(d.Replica.CanisterID)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		frame func(t *testing.T, gw principal.Principal) (int, []byte)
		raw   []byte // written to the TCP connection as is, instead of frame
		codes []int
	}{
		{name: "garbage binary", frame: func(*testing.T, principal.Principal) (int, []byte) {
			return websocket.BinaryMessage, []byte{0xff, 0x00, 0x13, 0x37, 0xde, 0xad}
		}, codes: []int{websocket.CloseProtocolError}},
		{name: "text frame", frame: func(*testing.T, principal.Principal) (int, []byte) {
			return websocket.TextMessage, []byte(`{"envelope":{}}`)
		}, codes: []int{websocket.CloseUnsupportedData}},
		{name: "cbor without envelope", frame: func(t *testing.T, _ principal.Principal) (int, []byte) {
			b, err := cbor.Marshal(map[string]int{"foo": 1})
			if err != nil {
				t.Fatal(err)
			}
			return websocket.BinaryMessage, b
		}, codes: []int{websocket.CloseProtocolError, websocket.ClosePolicyViolation}},
		// Only the header of a masked binary frame announcing 100 KiB: the edge must refuse on the
		// length alone (sending the payload would race its close and end in a reset).
		{name: "too large", raw: []byte{0x82, 0xff, 0, 0, 0, 0, 0, 1, 0x90, 0, 1, 2, 3, 4}, codes: []int{websocket.CloseMessageTooBig}},
		{name: "ws_message as first frame", frame: func(t *testing.T, gw principal.Principal) (int, []byte) {
			return websocket.BinaryMessage, fakeCallFrame(t, cid, "ws_message", []byte("DIDL\x00\x00"))
		}, codes: []int{websocket.ClosePolicyViolation}},
		{name: "ws_open for another gateway", frame: func(t *testing.T, gw principal.Principal) (int, []byte) {
			other, err := identity.NewRandomEd25519Identity()
			if err != nil {
				t.Fatal(err)
			}
			arg, err := candid.Marshal([]any{protocol.CanisterWsOpenArguments{ClientNonce: 7, GatewayPrincipal: other.Sender()}})
			if err != nil {
				t.Fatal(err)
			}
			return websocket.BinaryMessage, fakeCallFrame(t, cid, "ws_open", arg)
		}, codes: []int{websocket.ClosePolicyViolation}},
		{name: "no first frame", codes: []int{websocket.ClosePolicyViolation}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws, gw := rawDial(t, edge.WSURL)
			defer ws.Close()
			switch {
			case tc.raw != nil:
				if _, err := ws.NetConn().Write(tc.raw); err != nil {
					t.Fatalf("write: %v", err)
				}
			case tc.frame != nil:
				typ, b := tc.frame(t, gw)
				if err := ws.WriteMessage(typ, b); err != nil {
					t.Fatalf("write: %v", err)
				}
			}
			code, reason := readClose(t, ws, 10*time.Second)
			if !slices.Contains(tc.codes, code) {
				t.Fatalf("close code %d (%q), want one of %v", code, reason, tc.codes)
			}
			t.Logf("closed with %d %q", code, reason)
		})
	}

	t.Run("disconnect before handshake", func(t *testing.T) {
		ws, resp, err := websocket.DefaultDialer.Dial(edge.WSURL, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		resp.Body.Close()
		ws.NetConn().Close()
	})
	t.Run("disconnect after handshake", func(t *testing.T) {
		ws, _ := rawDial(t, edge.WSURL)
		ws.NetConn().Close()
	})
	t.Run("reset mid frame", func(t *testing.T) {
		ws, _ := rawDial(t, edge.WSURL)
		// A masked binary frame header announcing 4 KiB, then 3 bytes, then RST.
		if _, err := ws.NetConn().Write([]byte{0x82, 0xfe, 0x10, 0x00, 1, 2, 3, 4, 0xaa, 0xbb, 0xcc}); err != nil {
			t.Fatal(err)
		}
		resetConn(t, ws.NetConn())
	})
	t.Run("reset of an open session", func(t *testing.T) {
		var conns []net.Conn
		c := dialClientWith(t, edge.WSURL, d.Replica.URL, d.Replica.CanisterID, dialOptions{}, func(nc net.Conn) { conns = append(conns, nc) })
		c.sendTexts([]string{"hi"})
		assertSameTexts(t, "echo", c.receiveTexts(1, 20*time.Second), []string{"hi"})
		if len(conns) != 1 {
			t.Fatalf("captured %d TCP connections, want 1", len(conns))
		}
		reset := time.Now()
		resetConn(t, conns[0])
		// Resume grace (2 s) over, the gateway closes the session itself.
		waitCanisterLog(t, d.Replica.Control, c.Key, 30*time.Second, "ws_close after reset", func(l wscanister.ClientLog) error {
			if l.Open || !slices.Contains(l.Closes, "ws_close") {
				return fmt.Errorf("open=%v closes=%v", l.Open, l.Closes)
			}
			return nil
		})
		t.Logf("ws_close reached the canister %s after the TCP reset", time.Since(reset).Round(time.Millisecond))
	})

	// Nothing left behind: no connections on the edge, no sessions in KV.
	testkit.WaitForNil(t, 20*time.Second, 100*time.Millisecond, "icws_edge_connections = 0", func() error {
		v, err := metricValue(edge.AdminURL+"/metrics", "icws_edge_connections")
		if err != nil {
			return err
		}
		if v != 0 {
			return fmt.Errorf("icws_edge_connections = %v", v)
		}
		return nil
	})
	nc := d.NATS.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := bus.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForNil(t, 20*time.Second, 200*time.Millisecond, "empty sessions bucket", func() error {
		lister, err := h.Sessions.ListKeys(ctx)
		if err != nil {
			return err
		}
		var keys []string
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		if len(keys) > 0 {
			return fmt.Errorf("sessions left: %v", keys)
		}
		return nil
	})
	if exited, err := edge.Proc.Exited(); exited {
		t.Fatalf("edge exited: %v", err)
	}

	// And the edge still serves a well-behaved client.
	c := dialClient(t, edge.WSURL, d.Replica.URL, d.Replica.CanisterID, dialOptions{})
	c.sendTexts([]string{"still here"})
	assertSameTexts(t, "echo", c.receiveTexts(1, 20*time.Second), []string{"still here"})
}

// rawDial opens a plain WebSocket to the edge and reads the handshake.
func rawDial(t *testing.T, url string) (*websocket.Conn, principal.Principal) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read handshake: %v", err)
	}
	if typ != websocket.BinaryMessage {
		t.Fatalf("handshake frame type %d", typ)
	}
	h, err := protocol.DecodeHandshake(b)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	gw := h.Gateway()
	ws.SetReadDeadline(time.Time{})
	return ws, gw
}

// readClose reads until the connection ends and returns the close code and reason
// (1006 when the connection ended without a close frame).
func readClose(t *testing.T, ws *websocket.Conn, timeout time.Duration) (int, string) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(timeout))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no close within %s", timeout)
		}
		return websocket.CloseAbnormalClosure, err.Error()
	}
}

// resetConn closes a TCP connection with RST instead of FIN.
func resetConn(t *testing.T, c net.Conn) {
	t.Helper()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("not a TCP connection: %T", c)
	}
	if err := tc.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	tc.Close()
}

// fakeCallFrame is a client frame {envelope} with an unsigned call content: the edge decodes but
// does not verify, so it is enough to exercise the first-frame checks.
func fakeCallFrame(t *testing.T, canister principal.Principal, method string, arg []byte) []byte {
	t.Helper()
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	env, err := cbor.Marshal(map[string]any{
		"content": map[string]any{
			"request_type":   "call",
			"canister_id":    canister.Raw,
			"method_name":    method,
			"arg":            arg,
			"sender":         id.Sender().Raw,
			"ingress_expiry": uint64(time.Now().Add(3 * time.Minute).UnixNano()),
			"nonce":          []byte("0123456789abcdef"),
		},
		"sender_pubkey": id.PublicKey(),
		"sender_sig":    bytes.Repeat([]byte{1}, 64),
	})
	if err != nil {
		t.Fatal(err)
	}
	frame, err := protocol.EncodeClientFrame(env)
	if err != nil {
		t.Fatal(err)
	}
	return frame
}

// metricValue reads one unlabelled sample from a Prometheus text endpoint.
func metricValue(url, name string) (float64, error) {
	code, body, err := httpGet(context.Background(), url)
	if err != nil {
		return 0, err
	}
	if code != 200 {
		return 0, fmt.Errorf("GET %s: status %d", url, code)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("GET %s: no sample %s", url, name)
}
