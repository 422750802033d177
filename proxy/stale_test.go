package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/route"
)

// readRawRequest reads one HTTP/1.1 request (headers and a Content-Length
// body) and returns its request line.
func readRawRequest(br *bufio.Reader) (string, error) {
	var first string
	cl := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if first == "" {
			first = strings.TrimSpace(line)
		}
		if line == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			cl, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	_, err := io.CopyN(io.Discard, br, int64(cl))
	return first, err
}

// scriptedBackend is a raw TCP endpoint on 127.0.0.1. Its first connection
// answers one request with keep-alive and then does first; every later
// connection answers all its requests with 200 "fresh". It counts accepted
// connections and records every request line.
type scriptedBackend struct {
	addr    string
	accepts atomic.Int32
	mu      sync.Mutex
	lines   []string
}

func (b *scriptedBackend) record(line string) {
	b.mu.Lock()
	b.lines = append(b.lines, line)
	b.mu.Unlock()
}

func (b *scriptedBackend) requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines...)
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n"

func newScriptedBackend(t *testing.T, first func(b *scriptedBackend, c net.Conn, br *bufio.Reader)) *scriptedBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &scriptedBackend{addr: ln.Addr().String()}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := b.accepts.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				go func() { <-done; c.Close() }()
				br := bufio.NewReader(c)
				if n == 1 {
					line, err := readRawRequest(br)
					if err != nil {
						return
					}
					b.record(line)
					if _, err := io.WriteString(c, okResponse+"first"); err != nil {
						return
					}
					first(b, c, br)
					return
				}
				for {
					line, err := readRawRequest(br)
					if err != nil {
						return
					}
					b.record(line)
					if _, err := io.WriteString(c, okResponse+"fresh"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return b
}

// waitPooled waits until the endpoint at addr has no request in flight: the
// proxy returns a connection to its pool before it ends the request, and the
// client may see the whole response before that.
func waitPooled(t *testing.T, h *harness, addr string) {
	t.Helper()
	ep := h.reg.Acquire(addr)
	waitFor(t, "the endpoint connection back in the pool", func() bool { return ep.InFlight() == 0 })
}

// TestStaleUpstreamConn sends a first request that leaves a keep-alive
// connection in the proxy's pool, lets the endpoint misbehave on it, and
// checks whether the second request is retried on a new connection.
func TestStaleUpstreamConn(t *testing.T) {
	t.Parallel()
	closeIdle := func(*scriptedBackend, net.Conn, *bufio.Reader) {}
	for _, tc := range []struct {
		name  string
		first func(b *scriptedBackend, c net.Conn, br *bufio.Reader)
		// the second request
		method, body string
		// expectations
		code    int
		resp    string
		accepts int32
		retries float64
		// request lines the endpoint must have seen, in order
		lines []string
	}{
		{
			name:  "GET on idle-closed conn is retried",
			first: closeIdle, method: "GET",
			code: 200, resp: "fresh", accepts: 2, retries: 1,
			lines: []string{"GET /one HTTP/1.1", "GET /two HTTP/1.1"},
		},
		{
			name:  "bodyless POST on idle-closed conn is retried",
			first: closeIdle, method: "POST",
			code: 200, resp: "fresh", accepts: 2, retries: 1,
			lines: []string{"GET /one HTTP/1.1", "POST /two HTTP/1.1"},
		},
		{
			name: "GET on a reused conn closed without an answer is retried",
			first: func(b *scriptedBackend, c net.Conn, br *bufio.Reader) {
				if line, err := readRawRequest(br); err == nil {
					b.record(line) // and close: no byte of a response
				}
			},
			method: "GET",
			code:   200, resp: "fresh", accepts: 2, retries: 1,
			lines: []string{"GET /one HTTP/1.1", "GET /two HTTP/1.1", "GET /two HTTP/1.1"},
		},
		{
			name:  "POST with streamed body on idle-closed conn is not replayed",
			first: closeIdle, method: "POST", body: "payload",
			code: 502, accepts: 1, retries: 0,
			lines: []string{"GET /one HTTP/1.1"},
		},
		{
			name:  "PUT with streamed body on idle-closed conn is not replayed",
			first: closeIdle, method: "PUT", body: "payload",
			code: 502, accepts: 1, retries: 0,
			lines: []string{"GET /one HTTP/1.1"},
		},
		{
			name: "response bytes arrived: no retry",
			first: func(b *scriptedBackend, c net.Conn, br *bufio.Reader) {
				if line, err := readRawRequest(br); err == nil {
					b.record(line)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Le")
				}
			},
			method: "GET",
			code:   502, accepts: 1, retries: 0,
			lines: []string{"GET /one HTTP/1.1", "GET /two HTTP/1.1"},
		},
		{
			name: "timeout on reused conn: no retry",
			first: func(b *scriptedBackend, c net.Conn, br *bufio.Reader) {
				if line, err := readRawRequest(br); err == nil {
					b.record(line)
					io.Copy(io.Discard, br) // until the proxy gives up
				}
			},
			method: "GET",
			code:   504, accepts: 1, retries: 0,
			lines: []string{"GET /one HTTP/1.1", "GET /two HTTP/1.1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) {
				c.ResponseTimeout = 500 * time.Millisecond
				// Pools are per event loop, and the two requests come on
				// two client connections, which two loops may serve.
				c.EventLoops = min(c.EventLoops, 1)
				if tc.body != "" {
					// Event loops hand a request with a body to the
					// goroutine server, whose pool the first request
					// must have filled.
					c.EventLoops = 0
				}
			})
			// An event loop sees the endpoint close an idle pooled
			// connection (end of stream) and drops it itself, unless the
			// request is dispatched first: the retry may not be needed.
			loose := h.srv.cfg.EventLoops > 0 && tc.accepts == 2 && strings.Contains(tc.name, "idle-closed")
			b := newScriptedBackend(t, tc.first)
			h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("up", b.addr))

			if code, body, _ := h.get("x.test", "/one"); code != 200 || body != "first" {
				t.Fatalf("first request: %d %q", code, body)
			}
			waitPooled(t, h, b.addr)
			req, _ := http.NewRequest(tc.method, "http://x.test/two", nil)
			if tc.body != "" {
				req, _ = http.NewRequest(tc.method, "http://x.test/two", strings.NewReader(tc.body))
			}
			resp, err := h.client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || (tc.resp != "" && string(got) != tc.resp) {
				t.Errorf("second request: %d %q, want %d %q", resp.StatusCode, got, tc.code, tc.resp)
			}
			// The proxy answered: any retry has happened by now.
			if n := b.accepts.Load(); n != tc.accepts {
				t.Errorf("endpoint accepted %d connections, want %d", n, tc.accepts)
			}
			if n := testutil.ToFloat64(h.srv.m.staleRetries); !loose && n != tc.retries || n > tc.retries {
				t.Errorf("stale retries %v, want %v", n, tc.retries)
			}
			if lines := b.requests(); strings.Join(lines, "|") != strings.Join(tc.lines, "|") {
				t.Errorf("endpoint saw %q, want %q", lines, tc.lines)
			}
		})
	}
}

