// Package bench measures a running ic-websocket gateway with many Go clients against the demo
// canister (echo and burst:N): open time, client → canister → client round trips, and canister →
// client delivery (throughput and the latency from the canister's send to the client's receipt).
// It is the engine of `icws bench`; run it against `icws dev` on one host, where the canister's
// clock and the client's clock are the same.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"golang.org/x/sync/errgroup"

	"github.com/icws/icws/client"
	"github.com/icws/icws/protocol"
)

// Config says what to run.
type Config struct {
	GatewayURL string
	ICURL      string
	Canister   principal.Principal
	// Clients connect at once; each sends Messages echo requests and asks for one burst of Burst messages.
	Clients  int
	Messages int
	Burst    int
	// Window bounds the echo requests a client has in flight (1 = strict ping-pong).
	Window      int
	AckInterval time.Duration
	Logger      *slog.Logger
}

// Validate checks the numbers.
func (c Config) Validate() error {
	switch {
	case c.Clients < 1:
		return fmt.Errorf("clients must be at least 1 (got %d)", c.Clients)
	case c.Messages < 0 || c.Burst < 0:
		return errors.New("messages and burst must not be negative")
	case c.Window < 1:
		return fmt.Errorf("window must be at least 1 (got %d)", c.Window)
	}
	return nil
}

// Result holds the measured figures.
type Result struct {
	Clients int
	// Open is the time from dial to a verified OpenMessage, per client.
	Open Distribution
	// Echo is client → canister → client: sent app message to its verified echo.
	Echo          Distribution
	EchoMessages  int
	EchoDuration  time.Duration
	EchoPerSecond float64
	// Delivery is canister → client: the canister's send timestamp to the verified receipt.
	Delivery          Distribution
	DeliveryMessages  int
	DeliveryDuration  time.Duration
	DeliveryPerSecond float64
}

// Distribution summarises durations.
type Distribution struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

func summarise(ds []time.Duration) Distribution {
	if len(ds) == 0 {
		return Distribution{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return Distribution{N: len(ds), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ds[len(ds)-1]}
}

func (d Distribution) String() string {
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s", d.N, d.P50.Round(time.Microsecond), d.P90.Round(time.Microsecond), d.P99.Round(time.Microsecond), d.Max.Round(time.Microsecond))
}

// String is the report printed by `icws bench`.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "clients: %d\n", r.Clients)
	fmt.Fprintf(&b, "open (dial to verified OpenMessage): %s\n", r.Open)
	fmt.Fprintf(&b, "client->canister->client echo: %d messages in %s = %.0f msg/s; round trip %s\n", r.EchoMessages, r.EchoDuration.Round(time.Millisecond), r.EchoPerSecond, r.Echo)
	fmt.Fprintf(&b, "canister->client delivery: %d messages in %s = %.0f msg/s; canister send to client receipt %s\n", r.DeliveryMessages, r.DeliveryDuration.Round(time.Millisecond), r.DeliveryPerSecond, r.Delivery)
	return b.String()
}

type session struct {
	conn *client.Conn
	sent map[string]time.Time
	mu   sync.Mutex
}

// Run connects the clients, runs the echo phase, then the burst phase, and closes them.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rootKey, err := client.RootKey(ctx, cfg.ICURL, nil, nil)
	if err != nil {
		return Result{}, fmt.Errorf("root key: %w", err)
	}
	sessions := make([]*session, cfg.Clients)
	opens := make([]time.Duration, cfg.Clients)
	g, gctx := errgroup.WithContext(ctx)
	for i := range sessions {
		g.Go(func() error {
			id, err := identity.NewRandomEd25519Identity()
			if err != nil {
				return err
			}
			start := time.Now()
			conn, err := client.Dial(gctx, client.Config{
				GatewayURL: cfg.GatewayURL, RootKey: rootKey, Canister: cfg.Canister, Identity: id,
				AckInterval: cfg.AckInterval, MessageBuffer: 4 * max(cfg.Burst, cfg.Messages, 16),
				MaxPending: max(cfg.Messages, 1024), Logger: logger,
			})
			if err != nil {
				return fmt.Errorf("client %d: dial: %w", i, err)
			}
			opens[i] = time.Since(start)
			sessions[i] = &session{conn: conn, sent: make(map[string]time.Time, cfg.Messages)}
			return nil
		})
	}
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.conn.Close()
			}
		}
	}()
	if err := g.Wait(); err != nil {
		return Result{}, err
	}
	res := Result{Clients: cfg.Clients, Open: summarise(opens)}

	echo, echoDur, err := runPhase(ctx, sessions, cfg.Messages, func(ctx context.Context, i int, s *session, lat *[]time.Duration) error {
		return echoClient(ctx, i, s, cfg.Messages, cfg.Window, lat)
	})
	if err != nil {
		return res, fmt.Errorf("echo phase: %w", err)
	}
	res.Echo, res.EchoMessages, res.EchoDuration = summarise(echo), len(echo), echoDur
	res.EchoPerSecond = float64(len(echo)) / echoDur.Seconds()

	burst, burstDur, err := runPhase(ctx, sessions, cfg.Burst, func(ctx context.Context, _ int, s *session, lat *[]time.Duration) error {
		return burstClient(ctx, s, cfg.Burst, lat)
	})
	if err != nil {
		return res, fmt.Errorf("burst phase: %w", err)
	}
	res.Delivery, res.DeliveryMessages, res.DeliveryDuration = summarise(burst), len(burst), burstDur
	res.DeliveryPerSecond = float64(len(burst)) / burstDur.Seconds()
	return res, nil
}

