// Package admin serves a process's operational endpoints: /healthz (the process is alive),
// /readyz (its dependencies answer), /metrics (Prometheus) and, when switched on, the Go profiler
// under /debug/pprof/.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition; Func returns nil when it holds.
type Check struct {
	Name string
	Func func(context.Context) error
}

// Server is the admin HTTP server.
type Server struct {
	addr   string
	checks []Check
	logger *slog.Logger
	srv    *http.Server

	// CheckTimeout bounds each readiness check; ShutdownTimeout bounds the drain on shutdown.
	CheckTimeout    time.Duration
	ShutdownTimeout time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ when set before Run. Off by default: profiles
	// show internals and a CPU profile costs CPU while it runs.
	Pprof bool

	mux *http.ServeMux

	mu   sync.Mutex
	ln   net.Listener
	lnOK chan struct{}
}

// New builds a server for addr (host:port; port 0 picks a free port, see Addr). reg may be nil
// (then /metrics serves an empty registry).
func New(addr string, reg *prometheus.Registry, checks []Check, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{
		addr:            addr,
		checks:          checks,
		logger:          logger.With("component", "admin"),
		CheckTimeout:    2 * time.Second,
		ShutdownTimeout: 5 * time.Second,
		lnOK:            make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.mux = mux
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		// Each connection holds a file descriptor of the process the roles share; an idle or
		// slow one is let go. No write timeout: a CPU profile streams for as long as it was asked.
		ReadTimeout: 10 * time.Second,
		IdleTimeout: time.Minute,
		ErrorLog:    slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	return s
}

type readyReport struct {
	Ready  bool              `json:"ready"`
	Failed map[string]string `json:"failed,omitempty"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.CheckTimeout)
	defer cancel()
	rep := readyReport{Ready: true}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range s.checks {
		wg.Go(func() {
			err := runCheck(ctx, c)
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if rep.Failed == nil {
				rep.Failed = map[string]string{}
			}
			rep.Failed[c.Name] = err.Error()
		})
	}
	wg.Wait()
	w.Header().Set("Content-Type", "application/json")
	if len(rep.Failed) > 0 {
		rep.Ready = false
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rep)
}

// runCheck turns a panic or a check that ignores its context into a failure.
func runCheck(ctx context.Context, c Check) (err error) {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- c.Func(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer: %w", ctx.Err())
	}
}

// Addr is the address the server listens on, once Run has bound it (it waits until then or ctx ends).
func (s *Server) Addr(ctx context.Context) (net.Addr, error) {
	select {
	case <-s.lnOK:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ln == nil {
			return nil, errors.New("admin server did not start")
		}
		return s.ln.Addr(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// handlePprof registers the profiler's handlers; pprof.Index serves every named profile
// (heap, allocs, goroutine, block, mutex, threadcreate) below /debug/pprof/.
func (s *Server) handlePprof() {
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// Run serves until ctx ends, then drains open requests for at most ShutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	if s.Pprof {
		s.handlePprof()
		s.logger.Warn("admin server serves the Go profiler under /debug/pprof/; keep its address private")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	close(s.lnOK)
	if err != nil {
		return fmt.Errorf("admin listen on %s (ICWS_ADMIN_LISTEN): %w", s.addr, err)
	}
	s.logger.Debug("admin server listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.ShutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
		<-errc
		return fmt.Errorf("admin server shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}
