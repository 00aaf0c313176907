package edge

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
)

// An idle connection costs its reader goroutine's stack. Blocked inside gorilla's ReadMessage a
// reader needs a 4 KiB stack (the frames of the read path do not fit in 2 KiB), and once grown a
// parked goroutine's stack is never shrunk back to 2 KiB. So the reader waits for the socket's
// readability itself whenever nothing is buffered (waitReadable needs well under 2 KiB), takes the
// pings and pongs that arrive between messages itself (gorilla would swallow a pong and block
// inside ReadMessage for the next data message), and after reading anything hands the connection
// to a fresh goroutine to wait (conn.readLoop). Everything else, and every frame that is not a
// well-formed ping or pong, is read by gorilla as before.

// connReader is the read side the edge shares with gorilla: the buffered reader gorilla reads
// frames from, and the raw socket to wait on (nil behind TLS, whose own buffer the socket's
// readability says nothing about).
type connReader struct {
	br  *bufio.Reader
	raw syscall.RawConn
}

// newConnReader gives the hijacked socket sock a buffered reader of size bytes reading from src
// (sock or a wrapper of it); gorilla reuses a reader it is handed only when it holds more than 256
// bytes and the upgrader's ReadBufferSize is 0.
func newConnReader(src io.Reader, sock net.Conn, size int) connReader {
	r := connReader{br: bufio.NewReaderSize(src, size)}
	if sc, ok := sock.(*net.TCPConn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
		}
	}
	return r
}

// idle reports whether the next read would wait on the socket: nothing is buffered.
func (r connReader) idle() bool { return r.raw != nil && r.br.Buffered() == 0 }

// waitReadable parks until the socket has bytes to read, has reached its end or failed, or the read
// deadline passes; what it was is for the next read to find out. Call it only when idle.
func (r connReader) waitReadable() {
	_ = r.raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !errors.Is(err, syscall.EAGAIN)
	})
}

const (
	opPing = 0x9
	opPong = 0xA
	// maxControlFrame is a masked control frame with the largest payload RFC 6455 allows (125).
	maxControlFrame = 2 + 4 + 125
)

// clientControlFrame reports the size of the client's ping or pong at the start of b (a final,
// masked frame without RSV bits and with at most 125 bytes of payload), or 0 if b does not start
// with one; b needs only its first two bytes.
func clientControlFrame(b []byte) (op byte, size int) {
	if len(b) < 2 {
		return 0, 0
	}
	op = b[0] & 0x0f
	if b[0]&0xf0 != 0x80 || (op != opPing && op != opPong) || b[1]&0x80 == 0 || b[1]&0x7f > 125 {
		return 0, 0
	}
	return op, 2 + 4 + int(b[1]&0x7f)
}

// unmaskControl appends the payload of the control frame f (of the size clientControlFrame
// reported) to dst, unmasked.
func unmaskControl(dst, f []byte) []byte {
	key := f[2:6]
	for i, x := range f[6:] {
		dst = append(dst, x^key[i&3])
	}
	return dst
}

// takeControl reads a ping or pong waiting at the start of the buffer (between two messages) and
// hands it to onPing or onPong; it reports whether there was one. Anything else is left to gorilla.
func (r connReader) takeControl(onPing, onPong func(string) error) (bool, error) {
	hdr, err := r.br.Peek(2)
	if err != nil {
		return false, nil // gorilla's read reports it
	}
	op, size := clientControlFrame(hdr)
	if size == 0 {
		return false, nil
	}
	f, err := r.br.Peek(size)
	if err != nil {
		return false, nil
	}
	var buf [maxControlFrame]byte
	payload := string(unmaskControl(buf[:0], f))
	if _, err := r.br.Discard(size); err != nil {
		return false, err
	}
	if op == opPing {
		return true, onPing(payload)
	}
	return true, onPong(payload)
}
