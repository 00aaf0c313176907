package edge

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
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
