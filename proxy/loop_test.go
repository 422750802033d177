package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/route"
)

func skipNoLoops(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("event loops are Linux-only")
	}
}

// loopHarness is a harness on n event loops, routing every host to addrs.
func loopHarness(t *testing.T, n int, mod func(*Config), addrs ...string) *harness {
	t.Helper()
	skipNoLoops(t)
	h := newHarness(t, func(c *Config) {
		c.EventLoops = n
		if mod != nil {
			mod(c)
		}
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("up", addrs...))
	return h
}

// scriptPod answers each request on a connection with the next of
// answers (the last one repeats) and records the raw request heads. An
// answer ending in "\x00close" is sent without it and the connection
// closed.
func scriptPod(t *testing.T, answers ...string) (addr string, heads chan string) {
	t.Helper()
	heads = make(chan string, 64)
	addr = tcpPod(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			head, err := readHead(br)
			if err != nil {
				return
			}
			heads <- head
			a := answers[min(i, len(answers)-1)]
			a, closeAfter := strings.CutSuffix(a, "\x00close")
			if _, err := io.WriteString(c, a); err != nil || closeAfter {
				return
			}
		}
	})
	return addr, heads
}

// readHead reads a message head up to and including its blank line.
func readHead(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		sb.WriteString(line)
		if line == "\r\n" {
			return sb.String(), nil
		}
	}
}

// roundTrip sends req on c and reads one response: its head without the
// Date line (whose presence it checks) and its decoded body.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, req string) (head, body string) {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	raw, err := readHead(br)
	if err != nil {
		t.Fatalf("reading response head: %v", err)
	}
	method := strings.Fields(req)[0]
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(raw), br)), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("parsing response: %v\n%s", err, raw)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	var lines []string
	dated := false
	for _, l := range strings.Split(raw, "\r\n") {
		if strings.HasPrefix(l, "Date: ") {
			dated = true
			continue
		}
		lines = append(lines, l)
	}
	if !dated {
		t.Errorf("response without Date:\n%s", raw)
	}
	return strings.Join(lines, "\n"), string(b)
}

