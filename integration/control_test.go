package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/icws/icws/protocol"
)

// controlClient calls the demo canister's TEST-ONLY control API (replica/wscanister/control.go)
// over HTTP. It is kept here rather than imported so that this package only needs the wire
// format of that API, not the canister package compiling at every moment.
type controlClient struct {
	baseURL string // <replica URL>/_/control/<canister id>/
}

// clientLog mirrors wscanister.ClientLog (JSON of GET /received).
type clientLog struct {
	Texts           []string `json:"texts"`
	Received        int      `json:"received"`
	SequenceErrors  int      `json:"sequence_errors"`
	Closes          []string `json:"closes"`
	KeepAlives      int      `json:"keep_alives"`
	LastIncomingSeq uint64   `json:"last_incoming_seq"`
	Open            bool     `json:"open"`
}

func (c *controlClient) Send(ctx context.Context, client protocol.ClientKey, text string) error {
	return c.do(ctx, http.MethodPost, "send", map[string]string{"client": client.Token(), "text": text}, nil)
}

func (c *controlClient) Broadcast(ctx context.Context, text string) (int, error) {
	var rep struct {
		Count int `json:"count"`
	}
	err := c.do(ctx, http.MethodPost, "broadcast", map[string]string{"text": text}, &rep)
	return rep.Count, err
}

func (c *controlClient) CloseClient(ctx context.Context, client protocol.ClientKey) error {
	return c.do(ctx, http.MethodPost, "close", map[string]string{"client": client.Token()}, nil)
}

func (c *controlClient) Upgrade(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "upgrade", nil, nil)
}

func (c *controlClient) Received(ctx context.Context, client protocol.ClientKey) (clientLog, error) {
	var l clientLog
	err := c.do(ctx, http.MethodGet, "received?client="+url.QueryEscape(client.Token()), nil, &l)
	return l, err
}

// Clients returns the connected clients' tokens ("<principal>_<nonce>").
func (c *controlClient) Clients(ctx context.Context) ([]string, error) {
	var tokens []string
	err := c.do(ctx, http.MethodGet, "clients", nil, &tokens)
	return tokens, err
}

func (c *controlClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.baseURL, "/")+"/"+path, rd)
	if err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("control %s: read: %w", path, err)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("control %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("control %s: decode: %w", path, err)
		}
	}
	return nil
}
