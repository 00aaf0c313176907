//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"golang.org/x/sync/errgroup"
)

// centrifugoVersion is the peer the issue compares against.
const centrifugoVersion = "v6.9.1"

type centrifugo struct {
	proc   *proc
	ws     string // WebSocket endpoint
	api    string // HTTP API base
	health string
}

// startCentrifugo runs Centrifugo with the memory engine, history on (size 10,000, ttl 10 min)
// and recovery forced for channels without namespace; clients connect without tokens (insecure
// client mode) and the HTTP API needs no key (insecure API mode): both are loopback only.
func startCentrifugo(ctx context.Context, bin, tmp string) (*centrifugo, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	host, port, _ := strings.Cut(addr, ":")
	portN, _ := strconv.Atoi(port)
	conf := map[string]any{
		"http_server": map[string]any{"address": host, "port": portN},
		"log":         map[string]any{"level": "error"},
		"engine":      map[string]any{"type": "memory"},
		"client": map[string]any{
			"insecure": true, "recovery_max_publication_limit": 10000, "queue_max_size": 64 << 20,
		},
		"channel": map[string]any{"without_namespace": map[string]any{
			"history_size": 10000, "history_ttl": "600s", "force_recovery": true, "allow_subscribe_for_client": true,
		}},
		"http_api": map[string]any{"insecure": true},
		"health":   map[string]any{"enabled": true},
	}
	b, _ := json.Marshal(conf)
	confPath := filepath.Join(tmp, "centrifugo.json")
	if err := os.WriteFile(confPath, b, 0o600); err != nil {
		return nil, err
	}
	p, err := startProc(tmp, "centrifugo", bin, nil, "-c", confPath)
	if err != nil {
		return nil, err
	}
	c := &centrifugo{proc: p, ws: "ws://" + addr + "/connection/websocket", api: "http://" + addr + "/api", health: "http://" + addr + "/health"}
	if err := waitHTTP(ctx, c.health, p, time.Minute); err != nil {
		p.stop()
		return nil, err
	}
	return c, nil
}

// cfClient is one connection with one subscription.
type cfClient struct {
	c   *centrifuge.Client
	sub *centrifuge.Subscription
}

// connect opens a protobuf-protocol connection subscribed to channel; onPub gets its publications.
func (cf *centrifugo) connect(ctx context.Context, channel string, d *loopbackDialer, onPub func(centrifuge.PublicationEvent), onSubscribed func(centrifuge.SubscribedEvent)) (*cfClient, error) {
	cfg := centrifuge.Config{HandshakeTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 10 * time.Second}
	if d != nil {
		cfg.NetDialContext = d.dial
	}
	c := centrifuge.NewProtobufClient(cf.ws, cfg)
	sub, err := c.NewSubscription(channel, centrifuge.SubscriptionConfig{Recoverable: true, Positioned: true})
	if err != nil {
		c.Close()
		return nil, err
	}
	subscribed := make(chan struct{}, 1)
	sub.OnSubscribed(func(ev centrifuge.SubscribedEvent) {
		if onSubscribed != nil {
			onSubscribed(ev)
		}
		select {
		case subscribed <- struct{}{}:
		default:
		}
	})
	if onPub != nil {
		sub.OnPublication(onPub)
	}
	if err := sub.Subscribe(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Connect(); err != nil {
		c.Close()
		return nil, err
	}
	select {
	case <-subscribed:
		return &cfClient{c: c, sub: sub}, nil
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		c.Close()
		return nil, fmt.Errorf("centrifugo: %s not subscribed after 30s", channel)
	}
}

// publishBatch publishes data to channels through the HTTP API's batch method, in order.
func (cf *centrifugo) publishBatch(ctx context.Context, hc *http.Client, channels []string, data [][]byte) error {
	var body bytes.Buffer
	body.WriteString(`{"commands":[`)
	for i := range channels {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"publish":{"channel":%q,"data":%s}}`, channels[i], data[i])
	}
	body.WriteString(`]}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cf.api+"/batch", &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("centrifugo batch: %w", err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK || bytes.Contains(reply, []byte(`"error"`)) {
		return fmt.Errorf("centrifugo batch: HTTP %d: %.300s", resp.StatusCode, reply)
	}
	return nil
}

// payload is the JSON data of message i, padded to size bytes: {"i":<i>,"p":"xxx…"}.
func payload(i, size int) []byte {
	b := []byte(`{"i":` + strconv.Itoa(i) + `,"p":"`)
	if pad := size - len(b) - 2; pad > 0 {
		b = append(b, bytes.Repeat([]byte("x"), pad)...)
	}
	return append(b, `"}`...)
}

