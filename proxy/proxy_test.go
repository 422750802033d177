package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

func named(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", name, r.URL.RequestURI()) }
}

func TestRouting(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	a1 := backend(t, named("a1"))
	a2 := backend(t, named("a2"))
	b := backend(t, named("b"))
	h.publish([]route.Route{
		rt("a.test", "/", route.Prefix, "ing-a", 0),
		rt("b.test", "/api", route.Prefix, "ing-b", 1),
		rt("b.test", "/api/exact", route.Exact, "ing-b", 0),
	}, be("a", a1, a2), be("b", b))

	seen := map[string]int{}
	for range 10 {
		code, body, _ := h.get("a.test", "/x?q=1")
		if code != 200 {
			t.Fatalf("a.test: %d %q", code, body)
		}
		name, uri, _ := strings.Cut(body, " ")
		if uri != "/x?q=1" {
			t.Errorf("request URI %q, want /x?q=1", uri)
		}
		seen[name]++
	}
	if seen["a1"] != 5 || seen["a2"] != 5 {
		t.Errorf("round robin over two endpoints: %v", seen)
	}
	for _, tc := range []struct{ host, path, want string }{
		{"b.test", "/api/v1", "b /api/v1"},
		{"B.TEST:80", "/api", "b /api"},
		{"b.test", "/api/exact", "a"},
	} {
		code, body, _ := h.get(tc.host, tc.path)
		if code != 200 || !strings.HasPrefix(body, tc.want) {
			t.Errorf("%s%s: %d %q, want %q", tc.host, tc.path, code, body, tc.want)
		}
	}
}

func TestLocalAnswers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if code, body, hdr := h.get("a.test", "/"); code != 503 || body != "edgegate: not ready\n" || hdr.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("nil snapshot: %d %q %v", code, body, hdr)
	}
	broken := be("broken")
	broken.Error = "service ns/broken not found"
	h.publish([]route.Route{
		rt("empty.test", "/", route.Prefix, "i", 0),
		rt("broken.test", "/", route.Prefix, "i", 1),
	}, be("empty"), broken)
	for _, tc := range []struct {
		host string
		code int
		body string
	}{
		{"nomatch.test", 404, "404 page not found\n"},
		{"empty.test", 503, "edgegate: no ready endpoint\n"},
		{"broken.test", 503, "edgegate: no ready endpoint\n"},
	} {
		code, body, _ := h.get(tc.host, "/")
		if code != tc.code || body != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.host, code, body, tc.code, tc.body)
		}
	}
}

func TestUpstreamErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.ResponseTimeout = 300 * time.Millisecond })
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := backend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	// Responds with headers, then stalls mid-body.
	stall := backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	h.publish([]route.Route{
		rt("refused.test", "/", route.Prefix, "i", 0),
		rt("slow.test", "/", route.Prefix, "i", 1),
		rt("stall.test", "/", route.Prefix, "i", 2),
	}, be("refused", closedAddr(t)), be("slow", slow), be("stall", stall))

	if code, body, _ := h.get("refused.test", "/"); code != 502 || body != "edgegate: bad gateway\n" {
		t.Errorf("refused: %d %q", code, body)
	}
	start := time.Now()
	if code, body, _ := h.get("slow.test", "/"); code != 504 || body != "edgegate: gateway timeout\n" {
		t.Errorf("slow: %d %q", code, body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("504 took %v", d)
	}
	// Status already sent: the client sees a truncated body.
	resp, err := h.client().Get("http://stall.test/")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err == nil || string(b) != "partial" {
		t.Errorf("stall: %d %q err=%v, want 200, truncated body and an error", resp.StatusCode, b, err)
	}
	m := h.srv.m
	waitFor(t, "error counters", func() bool {
		return testutil.ToFloat64(m.upErr[errConnect]) == 1 && testutil.ToFloat64(m.upErr[errTimeout]) == 2
	})
}

func TestHopByHopRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	addr, got := rawBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("raw", addr))
	resp, body := h.raw("GET /p HTTP/1.1\r\n" +
		"Host: Example.TEST:8080\r\n" +
		"connection: keep-alive, X-Named, x-other\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
		"TE: trailers\r\n" +
		"Upgrade: websocket\r\n" +
		"X-Named: 1\r\n" +
		"X-Other: 2\r\n" +
		"X-Kept: 3\r\n" +
		"x-forwarded-for: 10.0.0.1\r\n" +
		"X-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n" +
		"X-Forwarded-Proto: https\r\n" +
		"x-real-ip: 6.6.6.6\r\n" +
		"\r\n")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	req := <-got
	lower := strings.ToLower(req)
	for _, gone := range []string{"connection:", "keep-alive:", "proxy-connection:", "proxy-authorization:", "\nte:", "upgrade:", "x-named:", "x-other:", "https", "6.6.6.6"} {
		if strings.Contains(lower, gone) {
			t.Errorf("forwarded request still has %q:\n%s", gone, req)
		}
	}
	_, port, _ := strings.Cut(h.addr, ":")
	for _, want := range []string{
		"GET /p HTTP/1.1\r\n",
		"Host: Example.TEST:8080\r\n",
		"X-Kept: 3\r\n",
		"X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1\r\n",
		"X-Forwarded-Proto: http\r\n",
		"X-Forwarded-Host: Example.TEST:8080\r\n",
		"X-Forwarded-Port: " + port + "\r\n",
		"X-Real-IP: 127.0.0.1\r\n",
	} {
		if !strings.Contains(req, want) {
			t.Errorf("forwarded request lacks %q:\n%s", want, req)
		}
	}
	if n := strings.Count(lower, "x-forwarded-for:"); n != 1 {
		t.Errorf("%d X-Forwarded-For headers, want 1", n)
	}
}

func TestHopByHopResponse(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	addr, _ := rawBackend(t, "HTTP/1.1 201 Created\r\n"+
		"Connection: X-Resp-Named\r\n"+
		"Keep-Alive: timeout=5\r\n"+
		"Proxy-Authenticate: Basic\r\n"+
		"Upgrade: h2c\r\n"+
		"X-Resp-Named: 1\r\n"+
		"x-kept: 2\r\n"+
		"Set-Cookie: a=1; Path=/a\r\n"+
		"Set-Cookie: a=2; Path=/b\r\n"+
		"Transfer-Encoding: chunked\r\n"+
		"\r\n"+
		"5\r\nhello\r\n0\r\n\r\n")
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("raw", addr))
	resp, body := h.raw("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 201 || body != "hello" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	for _, gone := range []string{"Keep-Alive", "Proxy-Authenticate", "Upgrade", "X-Resp-Named"} {
		if v, ok := resp.Header[gone]; ok {
			t.Errorf("response still has %s: %v", gone, v)
		}
	}
	if resp.Close {
		t.Error("endpoint's Connection header closed the client connection")
	}
	if v := resp.Header.Get("x-kept"); v != "2" {
		t.Errorf("x-kept = %q", v)
	}
	if v := resp.Header.Values("Set-Cookie"); len(v) != 2 {
		t.Errorf("Set-Cookie = %q, want both", v)
	}
}

func TestMalformedRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.MaxHeaderBytes = 4096 })
	ok := backend(t, named("ok"))
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("ok", ok))
	for _, tc := range []struct {
		name, req string
		code      int
	}{
		{"garbage", "NOT HTTP AT ALL\r\n\r\n", 400},
		{"bad header", "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400},
		{"two content-lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"huge header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8192) + "\r\n\r\n", 431},
	} {
		resp, body := h.raw(tc.req)
		if resp.StatusCode != tc.code || len(body) > 100 || strings.Contains(body, "goroutine") {
			t.Errorf("%s: %d %q, want %d", tc.name, resp.StatusCode, body, tc.code)
		}
	}
	if code, body, _ := h.get("x", "/"); code != 200 || !strings.HasPrefix(body, "ok") {
		t.Errorf("after malformed requests: %d %q", code, body)
	}
	if n := testutil.ToFloat64(h.srv.m.badRequests); n != 4 {
		t.Errorf("bad requests counted %v, want 4", n)
	}
}

