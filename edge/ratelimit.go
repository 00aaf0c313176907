package edge

import (
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
// never ends), and conn.msgSince notes when a message began to arrive, for the liveness walk to
// bound how long it may take (ICWS_MESSAGE_TIMEOUT).

// tookBytes charges n bytes read from the client to its byte rate and starts the clock of the
// message they belong to, unless one is running.
func (c *conn) tookBytes(n int) error {
	now := time.Now()
	if !c.byteRate.Take(now, float64(n), float64(c.e.cfg.MaxClientBytesRate), float64(c.e.cfg.MaxClientBytesBurst)) {
		return errByteRateExceeded
	}
	if c.msgSince.Load() == 0 {
		c.msgSince.Store(now.UnixNano())
	}
	return nil
}

// messageRead stops the clock of the message being read: it has been read whole (or the read
// ended).
func (c *conn) messageRead() { c.msgSince.Store(0) }