// runPhase runs one phase on every client at once and gathers the latencies.
func runPhase(ctx context.Context, sessions []*session, n int, run func(context.Context, int, *session, *[]time.Duration) error) ([]time.Duration, time.Duration, error) {
	if n == 0 {
		return nil, 0, nil
	}
	lats := make([][]time.Duration, len(sessions))
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range sessions {
		g.Go(func() error { return run(gctx, i, s, &lats[i]) })
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	return slices.Concat(lats...), time.Since(start), nil
}

func echoClient(ctx context.Context, client int, s *session, n, window int, lat *[]time.Duration) error {
	inFlight := 0
	next := 0
	for received := 0; received < n; {
		for inFlight < window && next < n {
			text := "bench " + strconv.Itoa(client) + " " + strconv.Itoa(next)
			if err := s.send(ctx, text); err != nil {
				return err
			}
			next++
			inFlight++
		}
		m, err := s.receive(ctx)
		if err != nil {
			return err
		}
		s.mu.Lock()
		sent, ok := s.sent[m.Text]
		delete(s.sent, m.Text)
		s.mu.Unlock()
		if !ok {
			return fmt.Errorf("unexpected echo %q", m.Text)
		}
		*lat = append(*lat, time.Since(sent))
		received++
		inFlight--
	}
	return nil
}

func burstClient(ctx context.Context, s *session, n int, lat *[]time.Duration) error {
	if err := s.send(ctx, "burst:"+strconv.Itoa(n)); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		m, err := s.receive(ctx)
		if err != nil {
			return err
		}
		if want := "burst:" + strconv.Itoa(i); m.Text != want {
			return fmt.Errorf("got %q, want %q", m.Text, want)
		}
		*lat = append(*lat, time.Since(time.Unix(0, int64(m.Timestamp))))
	}
	return nil
}

func (s *session) send(ctx context.Context, text string) error {
	b, err := client.EncodeAppMessage(protocol.AppMessage{Text: text, Timestamp: uint64(time.Now().UnixNano())})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.sent[text] = time.Now()
	s.mu.Unlock()
	return s.conn.Send(ctx, b)
}

type received struct {
	Text      string
	Timestamp uint64
}

func (s *session) receive(ctx context.Context) (received, error) {
	select {
	case <-ctx.Done():
		return received{}, ctx.Err()
	case m, ok := <-s.conn.Messages():
		if !ok {
			return received{}, fmt.Errorf("connection ended: %w", s.conn.Err())
		}
		app, err := client.DecodeAppMessage(m.Content)
		if err != nil {
			return received{}, err
		}
		return received{Text: app.Text, Timestamp: m.Timestamp}, nil
	}
}
