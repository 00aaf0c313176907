package bus

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
)

func outHeader(seq uint64, frames int) nats.Header {
	h := nats.Header{HeaderSeq: {strconv.FormatUint(seq, 10)}}
	if frames > 0 {
		h.Set(HeaderFrames, strconv.Itoa(frames))
	}
	return h
}

func TestDecodeOutFrames(t *testing.T) {
	three := AppendOutFrame(AppendOutFrame(AppendOutFrame(nil, 7, []byte("seven")), 8, []byte("eight")), 10, []byte("ten"))
	for _, tc := range []struct {
		name  string
		hdr   nats.Header
		data  []byte
		want  []OutFrame
		error bool
	}{
		{name: "one frame", hdr: outHeader(4, 0), data: []byte("frame"), want: []OutFrame{{4, []byte("frame")}}},
		{name: "several frames", hdr: outHeader(7, 3), data: three,
			want: []OutFrame{{7, []byte("seven")}, {8, []byte("eight")}, {10, []byte("ten")}}},
		{name: "no sequence number", hdr: nats.Header{}, data: []byte("frame"), error: true},
		{name: "sequence number zero", hdr: outHeader(0, 0), data: []byte("frame"), error: true},
		{name: "fewer frames than declared", hdr: outHeader(7, 4), data: three, error: true},
		{name: "more frames than declared", hdr: outHeader(7, 2), data: three, error: true},
		{name: "first frame is not the header's", hdr: outHeader(6, 3), data: three, error: true},
		{name: "count of one", hdr: outHeader(7, 1), data: AppendOutFrame(nil, 7, []byte("x")), error: true},
		{name: "count above the limit", hdr: outHeader(7, MaxOutFrames+1), data: three, error: true},
		{name: "count not a number", hdr: nats.Header{HeaderSeq: {"7"}, HeaderFrames: {"three"}}, data: three, error: true},
		{name: "truncated", hdr: outHeader(7, 3), data: three[:len(three)-1], error: true},
		{name: "length beyond the data", hdr: outHeader(7, 2), data: []byte{7, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'}, error: true},
		{name: "sequence numbers not increasing", hdr: outHeader(8, 2),
			data: AppendOutFrame(AppendOutFrame(nil, 8, []byte("a")), 8, []byte("b")), error: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []OutFrame{{1, []byte("kept")}}
			got, err := DecodeOutFrames(prefix, tc.hdr, tc.data)
			if tc.error {
				if err == nil || len(got) != 1 {
					t.Fatalf("got %d frames and %v, want an error and the prefix alone", len(got), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got = got[1:]
			if len(got) != len(tc.want) {
				t.Fatalf("got %d frames, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i].Seq != tc.want[i].Seq || !bytes.Equal(got[i].Frame, tc.want[i].Frame) {
					t.Fatalf("frame %d: got %d %q, want %d %q", i, got[i].Seq, got[i].Frame, tc.want[i].Seq, tc.want[i].Frame)
				}
			}
		})
	}
}

func FuzzDecodeOutFrames(f *testing.F) {
	f.Add(uint64(7), 3, AppendOutFrame(AppendOutFrame(AppendOutFrame(nil, 7, []byte("seven")), 8, []byte("eight")), 10, nil))
	f.Add(uint64(1), 0, []byte("frame"))
	f.Add(uint64(1), 2, []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, seq uint64, frames int, data []byte) {
		got, err := DecodeOutFrames(nil, outHeader(seq, frames), data)
		if err != nil {
			if len(got) != 0 {
				t.Fatalf("%d frames with an error", len(got))
			}
			return
		}
		// What decodes re-encodes to the same bytes.
		if frames <= 0 { // no Icws-Frames header: one frame
			return
		}
		var again []byte
		for i, fr := range got {
			if i > 0 && fr.Seq <= got[i-1].Seq {
				t.Fatalf("frame %d: sequence number %d after %d", i, fr.Seq, got[i-1].Seq)
			}
			again = AppendOutFrame(again, fr.Seq, fr.Frame)
		}
		if len(got) != frames || got[0].Seq != seq {
			t.Fatalf("%d frames from %d, first %d from %d", len(got), frames, got[0].Seq, seq)
		}
		if !bytes.Equal(again, data) {
			// Uvarints have one shortest form, but a decoder accepts padded ones; the frames
			// themselves must survive.
			back, err := DecodeOutFrames(nil, outHeader(seq, frames), again)
			if err != nil || len(back) != len(got) {
				t.Fatalf("re-encoded frames do not decode: %v", err)
			}
		}
	})
}
