package edge

import (
	"bufio"
	"bytes"
	"errors"
	"testing"
)

func TestClientControlFrame(t *testing.T) {
	tests := []struct {
		name   string
		frame  []byte
		wantOp byte
		size   int
	}{
		{"empty ping", maskedFrame(true, opPing, nil), opPing, 6},
		{"pong with payload", maskedFrame(true, opPong, []byte("abc")), opPong, 9},
		{"ping of 125 bytes", maskedFrame(true, opPing, bytes.Repeat([]byte("x"), 125)), opPing, 131},
		{"ping of 126 bytes", maskedFrame(true, opPing, bytes.Repeat([]byte("x"), 126)), 0, 0},
		{"unmasked ping", []byte{0x89, 0x00}, 0, 0},
		{"fragmented ping", maskedFrame(false, opPing, nil), 0, 0},
		{"ping with RSV1", append([]byte{0xC9}, maskedFrame(true, opPing, nil)[1:]...), 0, 0},
		{"close", maskedFrame(true, 0x8, []byte{3, 232}), 0, 0},
		{"binary", maskedFrame(true, 0x2, []byte("x")), 0, 0},
		{"one byte", []byte{0x89}, 0, 0},
		{"nothing", nil, 0, 0},
	}
	for _, tt := range tests {
		op, size := clientControlFrame(tt.frame)
		if op != tt.wantOp && size != 0 || size != tt.size {
			t.Errorf("%s: op %#x size %d, want %#x %d", tt.name, op, size, tt.wantOp, tt.size)
		}
		if size != 0 {
			if got := unmaskControl(nil, tt.frame[:size]); len(got) != size-6 {
				t.Errorf("%s: payload of %d bytes, want %d", tt.name, len(got), size-6)
			}
		}
	}
}

// FuzzTakeControl reads whatever a client may send with takeControl, as the reader does between
// messages: it must never panic, take only well-formed pings and pongs, consume exactly each one's
// bytes, and hand over the payload that re-masks to what was sent.
func FuzzTakeControl(f *testing.F) {
	f.Add(maskedFrame(true, opPing, []byte("hello")))
	f.Add(cat(maskedFrame(true, opPong, nil), maskedFrame(true, opPing, bytes.Repeat([]byte("p"), 125)), maskedBinaryFrame([]byte("data"))))
	f.Add([]byte{0x89, 0xfe, 0, 0})
	f.Add([]byte{0x8a, 0x85, 1, 2})
	errHandler := errors.New("handler")
	f.Fuzz(func(t *testing.T, in []byte) {
		r := connReader{br: bufio.NewReaderSize(bytes.NewReader(in), 288)}
		consumed := 0
		for i := 0; ; i++ {
			var gotOp byte
			var got string
			handle := func(op byte) func(string) error {
				return func(p string) error {
					gotOp, got = op, p
					if i == 3 {
						return errHandler // a handler's error is the reader's
					}
					return nil
				}
			}
			took, err := r.takeControl(handle(opPing), handle(opPong))
			if !took {
				if err != nil {
					t.Fatalf("error without a frame taken: %v", err)
				}
				if _, size := clientControlFrame(in[consumed:]); size != 0 && consumed+size <= len(in) {
					t.Fatalf("left a whole control frame of %d bytes at %d", size, consumed)
				}
				return
			}
			if i == 3 && !errors.Is(err, errHandler) {
				t.Fatalf("handler error lost: %v", err)
			}
			op, size := clientControlFrame(in[consumed:])
			if size == 0 || op != gotOp || len(got) != size-6 || len(got) > 125 {
				t.Fatalf("took %#x %q from %x", gotOp, got, in[consumed:min(len(in), consumed+8)])
			}
			want := in[consumed : consumed+size]
			if remasked := unmaskControl(nil, append(append([]byte(nil), want[:6]...), got...)); !bytes.Equal(remasked, want[6:]) {
				t.Fatalf("payload %q does not re-mask to %x", got, want[6:])
			}
			consumed += size
			if r.br.Buffered()+consumed > len(in) {
				t.Fatalf("consumed %d of %d bytes, %d still buffered", consumed, len(in), r.br.Buffered())
			}
		}
	})
}
