package edge

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
)

// The reader takes the pings and pongs that arrive between messages itself (idleread.go) and
// leaves everything else to gorilla: whatever way control frames and messages are mixed and cut
// into TCP writes, every ping is answered with its payload, every message is relayed once and in
// order, and a malformed control frame closes the connection as gorilla does (1002).
func TestControlFramesAroundMessages(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))

	tests := []struct {
		name      string
		writes    func(msg func(seq uint64) []byte) [][]byte // each written to the socket at once; msg is a ws_message frame
		pongs     []string                                   // payloads of the pongs the client must get, in order
		relayed   int                                        // ws_message envelopes relayed
		closeCode int                                        // the edge's close code; 0: the connection stays open
	}{
		{
			name: "ping, message and ping in one write",
			writes: func(msg func(uint64) []byte) [][]byte {
				return [][]byte{cat(maskedFrame(true, opPing, []byte("p1")), maskedBinaryFrame(msg(1)), maskedFrame(true, opPing, []byte("p2")))}
			},
			pongs: []string{"p1", "p2"}, relayed: 1,
		},
		{
			name: "unsolicited pongs between messages",
			writes: func(msg func(uint64) []byte) [][]byte {
				return [][]byte{cat(maskedBinaryFrame(msg(1)), maskedFrame(true, opPong, nil), maskedBinaryFrame(msg(2))), maskedFrame(true, opPong, []byte("x"))}
			},
			relayed: 2,
		},
		{
			name: "a ping inside a fragmented message is gorilla's",
			writes: func(msg func(uint64) []byte) [][]byte {
				f := msg(1)
				return [][]byte{cat(maskedFrame(false, 0x2, f[:10]), maskedFrame(true, opPing, []byte("mid"))), maskedFrame(true, 0x0, f[10:])}
			},
			pongs: []string{"mid"}, relayed: 1,
		},
		{
			name: "a ping cut into single bytes",
			writes: func(msg func(uint64) []byte) [][]byte {
				var out [][]byte
				for _, b := range cat(maskedFrame(true, opPing, bytes.Repeat([]byte("z"), 125)), maskedBinaryFrame(msg(1))) {
					out = append(out, []byte{b})
				}
				return out
			},
			pongs: []string{string(bytes.Repeat([]byte("z"), 125))}, relayed: 1,
		},
		{
			name:      "an unmasked ping",
			writes:    func(func(uint64) []byte) [][]byte { return [][]byte{{0x89, 0x01, 'a'}} },
			closeCode: 1002,
		},
		{
			name: "a ping longer than 125 bytes",
			writes: func(func(uint64) []byte) [][]byte {
				return [][]byte{maskedFrame(true, opPing, bytes.Repeat([]byte("y"), 126))}
			},
			closeCode: 1002,
		},
		{
			name:      "a fragmented ping",
			writes:    func(func(uint64) []byte) [][]byte { return [][]byte{maskedFrame(false, opPing, []byte("f"))} },
			closeCode: 1002,
		},
		{
			name: "a ping with a reserved bit",
			writes: func(func(uint64) []byte) [][]byte {
				f := maskedFrame(true, opPing, []byte("r"))
				f[0] |= 0x40
				return [][]byte{f}
			},
			closeCode: 1002,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openedClient(t, v, e.url, false)
			raw := c.ws.UnderlyingConn()
			for _, w := range tt.writes(func(seq uint64) []byte { return frameOf(t, c.messageEnvelope(seq, false)) }) {
				if _, err := raw.Write(w); err != nil {
					t.Fatal(err)
				}
			}
			frames := serverFrames(t, raw)
			for _, want := range tt.pongs {
				op, payload := frames()
				if op != opPong || string(payload) != want {
					t.Fatalf("got frame %#x %q, want a pong %q", op, payload, want)
				}
			}
			if tt.closeCode != 0 {
				op, payload := frames()
				if op != 0x8 || len(payload) < 2 || int(binary.BigEndian.Uint16(payload)) != tt.closeCode {
					t.Fatalf("got frame %#x %q, want a close %d", op, payload, tt.closeCode)
				}
				return
			}
			testkit.WaitFor(t, 10*time.Second, "messages relayed", func() bool {
				return len(v.inMessages(inSubjectOf(v, c))) == 1+tt.relayed
			})
			for i, m := range v.inMessages(inSubjectOf(v, c))[1:] {
				if m.clientSeq != strconv.Itoa(i+1) {
					t.Fatalf("message %d relayed as client seq %q", i+1, m.clientSeq)
				}
			}
		})
	}
}

func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

func frameOf(t *testing.T, env []byte) []byte {
	t.Helper()
	f, err := protocol.EncodeClientFrame(env)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// serverFrames reads the edge's (unmasked) frames from the client's socket, skipping data frames.
func serverFrames(t *testing.T, conn net.Conn) func() (op byte, payload []byte) {
	br := bufio.NewReader(conn)
	return func() (byte, []byte) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			var hdr [2]byte
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				t.Fatalf("read frame: %v", err)
			}
			n := uint64(hdr[1] & 0x7f)
			switch n {
			case 126:
				var ext [2]byte
				_, _ = io.ReadFull(br, ext[:])
				n = uint64(binary.BigEndian.Uint16(ext[:]))
			case 127:
				var ext [8]byte
				_, _ = io.ReadFull(br, ext[:])
				n = binary.BigEndian.Uint64(ext[:])
			}
			payload := make([]byte, n)
			if _, err := io.ReadFull(br, payload); err != nil {
				t.Fatalf("read payload: %v", err)
			}
			if op := hdr[0] & 0x0f; op >= 0x8 {
				return op, payload
			}
		}
	}
}

// Pings and pongs count against the client's message rate like messages: each one costs a read
// and a wake-up (and a ping a pong), so a flood of either closes the connection with 1008.
func TestControlFrameFloodIsRateLimited(t *testing.T) {
	v, e := rateLimitedEdge(t)
	for _, op := range []byte{opPing, opPong} {
		t.Run(map[byte]string{opPing: "pings", opPong: "pongs"}[op], func(t *testing.T) {
			c := openedClient(t, v, e.url, false)
			raw := c.ws.UnderlyingConn()
			if _, err := raw.Write(bytes.Repeat(maskedFrame(true, op, []byte("f")), 10)); err != nil {
				t.Fatal(err)
			}
			frames := serverFrames(t, raw)
			for {
				op, payload := frames()
				if op == opPong {
					continue
				}
				if op != 0x8 || len(payload) < 2 || binary.BigEndian.Uint16(payload) != 1008 || string(payload[2:]) != reasonRateExceeded {
					t.Fatalf("got frame %#x %q, want a close 1008 %q", op, payload, reasonRateExceeded)
				}
				return
			}
		})
	}
}

// A close reason can come from a canister (its ws_open error) or another role: whatever its length
// and bytes, the close frame carries valid UTF-8 in the 123 bytes a close frame allows, or the
// client's WebSocket library fails the close instead of reporting it.
func TestClosePayloadIsValidUTF8WithinTheLimit(t *testing.T) {
	for _, reason := range []string{
		"",
		"bye",
		strings.Repeat("é", 70),
		strings.Repeat("a", 122) + "🙂",
		"refused: \xff\xfe",
	} {
		p := closePayload(4000, reason)
		if len(p) > 125 || !utf8.Valid(p[2:]) {
			t.Errorf("reason %q: payload %d bytes, valid UTF-8 %v", reason, len(p), utf8.Valid(p[2:]))
		}
		if code := binary.BigEndian.Uint16(p); code != 4000 {
			t.Errorf("reason %q: code %d", reason, code)
		}
	}
}