// payloadIndex reads i back from payload's JSON.
func payloadIndex(data []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(data, []byte(`{"i":`))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(rest[:end]))
	return n, err == nil
}

// order accounts for one receiver's messages 0..n-1 (lost, duplicated, out of order).
type order struct {
	mu                   sync.Mutex
	seen                 []bool
	got, highest         int
	dup, reordered, lost int
}

func newOrder(n int) *order { return &order{seen: make([]bool, n), highest: -1} }

func (o *order) observe(i int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case i < 0 || i >= len(o.seen) || o.seen[i]:
		o.dup++
	default:
		o.seen[i] = true
		o.got++
		if i < o.highest {
			o.reordered++
		}
		o.highest = max(o.highest, i)
	}
}

func (o *order) complete() bool { o.mu.Lock(); defer o.mu.Unlock(); return o.got == len(o.seen) }

func (o *order) counts() (lost, dup, reordered int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.seen) - o.got, o.dup, o.reordered
}

// cfResults are Centrifugo's figures.
type cfResults struct {
	idleConns                 int
	rssPerConn                float64
	idleCPUShare              float64
	delivered                 int
	cpuMicrosPerMessage       float64
	perSecond                 float64
	deliveryP50, deliveryP99  float64 // ms, publish batch sent → received
	lost, dup, reordered      int
	serverShare               float64 // Centrifugo's CPU / (Centrifugo + load generator)
	recoverMissed             int
	connectToLastMs           float64
	recovered                 bool
	recoverLost, recoverDupes int
}

