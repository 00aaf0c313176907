package edge

import (
	"bytes"
	"testing"

	"github.com/gorilla/websocket"
)

func TestFrameMeterCountsFramesHoweverTheBytesArrive(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 70_000) // a 64-bit length
	mid := bytes.Repeat([]byte("y"), 300)     // a 16-bit length
	stream := cat(
		maskedFrame(true, 0x2, []byte("hello")),
		maskedFrame(false, 0x2, mid),
		maskedFrame(true, opPing, nil),
		maskedFrame(false, 0x0, nil),
		maskedFrame(true, 0x0, long),
		[]byte{0x82, 0x00}, // unmasked, empty: gorilla refuses it, the meter still steps over it
	)
	const want = 6
	for _, chunk := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
		var m frameMeter
		got := 0
		for p := stream; len(p) > 0; {
			k := min(chunk, len(p))
			got += m.count(p[:k])
			p = p[k:]
		}
		if got != want || m.hdrLen != 0 || m.remain != 0 {
			t.Errorf("in chunks of %d: %d frames (header %d bytes in, %d payload bytes left), want %d", chunk, got, m.hdrLen, m.remain, want)
		}
	}
}

// Whatever the bytes and however they are cut, the meter neither panics nor counts differently.
func FuzzFrameMeter(f *testing.F) {
	f.Add(cat(maskedFrame(true, 0x2, []byte("hello")), maskedFrame(true, opPing, nil)), uint8(3))
	f.Add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		var whole, cut frameMeter
		want := whole.count(stream)
		got := 0
		step := int(chunk)%16 + 1
		for p := stream; len(p) > 0; {
			k := min(step, len(p))
			got += cut.count(p[:k])
			p = p[k:]
		}
		if got != want || cut != whole {
			t.Fatalf("in chunks of %d: %d frames, state %+v; whole: %d, %+v", step, got, cut, want, whole)
		}
	})
}

// A 64-bit frame length must have its top bit clear (RFC 6455, 5.2): a frame claiming more is
// closed with 1002 and a reason, not dropped without a close frame.
func TestFrameLengthOutOfRange(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	for _, opened := range []bool{false, true} {
		c := newClient(t, v.gw, randomCanister(t))
		if opened {
			c = openedClient(t, v, e.url, false)
		} else {
			c.dial(e.url, false)
		}
		frame := []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}
		if _, err := c.ws.UnderlyingConn().Write(frame); err != nil {
			t.Fatal(err)
		}
		if code, reason := expectClose(t, c.ws); code != websocket.CloseProtocolError || reason != errFrameLength.Error() {
			t.Fatalf("opened %v: closed %d %q, want 1002 %q", opened, code, reason, errFrameLength.Error())
		}
	}
}
