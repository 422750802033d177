//go:build !race

package proxy

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/edgegate/edgegate/route"
)

// Header handling must not allocate once its buffers have grown.
func TestHeaderRewriteAllocs(t *testing.T) {
	req := parseReq(t, sampleReq)
	var sc scratch
	ip, port := []byte("192.0.2.7"), []byte("80")
	if n := testing.AllocsPerRun(100, func() { rewriteRequest(&req.Header, &sc, ip, port, protoHTTPS) }); n != 0 {
		t.Errorf("rewriteRequest: %v allocs/op", n)
	}

	var src, dst fasthttp.ResponseHeader
	src.DisableNormalizing()
	dst.DisableNormalizing()
	raw := "HTTP/1.1 200 OK\r\nConnection: x-a\r\nx-a: 1\r\nContent-Type: text/html\r\nContent-Length: 10\r\nSet-Cookie: a=b\r\nCache-Control: no-cache\r\n\r\n"
	if err := src.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		dst.Reset()
		copyResponseHeader(&dst, &src, &sc)
	}); n != 0 {
		t.Errorf("copyResponseHeader: %v allocs/op", n)
	}
}

// The HTTPS redirect builds its Location without allocating.
func TestRedirectAllocs(t *testing.T) {
	s, err := New(Config{Snapshot: func() *route.Snapshot { return nil }, RedirectHTTPS: true, HTTPSPort: 8443})
	if err != nil {
		t.Fatal(err)
	}
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.DisableNormalizing()
	ctx.Response.Header.DisableNormalizing()
	ctx.Request.SetRequestURI("/a/b?c=d")
	host := []byte("Secure.Example:80")
	var st handlerState
	run := func() {
		ctx.Response.Reset()
		st = handlerState{}
		s.redirectHTTPS(&ctx, &st, host)
	}
	run()
	if got := string(ctx.Response.Header.Peek("Location")); got != "https://secure.example:8443/a/b?c=d" {
		t.Fatalf("Location %q", got)
	}
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("redirectHTTPS: %v allocs/op", n)
	}
}

// A request an event loop serves allocates nothing once the loop's
// buffers and pools have warmed up: measured over whole round trips
// through a real loop, with a client and an endpoint that allocate
// nothing themselves (fixed buffers, canned bytes).
func TestLoopRoundTripAllocs(t *testing.T) {
	skipNoLoops(t)
	const answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
	pod := tcpPod(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 4096)
		resp := []byte(answer)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}
	})
	h := loopHarness(t, 1, nil, pod)
	c, _ := dialProxy(t, h)
	req := []byte("GET /alloc?x=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\n\r\n")
	buf := make([]byte, 4096)
	var bad error
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			bad = err
			return
		}
		// The answer is small: one read holds it, up to its body.
		got := 0
		for !bytes.HasSuffix(buf[:got], []byte("hello")) {
			n, err := c.Read(buf[got:])
			if err != nil {
				bad = err
				return
			}
			got += n
		}
	}
	for range 100 { // warm up pools, buffers and metric series
		roundTrip()
	}
	n := testing.AllocsPerRun(200, roundTrip)
	if bad != nil {
		t.Fatal(bad)
	}
	if n != 0 {
		t.Errorf("a request through an event loop: %v allocs/op", n)
	}
}