// TestLoopSameAsGoroutineServer sends the same requests, answered by the
// same raw endpoint responses, through the goroutine server and through
// the event loops: the client must get the same response head (Date
// aside) and body, and the endpoint the same request head (the
// X-Forwarded-Port aside: the two listen on different ports).
func TestLoopSameAsGoroutineServer(t *testing.T) {
	skipNoLoops(t)
	t.Parallel()
	const get = "GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"
	for _, tc := range []struct {
		name, req, resp string
	}{
		{"length", get, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nhello"},
		{"no content type", get, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"},
		{"hop-by-hop and named headers dropped", get,
			"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Drop\r\nKeep-Alive: timeout=5\r\nX-Drop: 1\r\nX-Keep: 2\r\nContent-Length: 1\r\n\r\nx"},
		{"endpoint's Date and Server", get,
			"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nServer: pod\r\nContent-Length: 0\r\n\r\n"},
		{"lower-case names, repeated headers, cookies", get,
			"HTTP/1.1 200 OK\r\nx-lower: a\r\nX-Multi: 1\r\nX-Multi: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"},
		{"chunked with trailers", get,
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: v\r\n\r\n"},
		{"until close", get, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstreamed body\x00close"},
		{"HTTP/1.0 endpoint without length", get, "HTTP/1.0 200 OK\r\n\r\nold body\x00close"},
		{"204", get, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"},
		{"304 with a length", get, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n"},
		{"HEAD", "HEAD / HTTP/1.1\r\nHost: a.test\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/html\r\n\r\n"},
		{"interim 100 skipped", get, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"status without reason", get, "HTTP/1.1 299\r\nContent-Length: 0\r\n\r\n"},
		{"custom reason", get, "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n"},
		{"client Connection: close", "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"forwarded headers from the client", "GET / HTTP/1.1\r\nHost: A.Test:80\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\nX-Forwarded-Host: evil\r\nX-Real-IP: 9.9.9.9\r\nX-Forwarded-Proto: https\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"request hop-by-hop", "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: p\r\nCookie: c=1\r\nContent-Length: 0\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"dot segments and escapes", "GET /a/../b/%2e%2e/c?x=%2F&y HTTP/1.1\r\nHost: a.test\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"endpoint 500", get, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var heads, bodies, upHeads [2]string
			for i, loops := range []int{0, 1} {
				pod, seen := scriptPod(t, tc.resp)
				h := loopHarness(t, loops, nil, pod)
				c, br := dialProxy(t, h)
				heads[i], bodies[i] = roundTrip(t, c, br, tc.req)
				select {
				case upHeads[i] = <-seen:
				case <-time.After(5 * time.Second):
					t.Fatal("the endpoint saw no request")
				}
				_, port, _ := net.SplitHostPort(h.addr)
				upHeads[i] = strings.ReplaceAll(upHeads[i], "X-Forwarded-Port: "+port+"\r\n", "X-Forwarded-Port: PORT\r\n")
				if loops > 0 {
					if n := testutil.ToFloat64(h.srv.m.handOffs); n != 0 {
						t.Errorf("the loop handed the connection off (%v): the comparison is void", n)
					}
				}
			}
			if heads[0] != heads[1] {
				t.Errorf("response head differs:\ngoroutines:\n%s\nloops:\n%s", heads[0], heads[1])
			}
			if bodies[0] != bodies[1] {
				t.Errorf("body differs: goroutines %q, loops %q", bodies[0], bodies[1])
			}
			if upHeads[0] != upHeads[1] {
				t.Errorf("request at the endpoint differs:\ngoroutines:\n%s\nloops:\n%s", upHeads[0], upHeads[1])
			}
		})
	}
}

// TestLoopHandOff: requests the loops do not serve go to the goroutine
// server with the connection, which serves them and the rest of the
// connection's requests with the same answers as ever.
func TestLoopHandOff(t *testing.T) {
	t.Parallel()
	echo := backend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
	})
	for _, tc := range []struct {
		name, req string
		code      int
		body      string // prefix of the body
	}{
		{"request body", "POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\r\nbody", 200, "POST /p body"},
		{"chunked request body", "PUT /p HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, "PUT /p abc"},
		{"HTTP/1.0", "GET /p HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n", 200, "GET /p "},
		{"no route", "GET /p HTTP/1.1\r\nHost: nothing.test\r\n\r\n", 404, "404 page not found"},
		{"TRACE", "TRACE / HTTP/1.1\r\nHost: a.test\r\n\r\n", 405, "edgegate: method not allowed"},
		{"absolute form", "GET http://a.test/p HTTP/1.1\r\nHost: other\r\n\r\n", 200, "GET /p "},
		{"userinfo in Host", "GET / HTTP/1.1\r\nHost: u:p@a.test\r\n\r\n", 400, "edgegate: bad request"},
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 400, "edgegate: bad request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			skipNoLoops(t)
			h := newHarness(t, func(c *Config) { c.EventLoops = 2 })
			h.publish([]route.Route{rt("a.test", "/", route.Prefix, "i", 0), rt("", "/", route.Prefix, "i", 0)}, be("up", echo))
			if tc.name == "no route" {
				h.publish([]route.Route{rt("a.test", "/", route.Prefix, "i", 0)}, be("up", echo))
			}
			c, br := dialProxy(t, h)
			// A request the loop serves, then the one it hands off, then
			// one more on the same connection (unless it was closed).
			for i, req := range []string{"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n", tc.req, "GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n"} {
				io.WriteString(c, req)
				resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(req)[0]})
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want, wantBody := 200, "GET "+strings.Fields(req)[1]
				if i == 1 {
					want, wantBody = tc.code, tc.body
				}
				if resp.StatusCode != want || !strings.HasPrefix(string(b), wantBody) {
					t.Errorf("request %d: %d %q, want %d %q", i, resp.StatusCode, b, want, wantBody)
				}
				if resp.Close || strings.HasSuffix(tc.name, "HTTP/1.0") && i == 1 {
					if i == 1 && resp.Close && tc.code == 200 {
						t.Errorf("the connection closes after the handed-off request")
					}
					break
				}
			}
			if n := testutil.ToFloat64(h.srv.m.handOffs); n != 1 {
				t.Errorf("hand-offs %v, want 1", n)
			}
		})
	}
}

// TestLoopPipelined: requests sent back to back without waiting are
// answered in order, including one handed off in the middle.
func TestLoopPipelined(t *testing.T) {
	t.Parallel()
	echo := backend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) })
	h := loopHarness(t, 2, nil, echo)
	c, br := dialProxy(t, h)
	var reqs bytes.Buffer
	paths := []string{"/1", "/2", "/3", "/post", "/5", "/6"}
	for _, p := range paths {
		if p == "/post" {
			reqs.WriteString("POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
			continue
		}
		reqs.WriteString("GET " + p + " HTTP/1.1\r\nHost: a\r\n\r\n")
	}
	c.Write(reqs.Bytes())
	for _, p := range paths {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != p {
			t.Errorf("%s: %d %q", p, resp.StatusCode, b)
		}
	}
}

// TestLoopSpreadsConnections: accepted connections are spread evenly over
// the loops, and each loop keeps its own keep-alive connection to the
// endpoint.
func TestLoopSpreadsConnections(t *testing.T) {
	t.Parallel()
	var accepts atomic.Int32
	addr := tcpPod(t, func(c net.Conn) {
		accepts.Add(1)
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	const loops, conns = 4, 40
	h := loopHarness(t, loops, nil, addr)
	for i := range conns {
		c, br := dialProxy(t, h)
		if _, body := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); body != "ok" {
			t.Fatalf("request %d: %q", i, body)
		}
		c.Close()
	}
	h.srv.frontsMu.Lock()
	fr := h.srv.fronts[0]
	h.srv.frontsMu.Unlock()
	for i, l := range fr.loops {
		if n := l.accepted.Load(); n != conns/loops {
			t.Errorf("loop %d served %d connections, want %d", i, n, conns/loops)
		}
	}
	if n := accepts.Load(); n != loops {
		t.Errorf("the endpoint accepted %d connections, want %d (one pooled per loop)", n, loops)
	}
	if n := testutil.ToFloat64(h.srv.m.handOffs); n != 0 {
		t.Errorf("hand-offs %v, want 0", n)
	}
}
