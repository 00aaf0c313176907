package edge

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/internal/config"
)

// Config is the edge role's configuration (envconfig tags; the caller applies the ICWS_ prefix).
type Config struct {
	ID              string `envconfig:"EDGE_ID" desc:"unique id of this edge process, [A-Za-z0-9_-] (default: hostname-pid-random)"`
	Listen          string `envconfig:"LISTEN" default:":8080" desc:"WebSocket listen address"`
	MaxMessageBytes int64  `envconfig:"MAX_MESSAGE_BYTES" default:"2097152" desc:"largest client frame accepted (bytes); larger frames close the socket with 1009"`
	// MaxFirstFrameBytes bounds what a client not yet authenticated makes the edge read and check.
	MaxFirstFrameBytes int64         `envconfig:"MAX_FIRST_FRAME_BYTES" default:"65536" desc:"largest first frame accepted (bytes): the ws_open envelope, delegations included, or the resume request, read before anything about the client is known; larger ones close the socket with 1009 (at most ICWS_MAX_MESSAGE_BYTES counts)"`
	MessageTimeout     time.Duration `envconfig:"MESSAGE_TIMEOUT" default:"30s" desc:"time allowed for a client message (all its fragments) to arrive once its first bytes have; a message left unfinished longer closes the socket with 1008"`
	ReadBufferSize     int           `envconfig:"READ_BUFFER" default:"288" desc:"read buffer per connection (bytes, more than 256); kept for the connection's life, larger frames are read in pieces"`
	SendQueue          int           `envconfig:"SEND_QUEUE" default:"1024" desc:"frames queued per connection before the client is closed as slow (4101)"`
	TLSCert            string        `envconfig:"TLS_CERT" desc:"PEM certificate chain file; TLS is on when both TLS_CERT and TLS_KEY are set"`
	TLSKey             string        `envconfig:"TLS_KEY" desc:"PEM private key file (PKCS#8, PKCS#1 or EC)"`
	AllowedOrigins     []string      `envconfig:"ALLOWED_ORIGINS" desc:"comma-separated Origin allow-list; empty = any"`
	Canisters          []string      `envconfig:"CANISTERS" desc:"comma-separated canister ids clients may open; empty = any"`
	ResumeGrace        time.Duration `envconfig:"RESUME_GRACE" default:"30s" desc:"how long a detached resumable session waits for a resume before the gateway closes it"`
	HandshakeTimeout   time.Duration `envconfig:"HANDSHAKE_TIMEOUT" default:"10s" desc:"time allowed for the HTTP upgrade (and TLS handshake)"`
	WriteTimeout       time.Duration `envconfig:"WRITE_TIMEOUT" default:"10s" desc:"time allowed to write one frame to a client"`
	DrainTimeout       time.Duration `envconfig:"DRAIN_TIMEOUT" default:"10s" desc:"bound on the graceful shutdown (close sockets with 1001, detach sessions)"`
	OpenTimeout        time.Duration `envconfig:"OPEN_TIMEOUT" default:"30s" desc:"time allowed between the handshake and the client's first frame (ws_open or resume)"`
	LeaseTTL           time.Duration `envconfig:"EDGE_LEASE_TTL" default:"3s" desc:"liveness lease of this edge; renewed every TTL/3; sessions of an edge whose lease expired are detached by others"`
	SweepInterval      time.Duration `envconfig:"EDGE_SWEEP_INTERVAL" default:"1s" desc:"how often the edge looks for expired detached sessions and sessions of dead edges"`
	SweepBatch         int           `envconfig:"EDGE_SWEEP_BATCH" default:"1024" desc:"most sessions acted on per sweep (bounds the sweeper's work; with ICWS_EDGE_SWEEP_INTERVAL, how many abandoned sessions an edge ends per second)"`
	SweepConcurrency   int           `envconfig:"EDGE_SWEEP_CONCURRENCY" default:"16" desc:"sessions a sweep acts on at once (each takes a few NATS round trips; one at a time, a sweep could not keep up with clients that drop resumable sessions quickly)"`
	GapTimeout         time.Duration `envconfig:"GAP_TIMEOUT" default:"5s" desc:"how long a missing canister message may stay missing from the stream before the socket is closed (1011)"`
	PendingLimit       int           `envconfig:"PENDING_LIMIT" default:"4096" desc:"out-of-order canister messages buffered per connection while a gap is filled"`
	PendingBytes       int           `envconfig:"PENDING_BYTES" default:"8388608" desc:"bytes of out-of-order canister messages buffered per connection while a gap is filled (beyond it they are re-read from the stream)"`
	SendQueueBytes     int           `envconfig:"SEND_QUEUE_BYTES" default:"8388608" desc:"bytes of frames queued per connection before the client is closed as slow (4101); one larger frame alone is always queued"`
	LeaseSkew          time.Duration `envconfig:"EDGE_LEASE_SKEW" default:"1s" desc:"clock skew tolerated between edges: another edge's lease counts as expired only this long after its ExpiresAt"`
	MaxClientRate      float64       `envconfig:"MAX_CLIENT_RATE" default:"200" desc:"client messages (pings and pongs included) per second one connection may send on average; more closes it with 1008"`
	MaxClientBurst     int           `envconfig:"MAX_CLIENT_BURST" default:"2000" desc:"client messages one connection may send in a burst above MAX_CLIENT_RATE"`

	MaxClientBytesRate      config.Bytes  `envconfig:"MAX_CLIENT_BYTES_RATE" default:"1MiB" desc:"client bytes per second one connection may send on average, counted as read from the socket; more closes it with 1008"`
	MaxClientBytesBurst     config.Bytes  `envconfig:"MAX_CLIENT_BYTES_BURST" default:"8MiB" desc:"client bytes one connection may send in a burst above ICWS_MAX_CLIENT_BYTES_RATE (at least ICWS_MAX_MESSAGE_BYTES + 1KiB); bytes are counted as read from the socket, frame headers, fragments, pings and pongs included"`
	MaxUnfinishedBytes      config.Bytes  `envconfig:"MAX_UNFINISHED_BYTES" default:"256MiB" desc:"bytes of client messages still arriving that one edge holds at once, over all connections (at least ICWS_MAX_MESSAGE_BYTES); while above it, a connection whose unfinished message grows past ICWS_MAX_FIRST_FRAME_BYTES is closed with 1013"`
	MaxConnections          int           `envconfig:"MAX_CONNECTIONS" default:"100000" desc:"sockets one edge holds at once, WebSocket connections and HTTP requests not yet upgraded, and at most the process's open-file limit less ICWS_FD_RESERVE; further upgrade requests are answered 503, further sockets closed at once"`
	FDReserve               int           `envconfig:"FD_RESERVE" default:"1024" desc:"file descriptors of the process the edge leaves to everything else (the embedded NATS store, calls to the IC, the admin server): a process out of them fails the NATS store's writes until restarted; at most half the open-file limit is kept"`
	MaxConnectionsPerIP     int           `envconfig:"MAX_CONNECTIONS_PER_IP" default:"1000" desc:"WebSocket connections one client IP address may hold on one edge (IPv6 addresses counted per ICWS_CONNECTIONS_IPV6_PREFIX); more are answered 429"`
	MaxOpensPerIPRate       float64       `envconfig:"MAX_OPENS_PER_IP_RATE" default:"100" desc:"new sessions (ws_open) per second one client address may open on one edge on average; more are refused with 1013 (resumes do not count)"`
	MaxOpensPerIPBurst      int           `envconfig:"MAX_OPENS_PER_IP_BURST" default:"1000" desc:"new sessions one client address may open at once above ICWS_MAX_OPENS_PER_IP_RATE (a page load behind a shared address, clients reopening after an edge went away)"`
	ConnectionsIPv6Prefix   int           `envconfig:"CONNECTIONS_IPV6_PREFIX" default:"64" desc:"IPv6 clients are counted for ICWS_MAX_CONNECTIONS_PER_IP by their first this many bits: one host usually has a whole /64 to pick addresses from"`
	TrustedProxies          []string      `envconfig:"TRUSTED_PROXIES" desc:"comma-separated IPs or CIDRs of reverse proxies whose X-Forwarded-For names the client address; empty = use the TCP peer address"`
	MaxSessionsPerPrincipal int           `envconfig:"MAX_SESSIONS_PER_PRINCIPAL" default:"100" desc:"sessions one client principal may hold across the deployment; more ws_open calls are refused with 1008"`
	MaxCanisters            int           `envconfig:"MAX_CANISTERS" default:"1000" desc:"canisters with sessions at once (when ICWS_CANISTERS is empty); a session for one more canister is refused with 1013, and pollers poll no more"`
	OpenConfirmTimeout      time.Duration `envconfig:"OPEN_CONFIRM_TIMEOUT" default:"6m" desc:"how long a session waits for the IC to execute its ws_open before the socket is closed (1011); the client's messages wait meanwhile"`
	IngressMaxTTL           time.Duration `envconfig:"INGRESS_MAX_TTL" default:"5m" desc:"longest ingress_expiry ahead of now accepted on a client envelope (the IC's limit)"`
	IngressDrift            time.Duration `envconfig:"INGRESS_DRIFT" default:"30s" desc:"clock drift allowance on the ingress_expiry window of client envelopes (the IC's allowance)"`
	HTTPIdleTimeout         time.Duration `envconfig:"HTTP_IDLE_TIMEOUT" default:"30s" desc:"how long a keep-alive HTTP connection that never upgraded may stay idle"`
	HTTPMaxHeaderBytes      int           `envconfig:"HTTP_MAX_HEADER_BYTES" default:"16384" desc:"largest HTTP request header accepted on the WebSocket port (431 above)"`
	StreamAdmitPercent      int           `envconfig:"STREAM_ADMIT_PERCENT" default:"90" desc:"new sessions are refused (1013) while ICWS_IN or ICWS_OUT holds more than this percentage of its byte limit"`
	LiveSubscription        string        `envconfig:"EDGE_LIVE_SUBSCRIPTION" default:"canister" desc:"how the edge subscribes to live canister messages: canister = one NATS subscription per canister it serves (about 2 KB less per session; every edge serving a canister receives all of the canister's messages and drops the others' ones), session = one per session (each message reaches only its session's edge: for many edges sharing a busy canister)"`

	PingInterval      time.Duration `envconfig:"PING_INTERVAL" default:"10s" desc:"the edge sends a WebSocket ping to a client connection that sent nothing (frame or pong) for this long"`
	PingTimeout       time.Duration `envconfig:"PING_TIMEOUT" default:"10s" desc:"a client connection that answers a ping with nothing for this long is closed as dead (half-open TCP); its session is detached (resumable) or closed"`
	HeartbeatInterval time.Duration `envconfig:"HEARTBEAT_INTERVAL" default:"1s" desc:"resumable connections that ask for heartbeats (icws-heartbeat=1) get an icws_heartbeat frame after this long without any other frame; their clients resume elsewhere after 2 × this of silence"`
	NATSTimeout       time.Duration `envconfig:"EDGE_NATS_TIMEOUT" default:"3s" desc:"when the NATS server has not answered the edge for this long, the edge closes its clients (resumable ones with 4103: resume elsewhere) and refuses new ones with 1013 until NATS answers again; after a quarter of it the edge tries another NATS server. Not used with the embedded NATS server of all and dev"`
	JetStreamTimeout  time.Duration `envconfig:"EDGE_JETSTREAM_TIMEOUT" default:"10s" desc:"when the edge's lease renewals have failed for twice this although its NATS server answers (JetStream unreachable: ICWS_NATS_JETSTREAM_TIMEOUT moves the process to another server first), the edge closes its clients as for EDGE_NATS_TIMEOUT. Relays, resumes and history reads are retried for twice this before a client is closed with 1011. Longer than a JetStream leader election (4-9 s)"`
}

