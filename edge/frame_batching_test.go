package edge

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// recordingConn keeps every write as one entry, so a test sees how writes were grouped.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recordingConn) SetWriteDeadline(time.Time) error { return nil }

func (r *recordingConn) taken() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

func newTestBatcher() (*frameBatcher, *recordingConn) {
	rec := &recordingConn{}
	pool := &sync.Pool{New: func() any { b := make([]byte, 0, batchLimit); return &b }}
	return &frameBatcher{Conn: rec, pool: pool}, rec
}

func TestFrameBatcherWritesABatchAtOnce(t *testing.T) {
	b, rec := newTestBatcher()
	_, _ = b.Write([]byte("before"))
	b.begin()
	for _, w := range []string{"frame1", "frame2", "control", "frame3"} {
		if n, err := b.Write([]byte(w)); err != nil || n != len(w) {
			t.Fatalf("write %s: %d, %v", w, n, err)
		}
	}
	if got := rec.taken(); len(got) != 1 {
		t.Fatalf("%d writes reached the connection during the batch, want only the one before it", len(got))
	}
	if err := b.end(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	_, _ = b.Write([]byte("after"))
	want := []string{"before", "frame1frame2controlframe3", "after"}
	got := rec.taken()
	if len(got) != len(want) {
		t.Fatalf("writes %q, want %q", got, want)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Fatalf("write %d is %q, want %q", i, got[i], want[i])
		}
	}
	if b.buf != nil {
		t.Fatal("an ended batch keeps its buffer")
	}
}

func TestFrameBatcherKeepsOrderAroundLargeFrames(t *testing.T) {
	b, rec := newTestBatcher()
	b.begin()
	small := bytes.Repeat([]byte{'a'}, 100)
	large := bytes.Repeat([]byte{'b'}, batchLimit+1)
	_, _ = b.Write(small)
	_, _ = b.Write(large)
	_, _ = b.Write(small)
	if err := b.end(time.Now()); err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, w := range rec.taken() {
		if len(w) > batchLimit+1 {
			t.Fatalf("a write of %d bytes: the batch grew past its limit", len(w))
		}
		all = append(all, w...)
	}
	if want := append(append(bytes.Clone(small), large...), small...); !bytes.Equal(all, want) {
		t.Fatal("bytes reordered or lost")
	}
}

func TestFrameBatcherWithoutBatchIsTheConnection(t *testing.T) {
	var b *frameBatcher // a connection made without one
	b.begin()
	if err := b.end(time.Now()); err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	defer client.Close()
	fb := &frameBatcher{Conn: server, pool: &sync.Pool{}}
	go func() { _, _ = fb.Write([]byte("hello")); _ = server.Close() }()
	got, _ := io.ReadAll(client)
	if string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
}
