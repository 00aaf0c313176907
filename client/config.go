package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/gorilla/websocket"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
)

// Defaults, as in ic-websocket-js 0.5.0 where it has one.
const (
	DefaultAckInterval    = 300 * time.Second // CDK send_ack_interval_ms default
	DefaultMaxCertAge     = 5 * time.Minute   // SDK maxCertificateAgeInMinutes
	DefaultOpenTimeout    = 60 * time.Second  // SDK: 2 × COMMUNICATION_LATENCY_BOUND_MS
	DefaultReconnectMin   = 100 * time.Millisecond
	DefaultReconnectMax   = 2 * time.Second
	DefaultResumeTimeout  = 60 * time.Second
	DefaultWriteTimeout   = 10 * time.Second
	DefaultPingInterval   = 15 * time.Second
	DefaultConnectTimeout = 5 * time.Second
	DefaultMessageBuffer  = 256
	DefaultMaxPending     = 10000
	DefaultMaxFrameSize   = 32 << 20

	// CommunicationLatencyBound is the SDK's slack added to the ack interval for its watchdog.
	CommunicationLatencyBound = 30 * time.Second
)

// Config configures a client connection. Zero values take the defaults above.
type Config struct {
	// GatewayURL is the ws:// or wss:// address of an ic-websocket gateway.
	GatewayURL string
	// ICURL is the IC HTTP endpoint whose /api/v2/status gives the root key. Unused when RootKey is
	// set or when ICURL is a mainnet boundary node (then the mainnet root key is used).
	ICURL string
	// RootKey is the DER-encoded BLS root key certificates are checked against.
	RootKey []byte
	// Canister is the canister to talk to.
	Canister principal.Principal
	// Identity signs the client's calls; it must not be anonymous.
	Identity identity.Identity
	// AckInterval must equal the canister's send_ack_interval; the ack watchdog fires after
	// AckInterval + LatencyBound without an AckMessage once something was sent.
	AckInterval time.Duration
	// LatencyBound is the SDK's COMMUNICATION_LATENCY_BOUND_MS (30 s), the slack of the watchdog.
	LatencyBound time.Duration
	// MaxCertAge is the oldest certificate accepted.
	MaxCertAge time.Duration
	// Resume opts into the icws resume extension: on a dropped connection the client reconnects with
	// exponential backoff (ReconnectMin..ReconnectMax) for at most ResumeTimeout and resumes the
	// session. Gateways without the extension are served as if Resume were false.
	Resume        bool
	ReconnectMin  time.Duration
	ReconnectMax  time.Duration
	ResumeTimeout time.Duration
	// PingInterval: on icws connections with resume, the client pings the gateway this often and
	// treats two intervals of silence as a dropped connection (then resumes). Never used with
	// gateways that do not offer resume (the Rust gateway ends a session on a ping). Negative
	// disables it.
	PingInterval time.Duration
	// HeartbeatSilence: with Resume on, the client asks the gateway for heartbeat frames
	// (docs/RESUME.md §7) and treats a connection on which nothing arrived for this long as
	// dropped, then resumes (elsewhere, if the gateway hangs). 0 means twice the interval the
	// gateway announces; negative means do not ask for heartbeats.
	HeartbeatSilence time.Duration
	// ConnectTimeout bounds one connection attempt: dial, WebSocket upgrade and the gateway's
	// handshake (and, when resuming, its answer), so that a hung gateway costs one attempt, not
	// ResumeTimeout.
	ConnectTimeout time.Duration
	// OpenTimeout bounds the wait for the canister's OpenMessage after ws_open was sent.
	OpenTimeout time.Duration
	// WriteTimeout bounds every frame write.
	WriteTimeout time.Duration
	// MessageBuffer is the capacity of Messages(); a full buffer stops reading from the gateway.
	MessageBuffer int
	// MaxPending bounds the sent ws_messages kept for re-sending until the gateway or canister
	// confirms them.
	MaxPending int
	// MaxFrameSize bounds an incoming frame.
	MaxFrameSize int64
	// Logger receives debug and warning logs; nil discards them.
	Logger *slog.Logger
	// Dialer opens WebSockets; nil means websocket.DefaultDialer.
	Dialer *websocket.Dialer
	// HTTPClient fetches the root key; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Now is the clock for certificate checks and timestamps; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.GatewayURL == "" {
		return errors.New("client: GatewayURL is required")
	}
	u, err := url.Parse(c.GatewayURL)
	if err != nil {
		return fmt.Errorf("client: GatewayURL: %w", err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("client: GatewayURL %q: scheme must be ws or wss", c.GatewayURL)
	}
	if len(c.Canister.Raw) == 0 {
		return errors.New("client: Canister is required")
	}
	if c.Identity == nil {
		return errors.New("client: Identity is required")
	}
	if p := c.Identity.Sender(); p.Equal(principal.AnonymousID) || len(c.Identity.PublicKey()) == 0 {
		return errors.New("client: Identity must be a signing identity, not anonymous")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AckInterval, DefaultAckInterval)
	def(&c.LatencyBound, CommunicationLatencyBound)
	def(&c.MaxCertAge, DefaultMaxCertAge)
	def(&c.ReconnectMin, DefaultReconnectMin)
	def(&c.ReconnectMax, DefaultReconnectMax)
	def(&c.ResumeTimeout, DefaultResumeTimeout)
	def(&c.OpenTimeout, DefaultOpenTimeout)
	def(&c.ConnectTimeout, DefaultConnectTimeout)
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	def(&c.WriteTimeout, DefaultWriteTimeout)
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = c.ReconnectMin
	}
	if c.MessageBuffer <= 0 {
		c.MessageBuffer = DefaultMessageBuffer
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Dialer == nil {
		c.Dialer = websocket.DefaultDialer
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// isMainnet follows ic-agent's rule: only the two boundary node hosts count as mainnet.
func isMainnet(icURL string) bool {
	u, err := url.Parse(icURL)
	if err != nil {
		return false
	}
	return u.Scheme == "https" && protocol.IsMainnetHost(u.Host)
}

// RootKey returns the root key to verify against: cfg.RootKey, the mainnet key for mainnet URLs,
// or the key served at <ICURL>/api/v2/status.
func RootKey(ctx context.Context, icURL string, explicit []byte, hc *http.Client) ([]byte, error) {
	if len(explicit) > 0 {
		return explicit, nil
	}
	if icURL == "" {
		return nil, errors.New("root key: neither RootKey nor ICURL is set")
	}
	if isMainnet(icURL) {
		return certificate.MainnetRootKey(), nil
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(icURL, "/")+"/api/v2/status", nil)
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("root key: read status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("root key: GET /api/v2/status: HTTP %d", resp.StatusCode)
	}
	key, err := protocol.RootKeyOfStatus(body)
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	return key, nil
}
