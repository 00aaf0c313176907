package cborread_test

import (
	"errors"
	"testing"

	"github.com/icws/icws/protocol/internal/cborread"
)

func TestSkip(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"uint", []byte{0x18, 0xff}, true},
		{"negative", []byte{0x38, 0x01}, true},
		{"float64", []byte{0xfb, 0, 0, 0, 0, 0, 0, 0, 0}, true},
		{"nested", []byte{0x82, 0xa1, 0x61, 'k', 0x80, 0xd9, 0xd9, 0xf7, 0x41, 0x00}, true},
		{"deep arrays", append(repeat(0x81, 100_000), 0x00), true},
		{"array count past the end", []byte{0x9a, 0xff, 0xff, 0xff, 0xff, 0x00}, false},
		{"map count past the end", []byte{0xba, 0xff, 0xff, 0xff, 0xff, 0x00}, false},
		{"bytes past the end", []byte{0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false},
		{"indefinite", []byte{0x9f, 0xff}, false},
		{"reserved", []byte{0x1c}, false},
		{"tags forever", repeat(0xc1, 1000), false},
		{"truncated head", []byte{0x19, 0x01}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cborread.New(tt.in)
			err := r.Skip()
			if err == nil {
				err = r.End()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("Skip: %v", err)
			}
		})
	}
}

func TestReadHelpers(t *testing.T) {
	r := cborread.New([]byte{0xd9, 0xd9, 0xf7, 0xa1, 0x63, 'k', 'e', 'y', 0x42, 1, 2})
	r.SkipSelfDescribe()
	if n, err := r.MapHeader(); err != nil || n != 1 {
		t.Fatalf("map: %d, %v", n, err)
	}
	if k, err := r.Text(); err != nil || string(k) != "key" {
		t.Fatalf("key: %q, %v", k, err)
	}
	if _, err := r.Uint(); err == nil {
		t.Fatal("a byte string read as an integer")
	}
	if b, err := r.Bytes(); err != nil || len(b) != 2 {
		t.Fatalf("bytes: %x, %v", b, err)
	}
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Bytes(); !errors.Is(err, cborread.ErrTruncated) {
		t.Fatalf("read past the end: %v", err)
	}
}

func repeat(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}
