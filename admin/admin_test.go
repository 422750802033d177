package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegate/edgegate/route"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testSnapshot(t *testing.T) *route.Snapshot {
	t.Helper()
	s, conflicts := route.New(
		[]route.Route{
			{Host: "a.example.com", Path: "/api", Type: route.Prefix, Ingress: route.IngressRef{Namespace: "ns", Name: "api"}, Backend: 0},
			{Path: "/", Type: route.Prefix, Ingress: route.IngressRef{Namespace: "ns", Name: "web"}, Backend: 1},
		},
		[]*route.Backend{
			{Namespace: "ns", Service: "api", Port: "80", Addrs: []string{"10.1.2.3:8080"}},
			{Namespace: "ns", Service: "web", Port: "http", Error: "no endpoints"},
		},
		nil)
	if len(conflicts) != 0 {
		t.Fatal(conflicts)
	}
	s.Version = 3
	return s
}

func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func do(h http.Handler, method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestEndpoints(t *testing.T) {
	t.Parallel()
	snap := testSnapshot(t)
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "edgegate_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(7)

	ready := newServer(t, Config{
		Snapshot: func() *route.Snapshot { return snap },
		Ready:    func() (bool, string) { return true, "" },
		Cluster:  func() any { return map[string]any{"enabled": true, "members": 3} },
		Gatherer: reg,
	}).Handler()
	empty := newServer(t, Config{
		Snapshot: func() *route.Snapshot { return nil },
		Ready:    func() (bool, string) { return false, "waiting for informer sync" },
	}).Handler()
	badCluster := newServer(t, Config{Cluster: func() any { return func() {} }}).Handler()

	tests := []struct {
		name        string
		h           http.Handler
		method      string
		path        string
		status      int
		contentType string
		body        string // substring, "" for any
		allow       string
	}{
		{"healthz", ready, "GET", "/healthz", 200, "text/plain; charset=utf-8", "ok\n", ""},
		{"healthz before snapshot", empty, "GET", "/healthz", 200, "text/plain; charset=utf-8", "ok\n", ""},
		{"healthz HEAD", ready, "HEAD", "/healthz", 200, "text/plain; charset=utf-8", "", ""},
		{"readyz ready", ready, "GET", "/readyz", 200, "text/plain; charset=utf-8", "ready\n", ""},
		{"readyz not ready with reason", empty, "GET", "/readyz", 503, "text/plain; charset=utf-8", "waiting for informer sync\n", ""},
		{"routes", ready, "GET", "/routes", 200, "application/json", `"host": "a.example.com"`, ""},
		{"routes HEAD", ready, "HEAD", "/routes", 200, "application/json", "", ""},
		{"routes before snapshot", empty, "GET", "/routes", 503, "application/json", `"error": "no route snapshot yet"`, ""},
		{"cluster", ready, "GET", "/cluster", 200, "application/json", `"members": 3`, ""},
		{"cluster disabled", empty, "GET", "/cluster", 200, "application/json", `"enabled": false`, ""},
		{"cluster unencodable", badCluster, "GET", "/cluster", 500, "application/json", `"error": "encode response`, ""},
		{"metrics", ready, "GET", "/metrics", 200, "text/plain", "edgegate_test_total 7", ""},
		{"root 404", ready, "GET", "/", 404, "", "", ""},
		{"unknown 404", ready, "GET", "/nope", 404, "", "", ""},
		{"trailing slash 404", ready, "GET", "/healthz/", 404, "", "", ""},
		{"unknown POST 404", ready, "POST", "/nope", 404, "", "", ""},
		{"pprof off by default", ready, "GET", "/debug/pprof/", 404, "", "", ""},
		{"pprof cmdline off by default", ready, "GET", "/debug/pprof/cmdline", 404, "", "", ""},
		{"POST healthz 405", ready, "POST", "/healthz", 405, "", "", "GET, HEAD"},
		{"PUT readyz 405", ready, "PUT", "/readyz", 405, "", "", "GET, HEAD"},
		{"DELETE routes 405", ready, "DELETE", "/routes", 405, "", "", "GET, HEAD"},
		{"POST metrics 405", ready, "POST", "/metrics", 405, "", "", "GET, HEAD"},
		{"OPTIONS cluster 405", ready, "OPTIONS", "/cluster", 405, "", "", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := do(tt.h, tt.method, tt.path)
			if rec.Code != tt.status {
				t.Fatalf("%s %s = %d, want %d; body %q", tt.method, tt.path, rec.Code, tt.status, rec.Body)
			}
			if tt.contentType != "" && !strings.HasPrefix(rec.Header().Get("Content-Type"), tt.contentType) {
				t.Errorf("Content-Type = %q, want %q", rec.Header().Get("Content-Type"), tt.contentType)
			}
			if tt.body != "" && !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("body %q does not contain %q", rec.Body, tt.body)
			}
			if tt.allow != "" && rec.Header().Get("Allow") != tt.allow {
				t.Errorf("Allow = %q, want %q", rec.Header().Get("Allow"), tt.allow)
			}
		})
	}
}

