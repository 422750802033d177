package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/route"
)

// FuzzServe sends arbitrary bytes to a serving proxy, as a client on the
// wire would, and checks what a user would notice: the proxy never panics,
// whatever it answers is an HTTP/1.1 response with a status code, and a
// well-formed request on a new connection is served right after. It runs
// on the harness's data path (the goroutine server unless
// EDGEGATE_TEST_EVENT_LOOPS is set).
func FuzzServe(f *testing.F) { fuzzServe(f, nil) }

// FuzzServeLoops is FuzzServe on two event loops, which hand what they do
// not serve to the goroutine server mid-connection.
func FuzzServeLoops(f *testing.F) {
	if runtime.GOOS != "linux" {
		f.Skip("event loops are Linux-only")
	}
	fuzzServe(f, func(c *Config) { c.EventLoops = 2 })
}

func fuzzServe(f *testing.F, mod func(*Config)) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello",
		"GET http://u:p@a.test/x HTTP/1.1\r\nHost: b\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	h := newHarness(f, func(c *Config) {
		c.ReadTimeout = 300 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
		c.ResponseTimeout = time.Second
		if mod != nil {
			mod(c)
		}
	})
	pod, _ := rawBackend(f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("a", pod))

	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(in); err != nil {
			return // the proxy may close early on garbage
		}
		_ = c.(*net.TCPConn).CloseWrite()
		out, _ := io.ReadAll(c)
		if len(out) > 0 && !bytes.HasPrefix(out, []byte("HTTP/1.1 ")) {
			t.Fatalf("answer is not an HTTP/1.1 response: %q", out[:min(len(out), 200)])
		}
		if n := testutil.ToFloat64(h.srv.m.panics); n != 0 {
			t.Fatalf("%v handler panics", n)
		}
		// Still serving.
		c2, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c2, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
		line, err := bufio.NewReader(c2).ReadString('\n')
		if err != nil || line != "HTTP/1.1 200 OK\r\n" {
			t.Fatalf("after %q: %q %v, want 200", in, line, err)
		}
	})
}