func runCentrifugoPeer(ctx context.Context, logger *slog.Logger, cfg config, tmp string) (cfResults, error) {
	var res cfResults
	if err := goInstall(ctx, logger, tmp, "github.com/centrifugal/centrifugo/v6@"+centrifugoVersion); err != nil {
		return res, err
	}
	cf, err := startCentrifugo(ctx, filepath.Join(tmp, "centrifugo"), tmp)
	if err != nil {
		return res, err
	}
	defer cf.proc.stop()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

	// Memory per idle connection: RSS before and after N connections, each with one subscription.
	logger.Info("centrifugo: idle connections", "n", cfg.sessions)
	before, err := sample(cf.proc.pid())
	if err != nil {
		return res, err
	}
	clients := make([]*cfClient, cfg.sessions)
	d := &loopbackDialer{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i := range clients {
		g.Go(func() error {
			c, err := cf.connect(gctx, "idle"+strconv.Itoa(i), d, nil, nil)
			clients[i] = c
			return err
		})
	}
	closeAll := func() {
		for _, c := range clients {
			if c != nil {
				c.c.Close()
			}
		}
	}
	if err := g.Wait(); err != nil {
		closeAll()
		return res, err
	}
	holdStart, err := sample(cf.proc.pid())
	if err != nil {
		closeAll()
		return res, err
	}
	time.Sleep(cfg.hold)
	after, err := sample(cf.proc.pid())
	closeAll()
	if err != nil {
		return res, err
	}
	res.idleConns = cfg.sessions
	res.rssPerConn = float64(after.rss-before.rss) / float64(cfg.sessions)
	res.idleCPUShare = (after.cpu - holdStart.cpu) / after.at.Sub(holdStart.at).Seconds()

	if err := cfDelivery(ctx, logger, cfg, cf, hc, &res); err != nil {
		return res, err
	}
	if err := cfRecovery(ctx, logger, cfg, cf, hc, &res); err != nil {
		return res, err
	}
	return res, nil
}

// cfDelivery: clients each on a personal channel; messages each, published in batches of 100
// through the HTTP API as fast as it answers; Centrifugo's CPU per delivered message.
func cfDelivery(ctx context.Context, logger *slog.Logger, cfg config, cf *centrifugo, hc *http.Client, res *cfResults) error {
	logger.Info("centrifugo: delivery", "clients", cfg.clients, "messages", cfg.messages, "payload", cfg.payload)
	n := cfg.messages
	orders := make([]*order, cfg.clients)
	var lats []float64
	var latMu sync.Mutex
	var received atomic.Int64
	done := make(chan struct{})
	total := int64(cfg.clients * n)
	sentAt := make([]atomic.Int64, n) // batch send time per message index (same for every client)
	clients := make([]*cfClient, cfg.clients)
	for i := range clients {
		orders[i] = newOrder(n)
		c, err := cf.connect(ctx, "personal"+strconv.Itoa(i), nil, func(ev centrifuge.PublicationEvent) {
			at := time.Now()
			k, ok := payloadIndex(ev.Data)
			if !ok {
				orders[i].observe(-1)
				return
			}
			orders[i].observe(k)
			if k < n {
				latMu.Lock()
				lats = append(lats, float64(at.UnixNano()-sentAt[k].Load())/1e6)
				latMu.Unlock()
			}
			if received.Add(1) == total {
				close(done)
			}
		}, nil)
		if err != nil {
			return err
		}
		clients[i] = c
		defer c.c.Close()
	}
	before, err := sample(cf.proc.pid())
	if err != nil {
		return err
	}
	var selfBefore, selfAfter float64
	selfBefore = selfCPU()
	const batch = 100
	var channels []string
	var data [][]byte
	for k := range n {
		for i := range cfg.clients {
			channels = append(channels, "personal"+strconv.Itoa(i))
			data = append(data, payload(k, cfg.payload))
		}
		if len(channels) >= batch || k == n-1 {
			now := time.Now().UnixNano()
			for j := k; j >= 0 && sentAt[j].Load() == 0; j-- {
				sentAt[j].Store(now)
			}
			if err := cf.publishBatch(ctx, hc, channels, data); err != nil {
				return err
			}
			channels, data = channels[:0], data[:0]
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		logger.Warn("centrifugo: not every message arrived within 60s", "received", received.Load(), "want", total)
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := sample(cf.proc.pid())
	if err != nil {
		return err
	}
	selfAfter = selfCPU()
	got := int(received.Load())
	res.delivered = got
	wall := after.at.Sub(before.at).Seconds()
	res.perSecond = float64(got) / wall
	if got > 0 {
		res.cpuMicrosPerMessage = (after.cpu - before.cpu) / float64(got) * 1e6
	}
	res.serverShare = (after.cpu - before.cpu) / (after.cpu - before.cpu + selfAfter - selfBefore)
	for _, o := range orders {
		l, dup, r := o.counts()
		res.lost, res.dup, res.reordered = res.lost+l, res.dup+dup, res.reordered+r
	}
	latMu.Lock()
	slices.Sort(lats)
	if len(lats) > 0 {
		res.deliveryP50, res.deliveryP99 = lats[len(lats)/2], lats[min(len(lats)-1, len(lats)*99/100)]
	}
	latMu.Unlock()
	return nil
}

// cfRecovery: a subscribed client disconnects, missed messages are published to its channel, it
// connects again and recovers them from history: connect call to last recovered publication.
func cfRecovery(ctx context.Context, logger *slog.Logger, cfg config, cf *centrifugo, hc *http.Client, res *cfResults) error {
	logger.Info("centrifugo: recovery", "missed", cfg.missed)
	const channel = "recover0"
	k := cfg.missed
	o := newOrder(k + 1) // index 0 is the message received before the drop
	var lastAt atomic.Int64
	var recovered atomic.Bool
	var count atomic.Int64
	done := make(chan struct{})
	c, err := cf.connect(ctx, channel, nil, func(ev centrifuge.PublicationEvent) {
		i, ok := payloadIndex(ev.Data)
		if !ok {
			i = -1
		}
		o.observe(i)
		lastAt.Store(time.Now().UnixNano())
		if count.Add(1) == int64(k+1) {
			close(done)
		}
	}, func(ev centrifuge.SubscribedEvent) {
		if ev.WasRecovering && ev.Recovered {
			recovered.Store(true)
		}
	})
	if err != nil {
		return err
	}
	defer c.c.Close()
	if err := cf.publishBatch(ctx, hc, []string{channel}, [][]byte{payload(0, cfg.payload)}); err != nil {
		return err
	}
	for count.Load() < 1 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := c.c.Disconnect(); err != nil {
		return err
	}
	for start := 1; start <= k; start += 100 {
		var chans []string
		var data [][]byte
		for i := start; i < min(start+100, k+1); i++ {
			chans = append(chans, channel)
			data = append(data, payload(i, cfg.payload))
		}
		if err := cf.publishBatch(ctx, hc, chans, data); err != nil {
			return err
		}
	}
	connectAt := time.Now()
	if err := c.c.Connect(); err != nil {
		return err
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		logger.Warn("centrifugo: recovery incomplete after 60s", "got", count.Load()-1, "want", k)
	case <-ctx.Done():
		return ctx.Err()
	}
	res.recoverMissed = k
	res.connectToLastMs = float64(lastAt.Load()-connectAt.UnixNano()) / 1e6
	res.recovered = recovered.Load()
	lost, dup, reordered := o.counts()
	res.recoverLost, res.recoverDupes = lost, dup+reordered
	return nil
}
