package edge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/tokenbucket"
	"github.com/nats-io/nats.go/jetstream"
)

// Admission control: what a stranger can make the edge hold is bounded before it costs anything
// (docs/SECURITY.md lists every limit). Connections are counted before the upgrade (503 for the
// edge, 429 for one address); sessions are counted at ws_open, after the envelope is verified
// (1008 for one principal, 1013 while the deployment is full).

// parseProxies reads ICWS_TRUSTED_PROXIES: IPs or CIDRs.
func parseProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func (e *Edge) trusted(a netip.Addr) bool {
	for _, p := range e.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the address a connection is counted under: the TCP peer, or, when the peer is a
// trusted proxy, the right-most address of X-Forwarded-For that is not a trusted proxy (addresses
// further left are written by the client and cannot be believed); an IPv6 address by its prefix
// (countedAs).
func (e *Edge) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	if len(e.proxies) == 0 || !e.trusted(peer) {
		return e.countedAs(peer)
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return e.countedAs(peer) // a malformed chain: count it under the proxy itself
		}
		if a = a.Unmap(); !e.trusted(a) {
			return e.countedAs(a)
		}
	}
	return e.countedAs(peer)
}

// countedAs is what an address is counted under: itself, or for IPv6 its first
// ICWS_CONNECTIONS_IPV6_PREFIX bits, since one host may pick any address of its network.
func (e *Edge) countedAs(a netip.Addr) string {
	if a.Is4() || e.cfg.ConnectionsIPv6Prefix >= 128 {
		return a.String()
	}
	p, err := a.WithZone("").Prefix(e.cfg.ConnectionsIPv6Prefix)
	if err != nil {
		return a.String()
	}
	return p.String()
}

// admitConn counts a new connection before the upgrade. It answers the refusal itself and returns
// false; on true the caller must call releaseConnLocked(addr) once the socket is gone.
func (e *Edge) admitConn(w http.ResponseWriter, addr string) bool {
	e.mu.Lock()
	total, perIP := len(e.conns)+e.upgrading, e.byAddr[addr]
	switch {
	case total >= e.maxSockets:
		e.mu.Unlock()
		e.m.refused.WithLabelValues("max_connections").Inc()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "icws: edge at its connection limit", http.StatusServiceUnavailable)
		return false
	case perIP >= e.cfg.MaxConnectionsPerIP:
		e.mu.Unlock()
		e.m.refused.WithLabelValues("max_connections_per_ip").Inc()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "icws: too many connections from this address", http.StatusTooManyRequests)
		return false
	}
	e.byAddr[addr]++
	e.upgrading++
	e.mu.Unlock()
	return true
}

func (e *Edge) releaseConnLocked(addr string) {
	if e.byAddr[addr] <= 1 {
		delete(e.byAddr, addr)
	} else {
		e.byAddr[addr]--
	}
}

// openLimiter bounds the sessions one client address opens: each costs a record, an update call
// the canister pays for, and its place in ICWS_OUT for the replay window, and keys are free to
// make, so the per-principal limit does not bound them. An address's bucket is forgotten once it
// has refilled.
type openLimiter struct {
	mu      sync.Mutex
	addrs   map[string]*openBucket
	pruneAt int
}

type openBucket struct {
	b    tokenbucket.Bucket
	last time.Time
}

// take spends one open of addr's bucket at now, if there is one.
func (l *openLimiter) take(addr string, now time.Time, rate float64, burst int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addrs == nil {
		l.addrs, l.pruneAt = map[string]*openBucket{}, 1024
	}
	ob := l.addrs[addr]
	if ob == nil {
		if len(l.addrs) >= l.pruneAt {
			full := time.Duration(float64(burst) / rate * float64(time.Second))
			for a, o := range l.addrs {
				if now.Sub(o.last) >= full {
					delete(l.addrs, a)
				}
			}
			l.pruneAt = max(1024, 2*len(l.addrs))
		}
		ob = &openBucket{}
		l.addrs[addr] = ob
	}
	ob.last = now
	return ob.b.Take(now, 1, rate, float64(burst))
}

// admitSession decides whether a verified ws_open may become a session: the principal's session
// count, the number of canisters with sessions, the room left in the streams, and the sessions the
// client's address opened lately. It returns a close code and reason (0 to admit) and the outcome
// label for the connections metric.
func (e *Edge) admitSession(canister, principal, addr string) (int, string, string) {
	e.mu.RLock()
	local := e.byPrincipal[principal]
	e.mu.RUnlock()
	if max(local, e.index.principalSessions(principal)) >= e.cfg.MaxSessionsPerPrincipal {
		e.m.refused.WithLabelValues("max_sessions_per_principal").Inc()
		return websocket.ClosePolicyViolation, "icws: too many sessions for this principal", "rejected"
	}
	if len(e.canisters) == 0 {
		if known, n := e.index.canisterStats(canister); !known && n >= e.cfg.MaxCanisters {
			e.m.refused.WithLabelValues("max_canisters").Inc()
			return websocket.CloseTryAgainLater, "icws: the gateway serves as many canisters as it may", "refused"
		}
	}
	if full := e.streamsFull.Load(); full != nil {
		e.m.refused.WithLabelValues("streams_full").Inc()
		return websocket.CloseTryAgainLater, "icws: gateway storage is full, try again later", "refused"
	}
	if !e.opens.take(addr, time.Now(), e.cfg.MaxOpensPerIPRate, e.cfg.MaxOpensPerIPBurst) {
		e.m.refused.WithLabelValues("open_rate").Inc()
		e.warnings.Warn(e.log, "open_rate", "refusing new sessions from an address that opens more than it may (ICWS_MAX_OPENS_PER_IP_RATE)", "addr", addr)
		return websocket.CloseTryAgainLater, "icws: too many new sessions from this address, try again later", "refused"
	}
	return 0, "", ""
}

// watchStreams refreshes streamsFull: while ICWS_IN or ICWS_OUT holds more than
// StreamAdmitPercent of its byte limit, new sessions are refused so that those already open keep
// the room that is left (the streams discard new messages when full, never stored ones).
func (e *Edge) watchStreams(ctx context.Context) {
	t := time.NewTicker(max(e.cfg.SweepInterval, time.Second))
	defer t.Stop()
	for {
		e.checkStreams(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (e *Edge) checkStreams(ctx context.Context) {
	var full *string
	for _, s := range []jetstream.Stream{e.h.In, e.h.Out} {
		cctx, cancel := context.WithTimeout(ctx, e.cfg.WriteTimeout)
		info, err := s.Info(cctx)
		cancel()
		if err != nil {
			return // cannot tell: keep the last answer
		}
		if limit := info.Config.MaxBytes; limit > 0 && info.State.Bytes*100 > uint64(limit)*uint64(e.cfg.StreamAdmitPercent) {
			name := info.Config.Name
			full = &name
		}
	}
	if old := e.streamsFull.Swap(full); (old == nil) != (full == nil) {
		if full != nil {
			e.log.Warn("stream nearly full: refusing new sessions", "stream", *full, "admit_percent", e.cfg.StreamAdmitPercent)
		} else {
			e.log.Info("streams have room again: accepting new sessions")
		}
	}
}

// publishFailure maps a failed publish to ICWS_IN to the close code the client gets: a full
// stream is a 1013 (try again later), anything else a 1011.
func publishFailure(err error) (int, string) {
	if bus.IsStreamFull(err) {
		return websocket.CloseTryAgainLater, "icws: gateway storage is full, try again later"
	}
	return websocket.CloseInternalServerErr, "icws: gateway unavailable"
}
