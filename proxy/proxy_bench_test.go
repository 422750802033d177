package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

func BenchmarkRewriteRequest(b *testing.B) {
	req := parseReq(b, sampleReq)
	var sc scratch
	ip, port := []byte("192.0.2.7"), []byte("80")
	b.ReportAllocs()
	for b.Loop() {
		rewriteRequest(&req.Header, &sc, ip, port, protoHTTP)
	}
}

func BenchmarkCopyResponseHeader(b *testing.B) {
	var src, dst fasthttp.ResponseHeader
	src.DisableNormalizing()
	dst.DisableNormalizing()
	raw := "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 10\r\nSet-Cookie: a=b\r\nCache-Control: no-cache\r\nETag: \"x\"\r\n\r\n"
	if err := src.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		b.Fatal(err)
	}
	var sc scratch
	b.ReportAllocs()
	for b.Loop() {
		dst.Reset()
		copyResponseHeader(&dst, &src, &sc)
	}
}

// BenchmarkRoundTrip measures a whole proxied request: client -> proxy over
// fasthttp's in-memory listener, proxy -> fasthttp backend on loopback.
func BenchmarkRoundTrip(b *testing.B) {
	for _, size := range []int{0, 1 << 10, 64 << 10} {
		b.Run(byteSize(size), func(b *testing.B) { benchRoundTrip(b, size, 0) })
	}
}

// BenchmarkRoundTripLoops is BenchmarkRoundTrip through two event loops
// (Config.EventLoops), the client on loopback TCP (loops serve sockets).
func BenchmarkRoundTripLoops(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("event loops are Linux-only")
	}
	for _, size := range []int{0, 1 << 10, 64 << 10} {
		b.Run(byteSize(size), func(b *testing.B) { benchRoundTrip(b, size, 2) })
	}
}

func byteSize(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

func benchRoundTrip(b *testing.B, size, loops int) {
	body := []byte(strings.Repeat("x", size))
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bsrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.Response.SetBodyRaw(body) }}
	go bsrv.Serve(bln)
	defer bsrv.Shutdown()

	var snap atomic.Pointer[route.Snapshot]
	s, err := New(Config{Snapshot: snap.Load, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), EventLoops: loops})
	if err != nil {
		b.Fatal(err)
	}
	reg := balancer.NewRegistry(balancer.RegistryConfig{NewTransport: s.NewTransport})
	bk := be("bench", bln.Addr().String())
	bk.Bind(reg)
	sn, _ := route.New([]route.Route{rt("bench.test", "/", route.Prefix, "i", 0)}, []*route.Backend{bk}, nil)
	snap.Store(sn)

	dial := func(string) (net.Conn, error) { return nil, nil }
	if loops > 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go s.Serve(ln)
		defer s.Shutdown(context.Background())
		dial = func(string) (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }
	} else {
		ln := fasthttputil.NewInmemoryListener()
		ln.SetLocalAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80})
		go s.Serve(ln)
		defer s.srv.Shutdown()
		dial = func(string) (net.Conn, error) {
			return ln.DialWithLocalAddr(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5555})
		}
	}

	client := &fasthttp.HostClient{
		Addr:     "bench.test",
		Dial:     dial,
		MaxConns: 1024,
	}
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI("http://bench.test/path?q=1")
		req.Header.Set("X-Forwarded-For", "198.51.100.1")
		for pb.Next() {
			if err := client.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode() != 200 || len(resp.Body()) != size {
				b.Errorf("status %d, %d bytes", resp.StatusCode(), len(resp.Body()))
				return
			}
		}
	})
}
