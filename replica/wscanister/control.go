package wscanister

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/icws/icws/protocol"
)

// ControlHandler serves the TEST-ONLY control API of the demo canister. Nothing like it exists on
// the IC; the replica mounts it at /_/control/<canister id>/ with that prefix stripped, only when
// its Config.CanisterControl (ICWS_REPLICA_CONTROL) is on, and never for browsers. All bodies
// are JSON; a client is named by protocol.ClientKey.Token() ("<principal text>_<nonce>").
//
//	POST /send      {"client": "<token>", "text": "..."}  → 204; 404 if the client is not connected
//	POST /broadcast {"text": "..."}                       → 200 {"count": n}
//	POST /close     {"client": "<token>"}                 → 204 (CloseMessage ClosedByApplication); 404
//	POST /upgrade                                         → 204 (wipes the CDK state)
//	GET  /received?client=<token>                         → 200 ClientLog
//	GET  /clients                                         → 200 ["<token>", ...]
//
// Errors are {"error": "..."} with status 400 (bad request) or 404 (client not connected).
func (c *Canister) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /send", func(w http.ResponseWriter, r *http.Request) {
		var req controlRequest
		k, ok := decodeControl(w, r, &req, true)
		if !ok {
			return
		}
		writeControlErr(w, c.Send(k, req.Text))
	})
	mux.HandleFunc("POST /broadcast", func(w http.ResponseWriter, r *http.Request) {
		var req controlRequest
		if _, ok := decodeControl(w, r, &req, false); !ok {
			return
		}
		writeJSON(w, http.StatusOK, broadcastReply{Count: c.Broadcast(req.Text)})
	})
	mux.HandleFunc("POST /close", func(w http.ResponseWriter, r *http.Request) {
		var req controlRequest
		k, ok := decodeControl(w, r, &req, true)
		if !ok {
			return
		}
		writeControlErr(w, c.CloseClient(k))
	})
	mux.HandleFunc("POST /upgrade", func(w http.ResponseWriter, r *http.Request) {
		c.Upgrade()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /received", func(w http.ResponseWriter, r *http.Request) {
		k, err := protocol.ParseClientKeyToken(r.URL.Query().Get("client"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorReply{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, c.Received(k))
	})
	mux.HandleFunc("GET /clients", func(w http.ResponseWriter, r *http.Request) {
		keys := c.Clients()
		tokens := make([]string, len(keys))
		for i, k := range keys {
			tokens[i] = k.Token()
		}
		writeJSON(w, http.StatusOK, tokens)
	})
	return mux
}

type controlRequest struct {
	Client string `json:"client,omitempty"`
	Text   string `json:"text,omitempty"`
}

type broadcastReply struct {
	Count int `json:"count"`
}

type errorReply struct {
	Error string `json:"error"`
}

// maxControlBody bounds a control request; texts are test strings.
const maxControlBody = 1 << 20

func decodeControl(w http.ResponseWriter, r *http.Request, req *controlRequest, needClient bool) (protocol.ClientKey, bool) {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody)).Decode(req); err != nil && !errors.Is(err, io.EOF) {
		writeJSON(w, http.StatusBadRequest, errorReply{Error: "decode request: " + err.Error()})
		return protocol.ClientKey{}, false
	}
	if !needClient {
		return protocol.ClientKey{}, true
	}
	k, err := protocol.ParseClientKeyToken(req.Client)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorReply{Error: err.Error()})
		return protocol.ClientKey{}, false
	}
	return k, true
}

func writeControlErr(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, ErrNotConnected):
		writeJSON(w, http.StatusNotFound, errorReply{Error: err.Error()})
	default:
		writeJSON(w, http.StatusInternalServerError, errorReply{Error: err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ControlClient calls the TEST-ONLY control API of a demo canister over HTTP, for tests that run
// the replica in another process.
type ControlClient struct {
	// BaseURL is the canister's control root, e.g. http://127.0.0.1:4943/_/control/<canister id>.
	BaseURL string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// Send sends an app message with text to one client.
func (c *ControlClient) Send(ctx context.Context, client protocol.ClientKey, text string) error {
	return c.do(ctx, http.MethodPost, "/send", controlRequest{Client: client.Token(), Text: text}, nil)
}

// Broadcast sends an app message with text to every client and returns how many got it.
func (c *ControlClient) Broadcast(ctx context.Context, text string) (int, error) {
	var rep broadcastReply
	err := c.do(ctx, http.MethodPost, "/broadcast", controlRequest{Text: text}, &rep)
	return rep.Count, err
}

// CloseClient closes a client with CloseMessage ClosedByApplication.
func (c *ControlClient) CloseClient(ctx context.Context, client protocol.ClientKey) error {
	return c.do(ctx, http.MethodPost, "/close", controlRequest{Client: client.Token()}, nil)
}

// Upgrade wipes the canister's CDK state.
func (c *ControlClient) Upgrade(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/upgrade", nil, nil)
}

// Received returns what the canister received from a client.
func (c *ControlClient) Received(ctx context.Context, client protocol.ClientKey) (ClientLog, error) {
	var l ClientLog
	err := c.do(ctx, http.MethodGet, "/received?client="+url.QueryEscape(client.Token()), nil, &l)
	return l, err
}

// Clients lists the connected client keys.
func (c *ControlClient) Clients(ctx context.Context) ([]protocol.ClientKey, error) {
	var tokens []string
	if err := c.do(ctx, http.MethodGet, "/clients", nil, &tokens); err != nil {
		return nil, err
	}
	keys := make([]protocol.ClientKey, 0, len(tokens))
	for _, t := range tokens {
		k, err := protocol.ParseClientKeyToken(t)
		if err != nil {
			return nil, fmt.Errorf("control clients: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func (c *ControlClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("control %s: encode: %w", path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("control %s: read reply: %w", path, err)
	}
	if resp.StatusCode >= 300 {
		var e errorReply
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if resp.StatusCode == http.StatusNotFound && e.Error != "" {
			return fmt.Errorf("control %s: %w: %s", path, ErrNotConnected, msg)
		}
		return fmt.Errorf("control %s: HTTP %d: %s", path, resp.StatusCode, msg)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("control %s: decode reply: %w", path, err)
		}
	}
	return nil
}
