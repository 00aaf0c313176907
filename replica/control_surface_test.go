package replica_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/icws/icws/replica"
)

// The TEST-ONLY hooks are served only when enabled, never with CORS headers, and never to a
// request that carries an Origin (a browser's), while the IC interface keeps its CORS.
func TestControlSurface(t *testing.T) {
	off := start(t, replica.Config{})
	on := start(t, replica.Config{CanisterControl: true, TestHooks: true})
	canister := "/_/control/" + testCanisterID.String() + "/ping"
	hooks := "/_/control/replica/corrupt"
	for _, tc := range []struct {
		name, method, url, origin string
		wantStatus                int
		wantBody                  string
	}{
		{"canister control off", http.MethodGet, off.url + canister, "", http.StatusNotFound, ""},
		{"test hooks off", http.MethodGet, off.url + hooks, "", http.StatusNotFound, ""},
		{"canister control on", http.MethodGet, on.url + canister, "", http.StatusOK, "pong from " + testCanisterID.String()},
		{"test hooks on", http.MethodGet, on.url + hooks, "", http.StatusOK, "certificates=false query_signatures=false\n"},
		{"canister control from a page", http.MethodGet, on.url + canister, "http://evil.example", http.StatusForbidden, ""},
		{"simple POST from a page", http.MethodPost, on.url + "/_/control/" + testCanisterID.String() + "/upgrade", "http://evil.example", http.StatusForbidden, ""},
		{"same-origin POST", http.MethodPost, on.url + hooks + "?certificates=true", on.url, http.StatusForbidden, ""},
		{"pre-flight", http.MethodOptions, on.url + canister, "http://evil.example", http.StatusForbidden, ""},
		{"pre-flight without origin", http.MethodOptions, on.url + canister, "", http.StatusMethodNotAllowed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
				req.Header.Set("Access-Control-Request-Method", "POST")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || (tc.wantBody != "" && string(body) != tc.wantBody) {
				t.Fatalf("%s %s: %d %q, want %d %q", tc.method, tc.url, resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			for k := range resp.Header {
				if strings.HasPrefix(k, "Access-Control-") {
					t.Errorf("control response carries %s: %v", k, resp.Header.Values(k))
				}
			}
		})
	}
	// The refused requests changed nothing.
	resp, err := http.Get(on.url + hooks)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "certificates=false query_signatures=false\n" {
		t.Fatalf("a refused request switched corruption on: %q", body)
	}
}
