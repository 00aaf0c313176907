package edge

import (
	"bytes"
	"net"
	"net/http"
)

// Every socket the edge accepts holds a file descriptor, upgraded or not, and so do the embedded
// NATS server's store files and the calls to the IC in the same process. A process out of
// descriptors fails the store's writes, which the NATS server does not recover from until it is
// restarted. So the edge counts every socket it accepts, and at most maxSockets of them are open at
// once: ICWS_MAX_CONNECTIONS, or what the open-file limit leaves after ICWS_FD_RESERVE descriptors
// for everything else, whichever is lower. Up to answerHeadroom sockets more (taken from the
// reserve) are accepted, for an upgrade over the limit to be answered 503 rather than find its
// socket closed; a socket above that is closed as soon as it is accepted.
const answerHeadroom = 64

// socketLimit is the most sockets an edge with the given connection limit holds under the given
// open-file limit (0: not known) when it leaves reserve descriptors to the rest of the process (at
// most half of them), and whether the file limit lowered it.
func socketLimit(maxConnections, reserve int, fileLimit uint64) (int, bool) {
	if fileLimit == 0 {
		return maxConnections, false
	}
	room := max(int64(fileLimit)-int64(reserve), int64(fileLimit)/2)
	if int64(maxConnections) <= room {
		return maxConnections, false
	}
	return int(room), true
}

// trackSocket is the HTTP server's ConnState hook. e.sockets counts the sockets net/http serves;
// once hijacked for a WebSocket a socket is counted in e.conns instead.
func (e *Edge) trackSocket(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		n := e.sockets.Add(1)
		e.mu.RLock()
		n += int64(len(e.conns))
		e.mu.RUnlock()
		if n > int64(e.maxSockets+answerHeadroom) {
			e.m.refused.WithLabelValues("max_sockets").Inc()
			e.warnings.Warn(e.log, "max_sockets", "closing new sockets: the edge holds as many as it may (ICWS_MAX_CONNECTIONS, or the open-file limit)",
				"sockets", n-1, "limit", e.maxSockets)
			_ = c.Close() // net/http sees the socket fail and reports it closed
		}
	case http.StateHijacked, http.StateClosed:
		e.sockets.Add(-1)
	}
}

// serverErrorLog takes net/http's own log lines: failing to accept (out of file descriptors) is
// an operator's problem and a warning, once a minute; the rest (a client's TLS handshake or
// malformed request) is the client's, a debug line.
type serverErrorLog struct{ e *Edge }

func (l serverErrorLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	if bytes.Contains(p, []byte("Accept error")) {
		l.e.warnings.Warn(l.e.log, "accept", "cannot accept connections", "err", line)
	} else {
		l.e.log.Debug("http server", "err", line)
	}
	return len(p), nil
}
