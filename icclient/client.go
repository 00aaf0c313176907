// Package icclient is the gateway's HTTP client for the Internet Computer: it signs its own update
// calls, queries and read_state requests, relays client-signed envelopes byte for byte, and verifies
// every answer it acts on (certificates against the root key, query answers against node keys that
// it caches per effective canister).
package icclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/internal/redact"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
	"golang.org/x/sync/singleflight"
)

// Config configures a Client.
type Config struct {
	// URL is the IC API base URL (ICWS_IC_URL), e.g. https://icp-api.io or http://127.0.0.1:4943.
	URL string
	// RootKey is the DER root key. Empty: the mainnet key for mainnet URLs (never fetched), else
	// the key fetched from /api/v2/status at New.
	RootKey []byte
	// Identity signs the gateway's own requests (its Ed25519 key).
	Identity identity.Identity
	// HTTPClient defaults to a client with a 30 s timeout whose transport keeps MaxIdleConns
	// connections to the endpoint.
	HTTPClient *http.Client
	// MaxIdleConns is how many idle connections to the endpoint the default HTTPClient keeps for
	// reuse. Default 64.
	MaxIdleConns int
	// CallAPIVersion is the call endpoint version: 3 (default, synchronous) or 2.
	CallAPIVersion int
	Logger         *slog.Logger
	// IngressExpiry is how far ahead signed requests expire, and the largest accepted certificate
	// age. Default 4m.
	IngressExpiry time.Duration
	// NodeKeyTTL is how long subnet node keys stay cached per effective canister. Default 5m.
	NodeKeyTTL time.Duration
	// NodeKeyMinRefresh is the least time between two key fetches for the same canister that a
	// failed query verification may trigger. Default 10s.
	NodeKeyMinRefresh time.Duration
	// PollInterval is the first delay between read_state polls after a 202; it doubles up to 1 s.
	// Default 100ms.
	PollInterval time.Duration
	// MaxResponseBytes bounds the size of an answer body. Default 16 MiB.
	MaxResponseBytes int64
	// SkipQuerySignatures accepts query answers without checking their node signatures, for
	// local replicas that do not sign them. New refuses it for mainnet URLs.
	SkipQuerySignatures bool
}

// pooledTransport is Go's default transport keeping up to idle connections to the endpoint.
// The default keeps two per host, so with more requests than that in flight (the submitter's
// partitions, the pollers, the ws_close calls of a closing edge) each extra request opened a
// connection, a TLS handshake on the IC, and left a socket in TIME_WAIT.
func pooledTransport(idle int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = idle
	t.MaxIdleConnsPerHost = idle
	return t
}

// Client talks to one IC HTTP endpoint. It is safe for concurrent use.
type Client struct {
	cfg     Config
	base    string
	rootKey []byte
	log     *slog.Logger
	http    *http.Client

	keysMu sync.Mutex
	keys   map[string]*nodeKeys // by effective canister text
	keysSF singleflight.Group
	// certKeys remembers the parsed root key and verified subnet delegations: every certified
	// answer of a subnet carries the same delegation.
	certKeys certificate.KeyCache
	// bodies holds answer buffers (*[]byte) for the answers whose bytes are not kept after
	// decoding (queries): a poller reads one near-full answer per poll, and growing a fresh buffer
	// for each cost more than the decoding.
	bodies sync.Pool
}

