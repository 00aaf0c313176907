package main

import (
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/icws/icws/internal/config"
)

// `icws replica` serves the demo canister's control API only with ICWS_REPLICA_CONTROL=true, and
// never to a browser.
func TestReplicaControlAPIIsOptIn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    []string
		origin string
		want   int
	}{
		{"default", nil, "", http.StatusNotFound},
		{"enabled", []string{"ICWS_REPLICA_CONTROL=true"}, "", http.StatusOK},
		{"enabled, from a page", []string{"ICWS_REPLICA_CONTROL=true"}, "http://page.example", http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startIcwsProcess(t, append([]string{"ICWS_REPLICA_LISTEN=127.0.0.1:0"}, tc.env...), "replica")
			addr, _ := p.waitLog("replica serving", 30*time.Second)["addr"].(string)
			req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/_/control/bkyz2-fmaaa-aaaaa-qaaaq-cai/clients", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("control API: %d %q, want %d", resp.StatusCode, body, tc.want)
			}
			if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
				t.Errorf("control API sends Access-Control-Allow-Origin: %s", v)
			}
		})
	}
}

// `icws dev` turns the control API on by itself only while the replica listens on loopback; an
// explicit ICWS_REPLICA_CONTROL wins.
func TestDevControlAPIOnlyOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		listen, control string // control "" = unset
		want            bool
	}{
		{"127.0.0.1:4943", "", true},
		{"[::1]:4943", "", true},
		{"localhost:4943", "", true},
		{"0.0.0.0:4943", "", false},
		{":4943", "", false},
		{"192.0.2.7:4943", "", false},
		{"127.0.0.1:4943", "false", false},
		{"0.0.0.0:4943", "true", true},
	} {
		t.Run(tc.listen+"/"+tc.control, func(t *testing.T) {
			t.Setenv("ICWS_DATA_DIR", t.TempDir())
			t.Setenv("ICWS_REPLICA_LISTEN", tc.listen)
			t.Setenv("ICWS_REPLICA_CONTROL", tc.control) // restores the variable at cleanup
			if tc.control == "" {
				os.Unsetenv("ICWS_REPLICA_CONTROL")
			}
			cfg := new(devConfig)
			if err := config.Load(cfg); err != nil {
				t.Fatal(err)
			}
			if got := cfg.ReplicaSettings.CanisterControl; got != tc.want {
				t.Fatalf("control API on = %v, want %v", got, tc.want)
			}
		})
	}
}
