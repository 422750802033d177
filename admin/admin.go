// Package admin serves edgegate's operator endpoints on a loopback listener:
// liveness, readiness, the current route table, cluster state and Prometheus
// metrics. It is separate from proxy so the data path never shares a server,
// a goroutine pool or a failure with operator traffic.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgegate/edgegate/route"
)

// DefaultListen is the admin address when Config.Listen is empty: loopback
// only, so operator endpoints (and pprof) are never exposed by accident.
const DefaultListen = "127.0.0.1:9901"

// Server timeouts. Operator traffic is small; the limits only keep a stuck
// or slow client from holding a connection forever.
const (
	// readHeaderTimeout bounds reading the request headers.
	readHeaderTimeout = 5 * time.Second
	// readTimeout bounds reading the whole request (requests have no body).
	readTimeout = 10 * time.Second
	// writeTimeout bounds writing a response: /routes of a large cluster
	// fits well within it.
	writeTimeout = 30 * time.Second
	// pprofWriteTimeout replaces writeTimeout when pprof is mounted: a CPU
	// profile or trace runs for 30 seconds by default.
	pprofWriteTimeout = 5 * time.Minute
	// idleTimeout closes idle keep-alive connections.
	idleTimeout = 60 * time.Second
	// maxHeaderBytes caps request headers.
	maxHeaderBytes = 64 << 10
)

// Config configures a Server. Every func is called from request goroutines,
// possibly concurrently, and must not block.
type Config struct {
	// Listen is the address ListenAndServe binds. Default DefaultListen
	// (127.0.0.1:9901). A non-loopback address is allowed but logged.
	Listen string

	// Snapshot returns the current route snapshot, nil before the first one
	// is published. Default: always nil (/routes answers 503).
	Snapshot func() *route.Snapshot

	// Ready reports readiness and, when not ready, why (for example
	// "waiting for informer sync"). Default: ready once Snapshot returns a
	// snapshot, otherwise "waiting for the first route snapshot".
	Ready func() (bool, string)

	// Cluster, if set, returns the cluster state served as JSON on
	// /cluster. Default nil: /cluster answers {"enabled":false}.
	Cluster func() any

	// Gatherer is what /metrics exposes. Default prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer

	// Pprof mounts net/http/pprof under /debug/pprof/. Default false: the
	// profiling endpoints answer 404.
	Pprof bool

	// Logger receives server errors. Default slog.Default().
	Logger *slog.Logger
}

// Server is the admin HTTP server. Create it with New.
type Server struct {
	cfg     Config
	handler http.Handler
	srv     *http.Server
}

// New checks cfg, fills in its defaults and returns a Server that is not
// yet listening.
func New(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin: listen address %q: %w", cfg.Listen, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		cfg.Logger.Warn("admin endpoints listen on a non-loopback address", "listen", cfg.Listen, "pprof", cfg.Pprof)
	}
	if cfg.Snapshot == nil {
		cfg.Snapshot = func() *route.Snapshot { return nil }
	}
	if cfg.Ready == nil {
		snap := cfg.Snapshot
		cfg.Ready = func() (bool, string) {
			if snap() == nil {
				return false, "waiting for the first route snapshot"
			}
			return true, ""
		}
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.DefaultGatherer
	}

	s := &Server{cfg: cfg}
	s.handler = s.routes()
	wt := writeTimeout
	if cfg.Pprof {
		wt = pprofWriteTimeout
	}
	s.srv = &http.Server{
		Addr:              cfg.Listen,
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      wt,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Handler returns the admin handler: the endpoints without a listener, for
// tests or for mounting elsewhere. Unknown paths answer 404; methods other
// than GET and HEAD on a known path answer 405.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves on ln until Shutdown. It returns nil after a Shutdown, and
// otherwise the error that stopped it.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve: %w", err)
	}
	return nil
}

// ListenAndServe listens on Config.Listen and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin: listen: %w", err)
	}
	return s.Serve(ln)
}

// Shutdown stops accepting connections and waits, until ctx ends, for
// requests in progress to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// "GET" patterns also match HEAD; ServeMux answers 405 (with Allow)
	// for other methods on these paths and 404 for unknown paths.
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /routes", s.routeTable)
	mux.HandleFunc("GET /cluster", s.cluster)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	if s.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, reason := s.cfg.Ready()
	if ok {
		writeText(w, http.StatusOK, "ready")
		return
	}
	if reason == "" {
		reason = "not ready"
	}
	writeText(w, http.StatusServiceUnavailable, reason)
}

// routeTable answers /routes: the whole table, or with ?host=NAME only that
// host's rules, backends and certificate (a 10,000-Ingress table is
// megabytes of JSON).
func (s *Server) routeTable(w http.ResponseWriter, r *http.Request) {
	snap := s.cfg.Snapshot()
	if snap == nil {
		s.writeJSON(w, http.StatusServiceUnavailable, errorBody{"no route snapshot yet"})
		return
	}
	v := snap.View()
	if q := r.URL.Query(); q.Has("host") {
		v = v.ForHost(q.Get("host"))
	}
	s.writeJSON(w, http.StatusOK, v)
}

func (s *Server) cluster(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.Cluster == nil {
		s.writeJSON(w, http.StatusOK, struct {
			Enabled bool `json:"enabled"`
		}{})
		return
	}
	s.writeJSON(w, http.StatusOK, s.cfg.Cluster())
}

type errorBody struct {
	Error string `json:"error"`
}

func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body + "\n"))
}

// writeJSON encodes v before writing anything, so an encoding failure still
// becomes a proper 500.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := encodeJSON(v)
	if err != nil {
		s.cfg.Logger.Error("admin: encode response", "err", err)
		body, _ = encodeJSON(errorBody{"encode response: " + err.Error()})
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