func TestReadinessFlip(t *testing.T) {
	t.Parallel()
	var ready atomic.Bool
	h := newServer(t, Config{Ready: func() (bool, string) {
		if ready.Load() {
			return true, ""
		}
		return false, "waiting for informer sync"
	}}).Handler()
	for i, want := range []struct {
		set    bool
		status int
		body   string
	}{
		{false, 503, "waiting for informer sync\n"},
		{true, 200, "ready\n"},
		{false, 503, "waiting for informer sync\n"},
	} {
		ready.Store(want.set)
		rec := do(h, "GET", "/readyz")
		if rec.Code != want.status || rec.Body.String() != want.body {
			t.Errorf("step %d: /readyz = %d %q, want %d %q", i, rec.Code, rec.Body, want.status, want.body)
		}
		if rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("step %d: Cache-Control = %q", i, rec.Header().Get("Cache-Control"))
		}
	}
}

func TestDefaultReadyFollowsSnapshot(t *testing.T) {
	t.Parallel()
	var cur atomic.Pointer[route.Snapshot]
	h := newServer(t, Config{Snapshot: cur.Load}).Handler()
	if rec := do(h, "GET", "/readyz"); rec.Code != 503 || !strings.Contains(rec.Body.String(), "first route snapshot") {
		t.Errorf("before snapshot: %d %q", rec.Code, rec.Body)
	}
	if rec := do(h, "GET", "/routes"); rec.Code != 503 {
		t.Errorf("routes before snapshot: %d", rec.Code)
	}
	cur.Store(testSnapshot(t))
	if rec := do(h, "GET", "/readyz"); rec.Code != 200 {
		t.Errorf("after snapshot: %d %q", rec.Code, rec.Body)
	}
	if rec := do(h, "GET", "/routes"); rec.Code != 200 {
		t.Errorf("routes after snapshot: %d", rec.Code)
	}
	// A reason is always given.
	h = newServer(t, Config{Ready: func() (bool, string) { return false, "" }}).Handler()
	if rec := do(h, "GET", "/readyz"); rec.Code != 503 || rec.Body.String() != "not ready\n" {
		t.Errorf("empty reason: %d %q", rec.Code, rec.Body)
	}
}

