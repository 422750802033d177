package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

// harness is a proxy serving on 127.0.0.1 with a swappable snapshot.
type harness struct {
	t    testing.TB
	srv  *Server
	reg  *balancer.Registry
	snap atomic.Pointer[route.Snapshot]
	addr string // proxy host:port
}

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t}
	cfg := Config{
		Snapshot:        h.snap.Load,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		ConnectTimeout:  2 * time.Second,
		ResponseTimeout: 10 * time.Second,
		EventLoops:      testEventLoops(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = s
	h.reg = balancer.NewRegistry(balancer.RegistryConfig{NewTransport: s.NewTransport, CloseTransport: s.CloseTransport})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	return h
}

// testEventLoops is Config.EventLoops for the harness:
// EDGEGATE_TEST_EVENT_LOOPS=N runs the whole suite on N event loops (make
// test does, in a third pass); unset or -1, on the goroutine server.
func testEventLoops(t testing.TB) int {
	v := os.Getenv("EDGEGATE_TEST_EVENT_LOOPS")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("EDGEGATE_TEST_EVENT_LOOPS=%q: %v", v, err)
	}
	return n
}

// publish builds and publishes a snapshot. backends are lists of endpoint
// addresses; a backend given as nil has no endpoints.
func (h *harness) publish(routes []route.Route, backends ...*route.Backend) *route.Snapshot {
	for _, b := range backends {
		b.Bind(h.reg)
	}
	snap, conflicts := route.New(routes, backends, nil)
	if len(conflicts) > 0 {
		h.t.Fatalf("conflicts: %v", conflicts)
	}
	h.snap.Store(snap)
	return snap
}

func be(name string, addrs ...string) *route.Backend {
	return &route.Backend{Namespace: "ns", Service: name, Port: "80", Addrs: addrs}
}

func rt(host, path string, typ route.PathType, ingress string, backend int) route.Route {
	return route.Route{Host: host, Path: path, Type: typ, Ingress: route.IngressRef{Namespace: "ns", Name: ingress}, Backend: backend}
}

// backend starts a net/http server on 127.0.0.1.
func backend(t *testing.T, h http.HandlerFunc) (addr string) {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://")
}

// client is an HTTP client that talks to the proxy whatever the URL host.
func (h *harness) client() *http.Client {
	tr := &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", h.addr)
		},
	}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func (h *harness) get(host, path string) (int, string, http.Header) {
	h.t.Helper()
	resp, err := h.client().Get("http://" + host + path)
	if err != nil {
		h.t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// send writes raw bytes on a new connection to the proxy, which has 10 s
// for the whole exchange; the caller closes it.
func (h *harness) send(req string) net.Conn {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		h.t.Fatal(err)
	}
	return c
}

// raw sends raw bytes on a new connection and reads one response.
func (h *harness) raw(req string) (*http.Response, string) {
	h.t.Helper()
	c := h.send(req)
	defer c.Close()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		h.t.Fatalf("reading response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// tcpPod is an endpoint on 127.0.0.1 that runs serve on each connection
// it accepts, each on its own goroutine, until the test ends. serve closes
// the connection when it is done with it.
func tcpPod(t testing.TB, serve func(net.Conn)) (addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// rawBackend serves every request on a keep-alive connection with the same
// raw response bytes and records the raw request headers.
func rawBackend(t testing.TB, response string) (addr string, got chan string) {
	t.Helper()
	got = make(chan string, 16)
	addr = tcpPod(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			var sb strings.Builder
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				sb.WriteString(line)
				if line == "\r\n" {
					break
				}
			}
			select {
			case got <- sb.String():
			default:
			}
			if _, err := io.WriteString(c, response); err != nil {
				return
			}
		}
	})
	return addr, got
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