// The values of Config.LiveSubscription.
const (
	LiveByCanister = "canister"
	LiveBySession  = "session"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// minLivenessPeriod bounds the liveness settings from below: the edge-wide liveness walk and the
// NATS probe cannot act at a finer grain than their ticks.
const minLivenessPeriod = 100 * time.Millisecond

// DefaultConfig returns the defaults the envconfig tags declare (the id is chosen by validate).
func DefaultConfig() Config { return config.MustDefaults[Config]() }

func defaultID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "edge"
	}
	h = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, h)
	if len(h) > 40 {
		h = h[:40]
	}
	// A random part keeps ids unique across restarts of a container (same hostname, pid 1), so a
	// restarted edge never mistakes the previous process's lease and sessions for its own.
	var r [3]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%s-%d-%s", h, os.Getpid(), hex.EncodeToString(r[:]))
}

// Validate reports what is wrong with the configuration, naming each variable; New refuses the
// same (a command checks it before it starts anything).
func (c Config) Validate() error { return c.validate() }

// validate checks the limits and fills the id.
func (c *Config) validate() error {
	if c.ID == "" {
		c.ID = defaultID()
	}
	var errs []error
	if !idPattern.MatchString(c.ID) {
		errs = append(errs, fmt.Errorf("ICWS_EDGE_ID=%q: must be 1-64 characters of [A-Za-z0-9_-]", c.ID))
	}
	if c.MaxMessageBytes < 1024 {
		errs = append(errs, fmt.Errorf("ICWS_MAX_MESSAGE_BYTES=%d: must be at least 1024", c.MaxMessageBytes))
	}
	if c.MaxFirstFrameBytes < 1024 {
		errs = append(errs, fmt.Errorf("ICWS_MAX_FIRST_FRAME_BYTES=%d: must be at least 1024", c.MaxFirstFrameBytes))
	}
	if c.MessageTimeout < time.Second {
		errs = append(errs, fmt.Errorf("ICWS_MESSAGE_TIMEOUT=%s: must be at least 1s", c.MessageTimeout))
	}
	// gorilla reads through the edge's buffered reader only if it is larger than 256 bytes.
	if c.ReadBufferSize <= 256 || c.ReadBufferSize > 1<<20 {
		errs = append(errs, fmt.Errorf("ICWS_READ_BUFFER=%d: must be between 257 and 1048576", c.ReadBufferSize))
	}
	if c.SendQueue < 1 {
		errs = append(errs, fmt.Errorf("ICWS_SEND_QUEUE=%d: must be at least 1", c.SendQueue))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("ICWS_TLS_CERT and ICWS_TLS_KEY: set both or neither"))
	}
	for _, cid := range c.Canisters {
		if _, err := principal.Decode(cid); err != nil {
			errs = append(errs, fmt.Errorf("ICWS_CANISTERS: %q is not a principal: %w", cid, err))
		}
	}
	for name, d := range map[string]time.Duration{
		"ICWS_RESUME_GRACE": c.ResumeGrace, "ICWS_HANDSHAKE_TIMEOUT": c.HandshakeTimeout,
		"ICWS_WRITE_TIMEOUT": c.WriteTimeout, "ICWS_DRAIN_TIMEOUT": c.DrainTimeout,
		"ICWS_OPEN_TIMEOUT": c.OpenTimeout, "ICWS_EDGE_LEASE_TTL": c.LeaseTTL,
		"ICWS_EDGE_SWEEP_INTERVAL": c.SweepInterval, "ICWS_GAP_TIMEOUT": c.GapTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%s: must be positive", name, d))
		}
	}
	if c.SweepBatch < 1 {
		errs = append(errs, fmt.Errorf("ICWS_EDGE_SWEEP_BATCH=%d: must be at least 1", c.SweepBatch))
	}
	if c.SweepConcurrency < 1 || c.SweepConcurrency > 1024 {
		errs = append(errs, fmt.Errorf("ICWS_EDGE_SWEEP_CONCURRENCY=%d: must be between 1 and 1024", c.SweepConcurrency))
	}
	if c.PendingLimit < 1 {
		errs = append(errs, fmt.Errorf("ICWS_PENDING_LIMIT=%d: must be at least 1", c.PendingLimit))
	}
	if c.PendingBytes < 1 {
		errs = append(errs, fmt.Errorf("ICWS_PENDING_BYTES=%d: must be at least 1", c.PendingBytes))
	}
	if c.SendQueueBytes < 1 {
		errs = append(errs, fmt.Errorf("ICWS_SEND_QUEUE_BYTES=%d: must be at least 1", c.SendQueueBytes))
	}
	if c.LeaseSkew < 0 {
		errs = append(errs, fmt.Errorf("ICWS_EDGE_LEASE_SKEW=%s: must not be negative", c.LeaseSkew))
	}
	if c.MaxClientRate <= 0 {
		errs = append(errs, fmt.Errorf("ICWS_MAX_CLIENT_RATE=%g: must be positive", c.MaxClientRate))
	}
	if c.MaxClientBurst < 1 {
		errs = append(errs, fmt.Errorf("ICWS_MAX_CLIENT_BURST=%d: must be at least 1", c.MaxClientBurst))
	}
	if c.MaxClientBytesRate < 1 {
		errs = append(errs, fmt.Errorf("ICWS_MAX_CLIENT_BYTES_RATE=%d: must be positive", c.MaxClientBytesRate))
	}
	// The burst counts bytes as read, frame headers included.
	if int64(c.MaxClientBytesBurst) < c.MaxMessageBytes+1024 {
		errs = append(errs, fmt.Errorf("ICWS_MAX_CLIENT_BYTES_BURST=%d: must be at least ICWS_MAX_MESSAGE_BYTES (%d) + 1KiB, or the largest frame with its header could never pass", c.MaxClientBytesBurst, c.MaxMessageBytes))
	}
	if int64(c.MaxUnfinishedBytes) < c.MaxMessageBytes {
		errs = append(errs, fmt.Errorf("ICWS_MAX_UNFINISHED_BYTES=%d: must be at least ICWS_MAX_MESSAGE_BYTES (%d), or the largest message could never be read", c.MaxUnfinishedBytes, c.MaxMessageBytes))
	}
	for name, n := range map[string]int{
		"ICWS_MAX_CONNECTIONS": c.MaxConnections, "ICWS_MAX_CONNECTIONS_PER_IP": c.MaxConnectionsPerIP,
		"ICWS_MAX_SESSIONS_PER_PRINCIPAL": c.MaxSessionsPerPrincipal, "ICWS_MAX_CANISTERS": c.MaxCanisters,
		"ICWS_HTTP_MAX_HEADER_BYTES": c.HTTPMaxHeaderBytes,
	} {
		if n < 1 {
			errs = append(errs, fmt.Errorf("%s=%d: must be at least 1", name, n))
		}
	}
	if c.FDReserve < 0 {
		errs = append(errs, fmt.Errorf("ICWS_FD_RESERVE=%d: must not be negative", c.FDReserve))
	}
	if c.MaxOpensPerIPRate <= 0 {
		errs = append(errs, fmt.Errorf("ICWS_MAX_OPENS_PER_IP_RATE=%g: must be positive", c.MaxOpensPerIPRate))
	}
	if c.MaxOpensPerIPBurst < 1 {
		errs = append(errs, fmt.Errorf("ICWS_MAX_OPENS_PER_IP_BURST=%d: must be at least 1", c.MaxOpensPerIPBurst))
	}
	if c.ConnectionsIPv6Prefix < 1 || c.ConnectionsIPv6Prefix > 128 {
		errs = append(errs, fmt.Errorf("ICWS_CONNECTIONS_IPV6_PREFIX=%d: must be between 1 and 128", c.ConnectionsIPv6Prefix))
	}
	if c.LiveSubscription != LiveByCanister && c.LiveSubscription != LiveBySession {
		errs = append(errs, fmt.Errorf("ICWS_EDGE_LIVE_SUBSCRIPTION=%q: must be %s or %s", c.LiveSubscription, LiveByCanister, LiveBySession))
	}
	if c.StreamAdmitPercent < 1 || c.StreamAdmitPercent > 100 {
		errs = append(errs, fmt.Errorf("ICWS_STREAM_ADMIT_PERCENT=%d: must be between 1 and 100", c.StreamAdmitPercent))
	}
	for name, d := range map[string]time.Duration{
		"ICWS_OPEN_CONFIRM_TIMEOUT": c.OpenConfirmTimeout, "ICWS_INGRESS_MAX_TTL": c.IngressMaxTTL,
		"ICWS_HTTP_IDLE_TIMEOUT": c.HTTPIdleTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%s: must be positive", name, d))
		}
	}
	for name, d := range map[string]time.Duration{
		"ICWS_PING_INTERVAL": c.PingInterval, "ICWS_PING_TIMEOUT": c.PingTimeout,
		"ICWS_HEARTBEAT_INTERVAL": c.HeartbeatInterval, "ICWS_EDGE_NATS_TIMEOUT": c.NATSTimeout,
		"ICWS_EDGE_JETSTREAM_TIMEOUT": c.JetStreamTimeout,
	} {
		if d < minLivenessPeriod {
			errs = append(errs, fmt.Errorf("%s=%s: must be at least %s", name, d, minLivenessPeriod))
		}
	}
	if c.JetStreamTimeout < c.NATSTimeout {
		errs = append(errs, fmt.Errorf("ICWS_EDGE_JETSTREAM_TIMEOUT=%s: must be at least ICWS_EDGE_NATS_TIMEOUT (%s)", c.JetStreamTimeout, c.NATSTimeout))
	}
	if c.IngressDrift < 0 {
		errs = append(errs, fmt.Errorf("ICWS_INGRESS_DRIFT=%s: must not be negative", c.IngressDrift))
	}
	if _, err := parseProxies(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("ICWS_TRUSTED_PROXIES: %w", err))
	}
	return errors.Join(errs...)
}
