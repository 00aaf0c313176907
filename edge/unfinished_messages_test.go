package edge

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

// What a client sends is charged to its byte rate as it is read from the socket, frame headers
// included, and a message must be finished within ICWS_MESSAGE_TIMEOUT once it has begun; a first
// frame may be no larger than ICWS_MAX_FIRST_FRAME_BYTES. Otherwise a client could keep the edge
// parsing empty continuation frames without end, hold a half-sent message in memory for as long
// as it answers pings, or make the edge read and hash megabytes before it knows who sends them.
func TestClientsMustFinishTheirMessages(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.MaxClientBytesRate = 64 << 10
	cfg.MaxClientBytesBurst = 4 << 20
	cfg.MessageTimeout = time.Second
	e := v.startEdge(cfg)

	closeOf := func(t *testing.T, raw net.Conn, stop chan struct{}) (int, string) {
		t.Helper()
		frames := serverFrames(t, raw)
		defer close(stop)
		for {
			op, payload := frames()
			if op != 0x8 {
				continue
			}
			if len(payload) < 2 {
				return 0, ""
			}
			return int(binary.BigEndian.Uint16(payload)), string(payload[2:])
		}
	}
	for _, tc := range []struct {
		name       string
		opened     bool
		first      []byte // written once
		repeat     []byte // then written until the edge closes
		wantCode   int
		wantReason string
	}{
		{
			name: "empty continuation frames without end", opened: true,
			first: maskedFrame(false, 0x2, []byte("x")), repeat: bytes.Repeat(maskedFrame(false, 0x0, nil), 10_000),
			wantCode: websocket.ClosePolicyViolation, wantReason: reasonByteRateExceeded,
		},
		{
			name: "a message left unfinished", opened: true,
			first:    maskedFrame(false, 0x2, []byte("the beginning of a message")),
			wantCode: websocket.ClosePolicyViolation, wantReason: reasonMessageTimeout,
		},
		{
			name:  "empty continuation frames before the first frame",
			first: maskedFrame(false, 0x2, []byte("x")), repeat: bytes.Repeat(maskedFrame(false, 0x0, nil), 10_000),
			wantCode: websocket.CloseMessageTooBig, wantReason: errFirstFrameBytes.Error(),
		},
		{
			name:     "a first frame larger than a ws_open needs",
			first:    maskedBinaryFrame(make([]byte, 70_000)),
			wantCode: websocket.CloseMessageTooBig,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, v.gw, randomCanister(t))
			if tc.opened {
				c = openedClient(t, v, e.url, false)
			} else {
				c.dial(e.url, false)
			}
			raw := c.ws.UnderlyingConn()
			if _, err := raw.Write(tc.first); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			if tc.repeat != nil {
				go func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := raw.Write(tc.repeat); err != nil {
							return
						}
					}
				}()
			}
			code, reason := closeOf(t, raw, stop)
			if code != tc.wantCode || tc.wantReason != "" && reason != tc.wantReason {
				t.Fatalf("closed %d %q, want %d %q", code, reason, tc.wantCode, tc.wantReason)
			}
		})
	}
}

// Each connection's unfinished message is bounded, but many connections together are bounded only
// by ICWS_MAX_UNFINISHED_BYTES: above it a connection whose unfinished message is larger than a
// first frame may be is closed with 1013, while small messages and the unfinished messages already
// held go on.
func TestUnfinishedMessagesShareOneEdgeBudget(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.MaxMessageBytes = 64 << 10
	cfg.MaxUnfinishedBytes = 64 << 10
	cfg.MaxFirstFrameBytes = 4 << 10
	e := v.startEdge(cfg)
	held := func() int64 { return e.unfinished.Load() }
	waitHeld := func(want int64) {
		t.Helper()
		testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("the edge holding %d unfinished bytes", want), func() bool { return held() == want })
	}
	write := func(c *client, b []byte) {
		t.Helper()
		if _, err := c.ws.UnderlyingConn().Write(b); err != nil {
			t.Fatal(err)
		}
	}

	// a holds the first part of a genuine 40 KB message.
	a := openedClient(t, v, e.url, false)
	a.seq++
	aFrame, err := protocol.EncodeClientFrame(largeMessageEnvelope(t, a, a.seq, 40<<10))
	if err != nil {
		t.Fatal(err)
	}
	aFirst, aRest := maskedFrame(false, 0x2, aFrame[:len(aFrame)-100]), maskedFrame(true, 0x0, aFrame[len(aFrame)-100:])
	write(a, aFirst)
	waitHeld(int64(len(aFirst)))

	// b holds junk up to just below the budget, leaving less room than c's message needs.
	c := openedClient(t, v, e.url, false)
	c.seq++
	cFrame, err := protocol.EncodeClientFrame(c.messageEnvelope(c.seq, false))
	if err != nil {
		t.Fatal(err)
	}
	cMsg := maskedBinaryFrame(cFrame)
	b := openedClient(t, v, e.url, false)
	bPart := maskedFrame(false, 0x2, make([]byte, int(cfg.MaxUnfinishedBytes)-len(aFirst)-len(cMsg)/2-8))
	write(b, bPart)
	waitHeld(int64(len(aFirst) + len(bPart)))

	// c's small message takes the edge past the budget and is relayed all the same.
	write(c, cMsg)
	testkit.WaitFor(t, 5*time.Second, "c's message relayed", func() bool { return len(v.inMessages(inSubjectOf(v, c))) == 2 })

	// d's large unfinished message is not held: 1013, and nothing of it stays counted.
	d := openedClient(t, v, e.url, false)
	write(d, maskedFrame(false, 0x2, make([]byte, 8<<10)))
	if code, reason := expectClose(t, d.ws); code != websocket.CloseTryAgainLater || reason != reasonUnfinishedBudget {
		t.Fatalf("d closed %d %q, want %d %q", code, reason, websocket.CloseTryAgainLater, reasonUnfinishedBudget)
	}
	waitHeld(int64(len(aFirst) + len(bPart)))
	if n := testkit.MetricValue(t, e.m.refused.WithLabelValues("unfinished_budget")); n != 1 {
		t.Fatalf("refused for the budget: %v, want 1", n)
	}

	// a finishes its message: relayed; b goes away: the edge holds nothing.
	write(a, aRest)
	testkit.WaitFor(t, 5*time.Second, "a's message relayed", func() bool { return len(v.inMessages(inSubjectOf(v, a))) == 2 })
	_ = b.ws.UnderlyingConn().Close()
	waitHeld(0)
}

// largeMessageEnvelope is c's signed ws_message with n bytes of content.
func largeMessageEnvelope(t *testing.T, c *client, seq uint64, n int) []byte {
	t.Helper()
	arg, err := candid.Marshal([]any{protocol.CanisterWsMessageArguments{Msg: protocol.WebsocketMessage{
		ClientKey: c.key(), SequenceNum: seq, Timestamp: uint64(time.Now().UnixNano()), Content: make([]byte, n),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return signedEnvelope(t, c.id, c.canister, "ws_message", arg)
}
