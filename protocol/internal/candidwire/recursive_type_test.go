package candidwire

import (
	"bytes"
	"testing"
)

// A recursive type can be written in a type table in many ways; encoding what was decoded must
// give the same bytes whichever way it was written.
func TestRecursiveTypesEncodeTheSameWhicheverSpelling(t *testing.T) {
	tests := []struct {
		name      string
		spellings [][]byte
		want      []byte
	}{
		{
			name: "opt opt opt …",
			spellings: [][]byte{
				wire("4449444c 01 6e 00 01 00 00"),
				wire("4449444c 02 6e 01 6e 00 01 00 00"),
				// A cycle of eight entries reached through a chain of fifteen (found by fuzzing).
				wire("4449444c 17 6e07 6e00 6e01 6e02 6e03 6e04 6e05 6e06 6e07 6e08 6e09 6e0a 6e0b 6e0c 6e0d 6e0e 6e0f 6e10 6e11 6e12 6e13 6e14 6e15 01 16 00"),
			},
			want: wire("4449444c 01 6e 00 01 00 00"),
		},
		{
			name: "a list: opt record { nat; list }",
			spellings: [][]byte{
				wire("4449444c 02 6e 01 6c 02 00 7d 01 00", "01 00", "01 01 01 02 00"),
				wire("4449444c 04 6e 01 6c 02 00 7d 01 02 6e 03 6c 02 00 7d 01 00", "01 00", "01 01 01 02 00"),
				wire("4449444c 04 6e 02 6e 03 6c 02 00 7d 01 01 6c 02 00 7d 01 00", "01 00", "01 01 01 02 00"),
			},
			want: wire("4449444c 02 6e 01 6c 02 00 7d 01 00", "01 00", "01 01 01 02 00"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, in := range tt.spellings {
				types, values, err := DecodeAny(in)
				if err != nil {
					t.Fatalf("spelling %d: %v", i, err)
				}
				got, err := Encode(types, values)
				if err != nil {
					t.Fatalf("spelling %d: %v", i, err)
				}
				if !bytes.Equal(got, tt.want) {
					t.Errorf("spelling %d encodes as %x, want %x", i, got, tt.want)
				}
			}
		})
	}
}