// New checks the configuration and settles the root key.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("icclient: no IC URL")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("icclient: IC URL %q: want http(s)://host[:port] without a query", redact.URL(cfg.URL))
	}
	if cfg.Identity == nil {
		return nil, errors.New("icclient: no identity")
	}
	if cfg.SkipQuerySignatures && protocol.IsMainnetHost(u.Hostname()) {
		return nil, fmt.Errorf("icclient: %s is the mainnet: query signatures are always verified there", cfg.URL)
	}
	if cfg.CallAPIVersion == 0 {
		cfg.CallAPIVersion = 3
	}
	if cfg.CallAPIVersion != 2 && cfg.CallAPIVersion != 3 {
		return nil, fmt.Errorf("icclient: call API version %d: want 2 or 3", cfg.CallAPIVersion)
	}
	if cfg.MaxIdleConns <= 0 {
		cfg.MaxIdleConns = 64
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{
			Timeout: 30 * time.Second, Transport: pooledTransport(cfg.MaxIdleConns),
			// The IC's HTTP interface never redirects; following one would send signed requests
			// wherever the endpoint (or whoever sits on a plain-HTTP path to it) points.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.IngressExpiry <= 0 {
		cfg.IngressExpiry = 4 * time.Minute
	}
	if cfg.IngressExpiry > 5*time.Minute {
		return nil, fmt.Errorf("icclient: ingress expiry %s: at most 5m", cfg.IngressExpiry)
	}
	if cfg.NodeKeyTTL <= 0 {
		cfg.NodeKeyTTL = 5 * time.Minute
	}
	if cfg.NodeKeyMinRefresh <= 0 {
		cfg.NodeKeyMinRefresh = 10 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 16 << 20
	}
	c := &Client{
		cfg:  cfg,
		base: strings.TrimRight(cfg.URL, "/"),
		log:  cfg.Logger,
		http: cfg.HTTPClient,
		keys: make(map[string]*nodeKeys),
	}
	if c.rootKey, err = c.settleRootKey(ctx, u); err != nil {
		return nil, err
	}
	if cfg.SkipQuerySignatures {
		c.log.Warn("ic query answers are accepted without checking their node signatures (only for local replicas)", "url", redact.URL(c.base))
	}
	return c, nil
}

// settleRootKey returns the configured root key, the built-in key for mainnet hosts (never
// fetched), or the key fetched from /api/v2/status, checked to be a DER BLS key.
func (c *Client) settleRootKey(ctx context.Context, u *url.URL) ([]byte, error) {
	var key []byte
	switch {
	case len(c.cfg.RootKey) > 0:
		key = c.cfg.RootKey
		c.log.Info("ic root key: given (ICWS_IC_ROOT_KEY, or the replica of icws dev)", "url", redact.URL(c.base))
	case protocol.IsMainnetHost(u.Hostname()):
		key = certificate.MainnetRootKey()
		c.log.Info("ic root key: built-in mainnet key", "url", redact.URL(c.base))
	default:
		k, err := c.fetchRootKey(ctx)
		if err != nil {
			return nil, err
		}
		key = k
		c.log.Warn("ic root key fetched from the network (trust on first use; only for local/test networks)", "url", redact.URL(c.base))
	}
	if _, err := certificate.ParseBLSPublicKeyDER(key); err != nil {
		return nil, fmt.Errorf("icclient: root key is not a DER BLS key: %w", err)
	}
	return key, nil
}

// RootKey settles the root key of the IC at icURL as New does, for a role that needs the key but
// makes no requests of its own (the edge verifies canister signatures with it): configured when
// set, the built-in key for mainnet hosts (never fetched), else the key at <icURL>/api/v2/status
// (trust on first use, for local and test networks), fetched once with hc (nil: a client with a
// 30 s timeout). The caller bounds the fetch with ctx.
func RootKey(ctx context.Context, icURL string, configured []byte, hc *http.Client, logger *slog.Logger) ([]byte, error) {
	u, err := url.Parse(icURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("icclient: IC URL %q: want http(s)://host[:port]", icURL)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		cfg:  Config{URL: icURL, RootKey: configured, MaxResponseBytes: 1 << 20},
		base: strings.TrimRight(icURL, "/"),
		log:  logger,
		http: hc,
	}
	return c.settleRootKey(ctx, u)
}

// RootKey returns the DER root key the client verifies against.
func (c *Client) RootKey() []byte { return c.rootKey }