func TestRoutesJSON(t *testing.T) {
	t.Parallel()
	snap := testSnapshot(t)
	h := newServer(t, Config{Snapshot: func() *route.Snapshot { return snap }}).Handler()
	rec := do(h, "GET", "/routes")
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	var got struct {
		Version uint64 `json:"version"`
		Hash    string `json:"hash"`
		Built   string `json:"built"`
		Hosts   []struct {
			Host   string `json:"host"`
			Routes []struct {
				Path, Type, Ingress, Backend string
				RedirectHTTPS                bool `json:"redirect_https"`
			} `json:"routes"`
		} `json:"hosts"`
		TLS []struct {
			Host, Source, Secret, Ingress, Error string
			NotAfter                             string `json:"not_after"`
		} `json:"tls"`
		ACMEHosts []string         `json:"acme_hosts"`
		Default   *json.RawMessage `json:"default"`
		Backends  []struct {
			ID        string   `json:"id"`
			Service   string   `json:"service"`
			Port      string   `json:"port"`
			Error     string   `json:"error"`
			Endpoints []string `json:"endpoints"`
		} `json:"backends"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.TLS == nil || got.ACMEHosts == nil {
		t.Errorf("tls and acme_hosts must be [] when empty: %+v %+v", got.TLS, got.ACMEHosts)
	}
	if got.Version != 3 || len(got.Hash) != 16 || got.Built == "" || got.Default != nil {
		t.Errorf("header fields: %+v", got)
	}
	if len(got.Hosts) != 2 || got.Hosts[0].Host != "" || got.Hosts[1].Host != "a.example.com" {
		t.Fatalf("hosts: %+v", got.Hosts)
	}
	if r := got.Hosts[1].Routes[0]; r.Path != "/api" || r.Type != "Prefix" || r.Ingress != "ns/api" || r.Backend != "ns/api:80" {
		t.Errorf("route: %+v", r)
	}
	if len(got.Backends) != 2 || got.Backends[0].ID != "ns/api:80" || got.Backends[0].Endpoints[0] != "10.1.2.3:8080" ||
		got.Backends[1].Error != "no endpoints" || got.Backends[1].Endpoints == nil || got.Backends[1].Service != "ns/web" {
		t.Errorf("backends: %+v", got.Backends)
	}
}

func TestPprof(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Pprof: true})
	h := s.Handler()
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
		if rec := do(h, "GET", p); rec.Code != 200 {
			t.Errorf("GET %s = %d", p, rec.Code)
		}
	}
	if rec := do(h, "POST", "/debug/pprof/cmdline"); rec.Code != 405 {
		t.Errorf("POST pprof = %d, want 405", rec.Code)
	}
	if s.srv.WriteTimeout < 30*time.Second+time.Second {
		t.Errorf("WriteTimeout %v too short for a 30s profile", s.srv.WriteTimeout)
	}
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Listen != DefaultListen || s.cfg.Gatherer != prometheus.DefaultGatherer || s.cfg.Snapshot == nil || s.cfg.Ready == nil {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
	srv := s.srv
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Errorf("server limits not set: %+v", srv)
	}
	for _, bad := range []string{"no-port", "127.0.0.1", "[::1"} {
		if _, err := New(Config{Listen: bad, Logger: quietLogger()}); err == nil {
			t.Errorf("New(Listen %q) accepted", bad)
		}
	}
	// The default metrics gatherer works too.
	if rec := do(s.Handler(), "GET", "/metrics"); rec.Code != 200 || !strings.Contains(rec.Body.String(), "go_goroutines") {
		t.Errorf("default gatherer: %d", rec.Code)
	}
}

func TestServeShutdown(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Listen: "127.0.0.1:0"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Errorf("GET /healthz over TCP = %d %q", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Shutdown = %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after Shutdown")
	}
}

func TestListenAndServeError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newServer(t, Config{Listen: ln.Addr().String()})
	if err := s.ListenAndServe(); err == nil || !strings.Contains(err.Error(), "admin: listen") {
		t.Errorf("ListenAndServe on a used port = %v", err)
	}
}

// /routes?host= answers only that host's part of the table.
func TestRoutesForHost(t *testing.T) {
	t.Parallel()
	snap := testSnapshot(t)
	h := newServer(t, Config{Snapshot: func() *route.Snapshot { return snap }}).Handler()
	for path, want := range map[string][]string{
		"/routes?host=A.Example.com": {"a.example.com"},
		"/routes?host=":              {""},
		"/routes?host=b.example.com": {},
		"/routes":                    {"", "a.example.com"},
	} {
		rec := do(h, "GET", path)
		var got struct {
			Version uint64 `json:"version"`
			Hosts   []struct {
				Host string `json:"host"`
			} `json:"hosts"`
		}
		if err := json.NewDecoder(rec.Body).Decode(&got); err != nil || rec.Code != 200 {
			t.Fatalf("%s: %d %v", path, rec.Code, err)
		}
		var hosts []string
		for _, hv := range got.Hosts {
			hosts = append(hosts, hv.Host)
		}
		if !slices.Equal(hosts, want) && !(len(hosts) == 0 && len(want) == 0) || got.Version != 3 {
			t.Errorf("%s: hosts %q version %d, want %q version 3", path, hosts, got.Version, want)
		}
	}
}
