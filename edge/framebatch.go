package edge

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// batchLimit is the most a batch collects before it is written out; a frame larger than that is
// written on its own.
const batchLimit = 64 << 10

// frameBatcher sits between a WebSocket and its network connection. While the connection's writer
// holds a batch open, what the WebSocket writes (its frames, and control frames other goroutines
// write meanwhile, in the WebSocket's own order) is collected and leaves in one write when the
// batch ends: a burst of canister messages costs one system call instead of one per frame.
// Outside a batch every write goes straight through. The buffer comes from the edge's pool for
// the batch only, so an idle session holds none. Reads go through it too (gorilla reads the
// connection it is handed): each is charged to the client (conn.tookBytes) once the connection
// exists.
type frameBatcher struct {
	net.Conn
	pool   *sync.Pool
	client *conn // set before the first frame is read; read by the reader goroutine only
	// refused is why the client's bytes were refused (tookBytes); reader goroutine only.
	refused error

	mu       sync.Mutex
	batching bool
	buf      *[]byte
}

func (b *frameBatcher) Read(p []byte) (int, error) {
	if b.refused != nil {
		return 0, b.refused
	}
	n, err := b.Conn.Read(p)
	if n > 0 && b.client != nil {
		if cerr := b.client.tookBytes(p[:n]); cerr != nil {
			// Nothing more of the connection is parsed, and every later read fails the same way
			// (a buffered reader reports a read error only once).
			b.refused = cerr
			return 0, cerr
		}
	}
	return n, err
}

func (b *frameBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.batching {
		return b.Conn.Write(p)
	}
	if b.buf == nil {
		b.buf = b.pool.Get().(*[]byte)
	}
	if len(*b.buf)+len(p) > batchLimit {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= batchLimit {
			return b.Conn.Write(p)
		}
	}
	*b.buf = append(*b.buf, p...)
	return len(p), nil
}

// flushLocked writes what the batch collected, under the deadline the connection has.
func (b *frameBatcher) flushLocked() error {
	if b.buf == nil || len(*b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(*b.buf)
	*b.buf = (*b.buf)[:0]
	return err
}

// begin opens a batch; a nil batcher does nothing.
func (b *frameBatcher) begin() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// end writes the batch out with the given deadline and closes it.
func (b *frameBatcher) end(deadline time.Time) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	var err error
	if b.buf != nil && len(*b.buf) > 0 {
		if err = b.Conn.SetWriteDeadline(deadline); err == nil {
			err = b.flushLocked()
		}
	}
	if b.buf != nil {
		if cap(*b.buf) <= batchLimit {
			*b.buf = (*b.buf)[:0]
			b.pool.Put(b.buf)
		}
		b.buf = nil
	}
	return err
}

// batchingWriter hands the WebSocket upgrader a frameBatcher around the hijacked connection, and
// a buffered reader of readBuf bytes that the edge shares with gorilla (idleread.go).
type batchingWriter struct {
	http.ResponseWriter
	pool    *sync.Pool
	readBuf int
	batcher *frameBatcher
	reader  connReader
}

func (w *batchingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("edge: the response writer cannot be hijacked")
	}
	conn, brw, err := h.Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.batcher = &frameBatcher{Conn: conn, pool: w.pool}
	if brw.Reader.Buffered() > 0 {
		return w.batcher, brw, nil // bytes before the handshake's end: the upgrader refuses them
	}
	w.reader = newConnReader(w.batcher, conn, w.readBuf)
	return w.batcher, bufio.NewReadWriter(w.reader.br, brw.Writer), nil
}