// TestFreshConnClosedNotRetried: a new connection the endpoint closes
// without answering is the endpoint's answer, not a stale pool.
func TestFreshConnClosedNotRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	var accepts atomic.Int32
	pod := tcpPod(t, func(c net.Conn) {
		accepts.Add(1)
		readRawRequest(bufio.NewReader(c))
		c.Close()
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("up", pod))
	if code, _, _ := h.get("x.test", "/"); code != 502 {
		t.Errorf("status %d, want 502", code)
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("endpoint accepted %d connections, want 1", n)
	}
	if n := testutil.ToFloat64(h.srv.m.staleRetries); n != 0 {
		t.Errorf("stale retries %v, want 0", n)
	}
}

// TestStaleRetryKeepAliveBackend: the same through net/http's server with a
// short IdleTimeout, waiting (by polling the endpoint's connection state)
// until it has closed the pooled connection.
func TestStaleRetryKeepAliveBackend(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	var closed atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler:     named("b"),
		IdleTimeout: 50 * time.Millisecond,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				closed.Add(1)
			}
		},
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("up", ln.Addr().String()))
	for i := range 3 {
		if code, body, _ := h.get("x.test", "/"); code != 200 || body != "b /" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		waitPooled(t, h, ln.Addr().String())
		waitFor(t, "endpoint closing the idle connection", func() bool { return closed.Load() == int32(i+1) })
	}
	// An event loop sees the endpoint close its idle connection and drops
	// it, unless the next request was dispatched first: fewer retries.
	if n := testutil.ToFloat64(h.srv.m.staleRetries); n != 2 && (h.srv.cfg.EventLoops == 0 || n > 2) {
		t.Errorf("stale retries %v, want 2", n)
	}
}