func TestPanicRecovered(t *testing.T) {
	t.Parallel()
	var boom atomic.Bool
	h := newHarness(t, func(c *Config) {
		inner := c.Snapshot
		c.Snapshot = func() *route.Snapshot {
			if boom.Load() {
				panic("boom")
			}
			return inner()
		}
	})
	ok := backend(t, named("ok"))
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("ok", ok))
	boom.Store(true)
	code, body, _ := h.get("x", "/")
	if code != 500 || body != "edgegate: internal error\n" {
		t.Errorf("panic: %d %q", code, body)
	}
	boom.Store(false)
	if code, _, _ := h.get("x", "/"); code != 200 {
		t.Errorf("after panic: %d", code)
	}
	if n := testutil.ToFloat64(h.srv.m.panics); n != 1 {
		t.Errorf("panics counted %v", n)
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	started := make(chan struct{})
	slow := backend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(500 * time.Millisecond)
		io.WriteString(w, "done")
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("slow", slow))
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := h.client().Get("http://x/")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{resp.StatusCode, string(b), err}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	r := <-res
	if r.err != nil || r.code != 200 || r.body != "done" {
		t.Errorf("in-flight request: %+v", r)
	}
	if c, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		c.Close()
		t.Error("still accepting after Shutdown")
	}
}

func TestShutdownBoundedByContext(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	started := make(chan struct{})
	release := make(chan struct{})
	stuck := backend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	})
	defer close(release)
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("stuck", stuck))
	go func() {
		if resp, err := h.client().Get("http://x/"); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
}

func TestRequestMetricsSurviveSwaps(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ok := backend(t, named("ok"))
	routes := []route.Route{rt("a.test", "/", route.Prefix, "ing", 0)}
	h.publish(routes, be("ok", ok))
	h.get("a.test", "/")
	h.get("nomatch.test", "/")
	// Many swaps, each with new Route pointers of the same identity: the
	// counters carry on, and the dead pointers are pruned once they
	// outnumber the live routes, so their number stays bounded.
	const swaps = 2*pruneSlack + 50
	pruned := 0
	for range swaps {
		snap := h.publish(routes, be("ok", ok))
		h.get("a.test", "/")
		pruned += h.srv.Prune(snap)
	}
	if n := h.srv.m.requests.ptrs.Load(); n > 2*(1+1)+pruneSlack+1 {
		t.Errorf("%d route pointers kept for 1 live route after %d swaps", n, swaps)
	}
	if pruned < swaps-(2*(1+1)+pruneSlack+1) {
		t.Errorf("pruned %d pointers over %d swaps", pruned, swaps)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h.srv.Collectors()...)
	want := `
# HELP edgegate_http_requests_total HTTP requests answered, by the route that matched (ingress and path empty when none did) and status code.
# TYPE edgegate_http_requests_total counter
edgegate_http_requests_total{code="200",host="a.test",ingress="ing",namespace="ns",path="/"} ` + strconv.Itoa(1+swaps) + `
edgegate_http_requests_total{code="404",host="",ingress="",namespace="",path=""} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "edgegate_http_requests_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "edgegate_http_upstream_duration_seconds"); err != nil || n != 1 {
		t.Errorf("histogram: %d %v", n, err)
	}
}

func TestPostBodyForwarded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	echo := backend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d %v %s", r.ContentLength, r.TransferEncoding, b)
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("echo", echo))
	c := h.client()
	// Known length.
	resp, err := c.Post("http://x/", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "5 [] hello" {
		t.Errorf("sized body: %q", b)
	}
	// Unknown length: chunked stays chunked.
	pr, pw := io.Pipe()
	go func() { io.WriteString(pw, "chunk"); pw.Close() }()
	resp, err = c.Post("http://x/", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "-1 [chunked] chunk" {
		t.Errorf("chunked body: %q", b)
	}
	// A 404 for a request with a body closes the connection (the body
	// may be unread).
	resp2, _ := h.raw("POST / HTTP/1.1\r\nHost: nomatch\r\nContent-Length: 3\r\n\r\nabc")
	_ = resp2
}

func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	a := backend(t, named("a"))
	b := backend(t, named("b"))
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("ab", a, b))
	c := h.client()
	var wg sync.WaitGroup
	var fails atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				resp, err := c.Get("http://x/")
				if err != nil {
					fails.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					fails.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := fails.Load(); n != 0 {
		t.Errorf("%d failures", n)
	}
	// A streamed exchange ends (CloseWithError) just after its last byte
	// is flushed, so the client may see the body a moment before: poll.
	waitFor(t, "no request in flight", func() bool {
		var inflight int64
		h.reg.Each(func(ep *balancer.Endpoint) { inflight += ep.InFlight() })
		return inflight == 0
	})
}
