package natstest

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
)

// LossyDialer is a nats.CustomDialer (nats.SetCustomDialer) whose connections silently drop the
// client's publishes to subjects starting with Prefix while Drop is set: a message lost on its
// way, as a JetStream pull request is when it reaches a consumer whose leader is gone.
type LossyDialer struct {
	Prefix  string
	Drop    atomic.Bool
	Once    bool         // the first publish dropped clears Drop
	Dropped atomic.Int64 // publishes dropped so far
}

// Dial connects over TCP and filters what the client writes.
func (d *LossyDialer) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &lossyConn{Conn: c, d: d}, nil
}

// lossyConn follows the client protocol's commands across writes: a line ending in CRLF, and for
// PUB and HPUB a payload of the size the line's last field gives, followed by CRLF.
type lossyConn struct {
	net.Conn
	d       *LossyDialer
	partial []byte // the start of a command line not yet complete
	skip    int    // payload bytes still to drop
	pass    int    // payload bytes still to forward
}

func (c *lossyConn) Write(b []byte) (int, error) {
	in := append(c.partial, b...)
	c.partial = nil
	var out []byte
	for len(in) > 0 {
		switch {
		case c.skip > 0:
			n := min(c.skip, len(in))
			c.skip -= n
			in = in[n:]
			continue
		case c.pass > 0:
			n := min(c.pass, len(in))
			out = append(out, in[:n]...)
			c.pass -= n
			in = in[n:]
			continue
		}
		end := bytes.Index(in, []byte("\r\n"))
		if end < 0 {
			c.partial = append([]byte(nil), in...)
			break
		}
		line := in[:end+2]
		in = in[end+2:]
		if f := strings.Fields(string(line)); len(f) >= 3 && (f[0] == "PUB" || f[0] == "HPUB") {
			size, err := strconv.Atoi(f[len(f)-1])
			if err == nil {
				if strings.HasPrefix(f[1], c.d.Prefix) && c.d.dropping() {
					c.skip = size + 2
					c.d.Dropped.Add(1)
					continue
				}
				c.pass = size + 2
			}
		}
		out = append(out, line...)
	}
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// dropping reports whether a publish to a matching subject is dropped now.
func (d *LossyDialer) dropping() bool {
	if d.Once {
		return d.Drop.CompareAndSwap(true, false)
	}
	return d.Drop.Load()
}
