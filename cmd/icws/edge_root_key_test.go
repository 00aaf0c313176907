package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol/certificate"
)

// An edge without submitter or poller settles the IC root key as they do: configured, built in for
// the mainnet, or fetched from the network, retrying a network that is still starting, and never
// waiting for it without bound.
func TestEdgeRootKey(t *testing.T) {
	auth, err := certauth.New(certauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	status, err := cbor.Marshal(map[string]any{"root_key": auth.RootKey()})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	starting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/status" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) == 1 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(status)
	}))
	t.Cleanup(starting.Close)
	notIC := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notIC.Close)
	gone := "http://" + freeLoopbackAddr(t)

	logger := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name       string
		url        string
		configured []byte
		want       []byte
		errPart    string
	}{
		{"configured", gone, auth.RootKey(), auth.RootKey(), ""},
		{"mainnet", "https://icp-api.io", nil, certificate.MainnetRootKey(), ""},
		{"fetched after a retry", starting.URL, nil, auth.RootKey(), ""},
		{"not an IC", notIC.URL, nil, nil, "HTTP 404"},
		{"unreachable", gone, nil, nil, "set ICWS_IC_ROOT_KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			key, err := edgeRootKey(ctx, tc.url, tc.configured, logger)
			if tc.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errPart) {
					t.Fatalf("error %v, want one naming %q", err, tc.errPart)
				}
				if d := time.Since(start); d > 15*time.Second {
					t.Fatalf("gave up after %s", d)
				}
				return
			}
			if err != nil || !bytes.Equal(key, tc.want) {
				t.Fatalf("key %s, %v; want %s", hex.EncodeToString(key), err, hex.EncodeToString(tc.want))
			}
		})
	}
}
