package icclient

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/icws/icws/replica"
)

func TestAnswerBodyIsReadUpToOneByteOverTheLimit(t *testing.T) {
	const limit = 100
	tests := []struct {
		name    string
		body    io.Reader
		wantLen int
		wantErr bool
	}{
		{"empty", strings.NewReader(""), 0, false},
		{"below the limit", strings.NewReader(strings.Repeat("a", 99)), 99, false},
		{"at the limit", strings.NewReader(strings.Repeat("a", limit)), limit, false},
		{"over the limit stops one byte past it", strings.NewReader(strings.Repeat("a", 10*limit)), limit + 1, false},
		{"one byte at a time", iotest.OneByteReader(strings.NewReader(strings.Repeat("a", 50))), 50, false},
		{"read error", iotest.TimeoutReader(strings.NewReader(strings.Repeat("a", 50))), 0, true},
	}
	var c Client
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf, err := c.readBody(tt.body, limit)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(*buf) != tt.wantLen {
				t.Fatalf("read %d bytes, want %d", len(*buf), tt.wantLen)
			}
			c.release(answer{buf: buf})
		})
	}
}

func TestQueryRepliesOutliveTheReusedAnswerBuffer(t *testing.T) {
	e := startReplica(t, replica.Config{})
	c := newTestClient(t, e)
	first, err := c.Query(ctx(t), testCanisterID, "fill", binary.BigEndian.AppendUint32(nil, 4096))
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(first)
	for range 3 {
		if _, err := c.Query(ctx(t), testCanisterID, "get", bytes.Repeat([]byte{0x11}, 8192)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(first, want) {
		t.Fatal("a later query overwrote the bytes an earlier one returned")
	}
	_, err = c.Query(ctx(t), testCanisterID, "qreject", nil)
	var re *RejectError
	if !errors.As(err, &re) {
		t.Fatalf("reject after pooled reads: %v", err)
	}
}
