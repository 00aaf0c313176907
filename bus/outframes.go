package bus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// HeaderFrames marks an ICWS_OUT message that holds several frames of one client: their count.
// Without it a message is one frame and HeaderSeq its sequence number.
const HeaderFrames = "Icws-Frames"

// MaxOutFrames bounds the frames of one ICWS_OUT message. A poller groups the messages of one
// ws_get_messages answer (50 by the CDK's default, a few hundred at most) by client.
const MaxOutFrames = 1024

// OutFrame is one client frame held by an ICWS_OUT message and its canister → client sequence
// number.
type OutFrame struct {
	Seq   uint64
	Frame []byte
}

// Several frames are stored as (uvarint seq, uvarint length, frame bytes) repeated: storing a
// client's frames of one poll as one stream message costs JetStream one message instead of one
// per frame (docs/BENCHMARKS.md).

// AppendOutFrame appends seq and frame to the data of a several-frame ICWS_OUT message.
func AppendOutFrame(dst []byte, seq uint64, frame []byte) []byte {
	dst = binary.AppendUvarint(dst, seq)
	dst = binary.AppendUvarint(dst, uint64(len(frame)))
	return append(dst, frame...)
}

// OutFrameOverhead is the most AppendOutFrame adds to a frame's own bytes.
const OutFrameOverhead = 2 * binary.MaxVarintLen64

var errBadOutFrames = errors.New("bad ICWS_OUT message")

// DecodeOutFrames appends the frames of an ICWS_OUT message (its header and data) to dst, in
// order. The frames alias data. Sequence numbers must be above zero and increase, and a
// several-frame message must hold exactly the count its header declares, the first frame at its
// HeaderSeq; nothing is allocated from a declared count or length.
func DecodeOutFrames(dst []OutFrame, hdr nats.Header, data []byte) ([]OutFrame, error) {
	seq, err := strconv.ParseUint(hdr.Get(HeaderSeq), 10, 64)
	if err != nil || seq == 0 {
		return dst, fmt.Errorf("%w: %s %q", errBadOutFrames, HeaderSeq, hdr.Get(HeaderSeq))
	}
	count := hdr.Get(HeaderFrames)
	if count == "" {
		return append(dst, OutFrame{Seq: seq, Frame: data}), nil
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 2 || n > MaxOutFrames {
		return dst, fmt.Errorf("%w: %s %q (2 to %d)", errBadOutFrames, HeaderFrames, count, MaxOutFrames)
	}
	start := len(dst)
	var prev uint64
	for rest := data; len(rest) > 0; {
		if len(dst)-start == n {
			return dst[:start], fmt.Errorf("%w: bytes after its %d frames", errBadOutFrames, n)
		}
		s, k := binary.Uvarint(rest)
		if k <= 0 || s <= prev {
			return dst[:start], fmt.Errorf("%w: frame %d: bad or non-increasing sequence number", errBadOutFrames, len(dst)-start)
		}
		rest = rest[k:]
		size, k := binary.Uvarint(rest)
		if k <= 0 || size > uint64(len(rest)-k) {
			return dst[:start], fmt.Errorf("%w: frame %d: length beyond the message", errBadOutFrames, len(dst)-start)
		}
		rest = rest[k:]
		dst = append(dst, OutFrame{Seq: s, Frame: rest[:size:size]})
		rest = rest[size:]
		prev = s
	}
	switch {
	case len(dst)-start != n:
		return dst[:start], fmt.Errorf("%w: %d frames, %s says %d", errBadOutFrames, len(dst)-start, HeaderFrames, n)
	case dst[start].Seq != seq:
		return dst[:start], fmt.Errorf("%w: first frame %d, %s says %d", errBadOutFrames, dst[start].Seq, HeaderSeq, seq)
	}
	return dst, nil
}