// Principal is the gateway principal (the identity's sender).
func (c *Client) Principal() principal.Principal { return c.cfg.Identity.Sender() }

func (c *Client) fetchRootKey(ctx context.Context) ([]byte, error) {
	body, err := c.do(ctx, http.MethodGet, "/api/v2/status", nil, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("icclient: fetch root key: %w", err)
	}
	key, err := protocol.RootKeyOfStatus(body.data)
	if errors.Is(err, protocol.ErrNoRootKey) {
		return nil, fmt.Errorf("icclient: fetch root key: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("icclient: fetch root key: %w", &DecodeError{err})
	}
	return key, nil
}

type answer struct {
	status int
	data   []byte
	buf    *[]byte // data's pooled buffer; see release
}

// pooledBodyLimit is the largest answer buffer kept for reuse: a rare huge answer must not stay
// behind in the pool.
const pooledBodyLimit = 1 << 20

// release hands the answer's buffer back for reuse; a.data must no longer be referenced.
func (c *Client) release(a answer) {
	if a.buf != nil && cap(*a.buf) <= pooledBodyLimit {
		*a.buf = (*a.buf)[:0]
		c.bodies.Put(a.buf)
	}
}

// readBody reads at most limit+1 bytes of r into a pooled buffer. The buffer grows with what
// arrives, never with a length the peer declared.
func (c *Client) readBody(r io.Reader, limit int64) (*[]byte, error) {
	buf, _ := c.bodies.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	b := (*buf)[:0]
	for int64(len(b)) <= limit {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // let append pick the next capacity
		}
		room := b[len(b):cap(b)]
		if over := int64(len(b)) + int64(len(room)) - (limit + 1); over > 0 {
			room = room[:int64(len(room))-over]
		}
		n, err := r.Read(room)
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*buf = b
			c.release(answer{buf: buf})
			return nil, err
		}
	}
	*buf = b
	return buf, nil
}

// do sends one request and returns the body if the status is one of ok; other statuses become
// *HTTPError, network failures *TransportError.
func (c *Client) do(ctx context.Context, method, path string, body []byte, ok ...int) (answer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return answer{}, fmt.Errorf("build request %s: %w", path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/cbor")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return answer{}, fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		}
		return answer{}, &TransportError{fmt.Errorf("%s %s: %w", method, path, err)}
	}
	defer resp.Body.Close()
	buf, err := c.readBody(resp.Body, c.cfg.MaxResponseBytes)
	if err != nil {
		if ctx.Err() != nil {
			return answer{}, fmt.Errorf("%s %s: read answer: %w", method, path, ctx.Err())
		}
		return answer{}, &TransportError{fmt.Errorf("%s %s: read answer: %w", method, path, err)}
	}
	data := *buf
	if int64(len(data)) > c.cfg.MaxResponseBytes {
		c.release(answer{buf: buf})
		return answer{}, &DecodeError{fmt.Errorf("%s %s: answer larger than %d bytes", method, path, c.cfg.MaxResponseBytes)}
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return answer{status: resp.StatusCode, data: data, buf: buf}, nil
		}
	}
	text := strings.TrimSpace(string(data))
	c.release(answer{buf: buf})
	if len(text) > 512 {
		text = text[:512] + "…"
	}
	return answer{}, &HTTPError{StatusCode: resp.StatusCode, Body: text, URL: method + " " + path}
}

// Status asks the IC for its status and only checks that an answer came: a probe of whether the
// IC can be reached from here.
func (c *Client) Status(ctx context.Context) error {
	a, err := c.do(ctx, http.MethodGet, "/api/v2/status", nil, http.StatusOK)
	if err != nil {
		return err
	}
	c.release(a)
	return nil
}

func (c *Client) newRequest(typ string) Request {
	return Request{Type: typ, IngressExpiry: time.Now().Add(c.cfg.IngressExpiry)}
}

func randomNonce() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}
