package admin

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startWith runs a server configured by configure before Run and returns its base URL.
func startWith(t *testing.T, configure func(*Server)) string {
	t.Helper()
	s := New("127.0.0.1:0", nil, nil, nil)
	configure(s)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer acancel()
	addr, err := s.Addr(actx)
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + addr.String()
}

func TestPprofIsServedOnlyWhenSwitchedOn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pprof bool
		want  int
	}{
		{"off by default", false, http.StatusNotFound},
		{"on", true, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := startWith(t, func(s *Server) { s.Pprof = tc.pprof })
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
				code, body := get(t, base+path)
				if code != tc.want {
					t.Errorf("GET %s = %d, want %d", path, code, tc.want)
				}
				if tc.pprof && path == "/debug/pprof/heap?debug=1" && !strings.Contains(body, "heap profile") {
					t.Errorf("GET %s: not a heap profile: %.200q", path, body)
				}
			}
			if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
				t.Errorf("/healthz = %d", code)
			}
		})
	}
}

// A short CPU profile is a valid gzip-compressed protobuf (magic 1f 8b).
func TestPprofCPUProfile(t *testing.T) {
	base := startWith(t, func(s *Server) { s.Pprof = true })
	code, body := get(t, base+"/debug/pprof/profile?seconds=1")
	if code != http.StatusOK || !strings.HasPrefix(body, "\x1f\x8b") {
		t.Fatalf("CPU profile: %d, %d bytes starting %q", code, len(body), body[:min(len(body), 8)])
	}
}
