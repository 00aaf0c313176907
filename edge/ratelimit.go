package edge

import (
	"encoding/binary"
	"errors"
	"time"
)

// reasonRateExceeded closes (1008) a connection that sends more than MaxClientRate messages per
// second beyond its MaxClientBurst: one client must not flood ICWS_IN.
const (
	reasonRateExceeded     = "icws: client message rate exceeded"
	reasonByteRateExceeded = "icws: client byte rate exceeded"
	reasonMessageTimeout   = "icws: message not completed within the message timeout"
)

var (
	// errRateExceeded ends the read of a connection whose pings exceeded the message rate.
	errRateExceeded = errors.New(reasonRateExceeded)
	// errByteRateExceeded ends the read of a connection that sent more bytes than its byte rate.
	errByteRateExceeded = errors.New(reasonByteRateExceeded)
)

// Everything the client sends is read through frameBatcher.Read, frame headers, fragments and
// control frames included. So the byte rate counts what a client costs to read, not only the
// messages gorilla assembles (a stream of empty continuation frames is a message of no bytes that
// never ends), each frame costs frameCharge bytes more than it has (what parsing it costs does not
// depend on its size), and conn.msgSince notes when a message began to arrive, for the liveness
// walk to bound how long it may take (ICWS_MESSAGE_TIMEOUT). Until its first frame has been read a
// connection may send no more than that frame may have, plus preOpenSlack: a stranger cannot
// make the edge parse megabytes of empty frames and reconnect to do it again.
const (
	frameCharge  = 64
	preOpenSlack = 8 << 10
)

var (
	errFirstFrameBytes = errors.New("icws: more bytes before the first frame than it may have")
	errFrameLength     = errors.New("icws: frame length out of range")
)

// Each connection may hold one message of up to ICWS_MAX_MESSAGE_BYTES while it arrives, and may
// take ICWS_MESSAGE_TIMEOUT to finish it, so per-connection limits alone let many connections (from
// many addresses) hold gigabytes. The edge counts the bytes of messages still arriving over all
// its connections (Edge.unfinished, from the bytes read since each connection's last complete
// message); while the count is above ICWS_MAX_UNFINISHED_BYTES a connection whose own unfinished
// message grows past ICWS_MAX_FIRST_FRAME_BYTES is closed with 1013. Ordinary messages are far
// smaller than that and are never refused for it; the edge already holds that much for any stranger
// before its first frame.
const reasonUnfinishedBudget = "icws: the edge holds too many large messages still arriving; try again later"

var errUnfinishedBudget = errors.New(reasonUnfinishedBudget)

// tookBytes charges what the client sent (p, as read from the socket) to its byte rate and starts
// the clock of the message it belongs to, unless one is running. Reader goroutine only.
func (c *conn) tookBytes(p []byte) error {
	charge := len(p) + frameCharge*c.frames.count(p)
	if c.frames.badLength {
		return errFrameLength
	}
	if !c.firstRead {
		c.preOpen += charge
		if c.preOpen > int(min(c.e.cfg.MaxFirstFrameBytes, c.e.cfg.MaxMessageBytes))+preOpenSlack {
			return errFirstFrameBytes
		}
	}
	now := time.Now()
	if !c.byteRate.Take(now, float64(charge), float64(c.e.cfg.MaxClientBytesRate), float64(c.e.cfg.MaxClientBytesBurst)) {
		return errByteRateExceeded
	}
	if c.msgSince.Load() == 0 {
		c.msgSince.Store(now.UnixNano())
	}
	return c.holdUnfinished(len(p))
}

// holdUnfinished counts n more bytes of the message being read against the edge's budget of
// unfinished messages (reader goroutine only; messageRead gives them back).
func (c *conn) holdUnfinished(n int) error {
	c.unfinished += int64(n)
	total := c.e.unfinished.Add(int64(n))
	if total <= int64(c.e.cfg.MaxUnfinishedBytes) || c.unfinished <= c.e.cfg.MaxFirstFrameBytes {
		return nil
	}
	c.e.m.refused.WithLabelValues("unfinished_budget").Inc()
	c.e.warnings.Warn(c.e.log, "unfinished_budget", "closing connections with large messages still arriving: the edge's budget for them is full (ICWS_MAX_UNFINISHED_BYTES)",
		"held_bytes", total, "budget_bytes", int64(c.e.cfg.MaxUnfinishedBytes))
	return errUnfinishedBudget
}

// frameMeter follows the boundaries of the client's frames (RFC 6455, section 5.2) through the
// bytes as they are read, to count the frames; gorilla parses them again and refuses what is
// malformed, so a meter out of step only misjudges a connection that is about to be closed.
type frameMeter struct {
	hdr    [14]byte // the header being collected: at most 2 + 8 (length) + 4 (mask)
	hdrLen int
	remain uint64 // payload bytes of the current frame not yet read
	// badLength is set by a 64-bit payload length with its top bit set, which RFC 6455 forbids
	// (gorilla fails such a frame without a close frame).
	badLength bool
}

// count returns how many frame headers end in p.
func (m *frameMeter) count(p []byte) int {
	n := 0
	for len(p) > 0 {
		if m.remain > 0 {
			k := min(uint64(len(p)), m.remain)
			m.remain -= k
			p = p[k:]
			continue
		}
		m.hdr[m.hdrLen] = p[0]
		m.hdrLen++
		p = p[1:]
		if m.hdrLen < 2 {
			continue
		}
		ext := 0
		switch m.hdr[1] & 0x7f {
		case 126:
			ext = 2
		case 127:
			ext = 8
		}
		need := 2 + ext
		if m.hdr[1]&0x80 != 0 {
			need += 4
		}
		if m.hdrLen < need {
			continue
		}
		switch ext {
		case 0:
			m.remain = uint64(m.hdr[1] & 0x7f)
		case 2:
			m.remain = uint64(binary.BigEndian.Uint16(m.hdr[2:4]))
		case 8:
			m.remain = binary.BigEndian.Uint64(m.hdr[2:10])
			m.badLength = m.badLength || m.remain>>63 != 0
		}
		m.hdrLen = 0
		n++
	}
	return n
}

// messageRead stops the clock of the message being read: it has been read whole (or the read
// ended).
func (c *conn) messageRead() {
	c.msgSince.Store(0)
	if c.unfinished != 0 {
		c.e.unfinished.Add(-c.unfinished)
		c.unfinished = 0
	}
}
