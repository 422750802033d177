package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

// Protocol upgrades through the proxy, with a minimal RFC 6455 WebSocket
// pod and client on real sockets.

const (
	wsGUID    = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	opText    = 0x1
	opClose   = 0x8
	wsHello   = "hello from pod"
	wsBye     = "bye after eof"
	wsCloseMe = "close-me"
)

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// appendFrame appends one final frame; a client masks its frames.
func appendFrame(b []byte, op byte, payload []byte, mask bool) []byte {
	b = append(b, 0x80|op)
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !mask {
		return append(b, payload...)
	}
	var key [4]byte
	rand.Read(key[:])
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

func readFrame(r *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	op = h[0] & 0x0f
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return op, payload, nil
}

// wsPod is a WebSocket echo endpoint. After its 101 head it sends wsHello
// in the same write; it echoes text frames, closes the connection on
// wsCloseMe, answers a close frame, and on the client's end of stream
// sends wsBye and closes. reqs gets each handshake request, events "eof"
// when a client's end of stream arrives and "closed" when the pod closed a
// connection.
type wsPod struct {
	addr   string
	reqs   chan *http.Request
	events chan string
}

func newWSPod(t *testing.T) *wsPod {
	t.Helper()
	p := &wsPod{reqs: make(chan *http.Request, 16), events: make(chan string, 16)}
	p.addr = tcpPod(t, p.serve)
	return p
}

func (p *wsPod) serve(c net.Conn) {
	defer func() {
		c.Close()
		p.events <- "closed"
	}()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.reqs <- req
	if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		return
	}
	head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + wsAccept(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
	if _, err := c.Write(appendFrame([]byte(head), opText, []byte(wsHello), false)); err != nil {
		return
	}
	for {
		op, msg, err := readFrame(br)
		if errors.Is(err, io.EOF) {
			p.events <- "eof"
			c.Write(appendFrame(nil, opText, []byte(wsBye), false))
			return
		}
		if err != nil {
			return
		}
		switch {
		case op == opClose:
			c.Write(appendFrame(nil, opClose, msg, false))
			return
		case string(msg) == wsCloseMe:
			return
		}
		if _, err := c.Write(appendFrame(nil, op, msg, false)); err != nil {
			return
		}
	}
}

// wsClient is the client end of a tunnel.
type wsClient struct {
	t    *testing.T
	c    net.Conn
	br   *bufio.Reader
	resp *http.Response
}

// wsHandshake sends a WebSocket handshake for host on c, followed in the
// same write by early (raw bytes, may be nil), and checks the 101.
func wsHandshake(t *testing.T, c net.Conn, host string, early []byte) *wsClient {
	t.Helper()
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET /chat?room=1 HTTP/1.1\r\nHost: " + host + "\r\n" +
		"Connection: keep-alive, Upgrade\r\nupgrade: websocket\r\nKeep-Alive: timeout=5\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write(append([]byte(req), early...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("handshake: %d %q", resp.StatusCode, b)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		t.Errorf("Sec-WebSocket-Accept %q, want %q", got, wsAccept(key))
	}
	if got := resp.Header.Get("Upgrade"); got != "websocket" {
		t.Errorf("Upgrade %q", got)
	}
	if got := resp.Header.Get("Connection"); !strings.EqualFold(got, "upgrade") {
		t.Errorf("Connection %q", got)
	}
	return &wsClient{t: t, c: c, br: br, resp: resp}
}

func (w *wsClient) send(msg string) {
	w.t.Helper()
	if _, err := w.c.Write(appendFrame(nil, opText, []byte(msg), true)); err != nil {
		w.t.Fatalf("send %q: %v", msg, err)
	}
}

func (w *wsClient) recv() string {
	w.t.Helper()
	op, msg, err := readFrame(w.br)
	if err != nil {
		w.t.Fatalf("recv: %v", err)
	}
	if op != opText {
		w.t.Fatalf("recv: opcode %d %q", op, msg)
	}
	return string(msg)
}

func (w *wsClient) echo(msg string) {
	w.t.Helper()
	w.send(msg)
	if got := w.recv(); got != msg {
		w.t.Fatalf("echo: got %q, want %q", truncate(got), truncate(msg))
	}
}

// eof waits for the proxy to end the stream.
func (w *wsClient) eof() {
	w.t.Helper()
	if b, err := io.ReadAll(w.br); err != nil || len(b) > 0 {
		w.t.Fatalf("waiting for end of stream: %q %v", truncate(string(b)), err)
	}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func dialPlain(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second)) // the test's own safety net
	return c
}

func wantEvent(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("pod event %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for pod event %q", want)
	}
}

func (h *harness) upgraded() float64 { return testutil.ToFloat64(h.srv.m.upgraded) }

func TestUpgradeWebSocket(t *testing.T) {
	t.Parallel()
	var logs syncBuf
	h := newHarness(t, func(c *Config) {
		c.AccessLog = true
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	pod := newWSPod(t)
	h.publish([]route.Route{rt("ws.test", "/chat", route.Prefix, "ing", 0)}, be("ws", pod.addr))

	ws := wsHandshake(t, dialPlain(t, h.addr), "WS.test:8080", nil)
	req := <-pod.reqs
	for k, want := range map[string]string{
		"Upgrade":           "websocket",
		"Connection":        "upgrade",
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "WS.test:8080",
		"Keep-Alive":        "",
	} {
		if got := req.Header.Get(k); got != want {
			t.Errorf("endpoint saw %s: %q, want %q", k, got, want)
		}
	}
	if req.Host != "WS.test:8080" || req.URL.RequestURI() != "/chat?room=1" {
		t.Errorf("endpoint saw Host %q URI %q", req.Host, req.URL.RequestURI())
	}
	if got := ws.recv(); got != wsHello {
		t.Errorf("server-initiated message %q", got)
	}
	sent := len(appendFrame(nil, opText, []byte(wsHello), false)) + len(appendFrame(nil, opText, []byte(wsBye), false))
	for _, msg := range []string{"message 0", "message 1", "message 2", strings.Repeat("large frame, several reads. ", 10000)} {
		ws.echo(msg)
		sent += len(appendFrame(nil, opText, []byte(msg), false))
	}
	if n := h.upgraded(); n != 1 {
		t.Errorf("upgraded gauge %v, want 1", n)
	}

	// The client ends its side: the endpoint sees end of stream and can
	// still answer before it closes.
	if err := ws.c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, pod.events, "eof")
	if got := ws.recv(); got != wsBye {
		t.Errorf("after half-close: %q", got)
	}
	ws.eof()
	waitFor(t, "gauge back to 0", func() bool { return h.upgraded() == 0 })
	waitFor(t, "access log line", func() bool { return strings.Contains(logs.String(), "status=101") })
	out := logs.String()
	for _, want := range []string{"method=GET host=WS.test:8080 path=/chat status=101", "upstream=" + pod.addr, fmt.Sprintf("bytes=%d\n", sent)} {
		if !strings.Contains(out, want) {
			t.Errorf("access log lacks %q:\n%s", want, out)
		}
	}
	if err := testutil.CollectAndCompare(h.srv.m.requests, strings.NewReader(`
# HELP edgegate_http_requests_total HTTP requests answered, by the route that matched (ingress and path empty when none did) and status code.
# TYPE edgegate_http_requests_total counter
edgegate_http_requests_total{code="101",host="ws.test",ingress="ing",namespace="ns",path="/chat"} 1
`)); err != nil {
		t.Error(err)
	}
	h.waitIdleEndpoints(t)
}

// waitIdleEndpoints waits until no endpoint has a request or tunnel in
// progress.
func (h *harness) waitIdleEndpoints(t *testing.T) {
	t.Helper()
	waitFor(t, "endpoints released", func() bool {
		var inflight int64
		h.reg.Each(func(ep *balancer.Endpoint) { inflight += ep.InFlight() })
		return inflight == 0
	})
}

func publishWS(t *testing.T, h *harness) *wsPod {
	t.Helper()
	pod := newWSPod(t)
	h.publish([]route.Route{rt("", "/", route.Prefix, "ing", 0)}, be("ws", pod.addr))
	return pod
}

func TestUpgradeEndpointCloses(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	pod := publishWS(t, h)
	ws := wsHandshake(t, dialPlain(t, h.addr), "x", nil)
	ws.recv()
	ws.echo("one")
	ws.send(wsCloseMe)
	wantEvent(t, pod.events, "closed")
	ws.eof()
	// The tunnel passed the endpoint's end of stream on as a half-close;
	// it ends when the client closes too.
	if n := h.upgraded(); n != 1 {
		t.Errorf("upgraded gauge %v while the client side is open", n)
	}
	ws.c.Close()
	waitFor(t, "gauge back to 0", func() bool { return h.upgraded() == 0 })
	h.waitIdleEndpoints(t)
}

func TestUpgradeTLS(t *testing.T) {
	t.Parallel()
	th := newTLSHarness(t, nil)
	pod := newWSPod(t)
	r := rt("secure.example", "/", route.Prefix, "ing", 0)
	r.RedirectHTTPS = true // not applied on the TLS listener
	th.publish([]route.Route{r}, be("ws", pod.addr))

	c, _ := dialTLS(t, th, nil)
	ws := wsHandshake(t, c, "secure.example", nil)
	req := <-pod.reqs
	if got := req.Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto %q", got)
	}
	if got := ws.recv(); got != wsHello {
		t.Errorf("server-initiated message %q", got)
	}
	for i := range 3 {
		ws.echo(fmt.Sprintf("secure %d", i))
	}
	ws.echo(strings.Repeat("x", 100<<10))
	// close_notify and FIN from the client: the endpoint sees end of
	// stream, and its last message and end of stream reach the client.
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, pod.events, "eof")
	if got := ws.recv(); got != wsBye {
		t.Errorf("after half-close: %q", got)
	}
	ws.eof()
	waitFor(t, "gauge back to 0", func() bool { return th.upgraded() == 0 })
}

// oneShotPod answers the first request of each connection with response
// and ends its side, then reports "eof" when the proxy closes the
// connection.
func oneShotPod(t *testing.T, response string) (addr string, events chan string, reqs chan *http.Request) {
	t.Helper()
	events, reqs = make(chan string, 16), make(chan *http.Request, 16)
	addr = tcpPod(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		reqs <- req
		if response == "" { // silent: wait for the proxy to give up
			io.Copy(io.Discard, br)
			return
		}
		io.WriteString(c, response)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
		events <- "eof"
	})
	return addr, events, reqs
}

func TestUpgradeRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ok := backend(t, named("ok"))
	for _, tc := range []struct {
		name, response string
		code           int
		body           string
	}{
		{"403", "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nX-Why: origin\r\nConnection: keep-alive\r\n\r\nforbidden", 403, "forbidden"},
		{"200 chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nplain\r\n0\r\n\r\n", 200, "plain"},
		{"200 until close", "HTTP/1.1 200 OK\r\n\r\nuntil close", 200, "until close"},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", 204, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod, events, _ := oneShotPod(t, tc.response)
			h.publish([]route.Route{
				rt("ws.test", "/", route.Prefix, "ing", 0),
				rt("", "/", route.Prefix, "ing", 1),
			}, be("ws", pod), be("ok", ok))
			c := dialPlain(t, h.addr)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tc.code || string(b) != tc.body {
				t.Fatalf("%d %q %v, want %d %q", resp.StatusCode, b, err, tc.code, tc.body)
			}
			if resp.Header.Get("Upgrade") != "" || resp.Close {
				t.Errorf("header %v, close %v", resp.Header, resp.Close)
			}
			// The endpoint connection opened for it is closed; the
			// client connection stays usable.
			wantEvent(t, events, "eof")
			if got := get(t, c, br, "/again"); got != "ok /again" {
				t.Errorf("next request: %q", got)
			}
			if n := h.upgraded(); n != 0 {
				t.Errorf("upgraded gauge %v", n)
			}
		})
	}
	h.waitIdleEndpoints(t)
}

func TestUpgradePipelinedBytes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	pod := tcpPod(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		// 101 and the first bytes of the new protocol in one write, then
		// an echo of everything, starting with what followed the request.
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo/2\r\nConnection: upgrade\r\n\r\ngreeting")
		io.Copy(c, br)
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "ing", 0)}, be("foo", pod))

	c := dialPlain(t, h.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo/2\r\n\r\nearly")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "foo/2" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	buf := make([]byte, len("greetingearly"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "greetingearly" {
		t.Fatalf("%q %v", buf, err)
	}
	io.WriteString(c, "more")
	buf = buf[:4]
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "more" {
		t.Fatalf("%q %v", buf, err)
	}
}

func TestUpgradeErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.ResponseTimeout = 300 * time.Millisecond })
	silent, _, _ := oneShotPod(t, "")
	hangup := closedAfterRequest(t)
	plain, got := rawBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	h.publish([]route.Route{
		rt("refused.test", "/", route.Prefix, "i", 0),
		rt("silent.test", "/", route.Prefix, "i", 1),
		rt("hangup.test", "/", route.Prefix, "i", 2),
		rt("plain.test", "/", route.Prefix, "i", 3),
	}, be("refused", closedAddr(t)), be("silent", silent), be("hangup", hangup), be("plain", plain))
	const upg = "Connection: upgrade\r\nUpgrade: websocket\r\n"
	for _, tc := range []struct {
		name, req string
		code      int
		body      string
	}{
		{"endpoint down", "GET / HTTP/1.1\r\nHost: refused.test\r\n" + upg + "\r\n", 502, "edgegate: bad gateway\n"},
		{"no response", "GET / HTTP/1.1\r\nHost: silent.test\r\n" + upg + "\r\n", 504, "edgegate: gateway timeout\n"},
		{"closed without response", "GET / HTTP/1.1\r\nHost: hangup.test\r\n" + upg + "\r\n", 502, "edgegate: bad gateway\n"},
		{"no route", "GET / HTTP/1.1\r\nHost: nomatch.test\r\n" + upg + "\r\n", 404, "404 page not found\n"},
		{"with a body", "POST / HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 3\r\n" + upg + "\r\nabc", 200, "ok"},
		{"GET with a body", "GET / HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 3\r\n" + upg + "\r\nabc", 200, "ok"},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: plain.test\r\n" + upg + "\r\n", 200, "ok"},
	} {
		start := time.Now()
		resp, body := h.raw(tc.req)
		if resp.StatusCode != tc.code || body != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.name, resp.StatusCode, body, tc.code, tc.body)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s took %v", tc.name, d)
		}
		if tc.code == 200 {
			// Forwarded as a plain request: the upgrade headers go.
			if req := strings.ToLower(<-got); strings.Contains(req, "upgrade") {
				t.Errorf("%s: forwarded with upgrade headers:\n%s", tc.name, req)
			}
		}
	}
	m := h.srv.m
	for k, want := range map[errKind]float64{errConnect: 1, errTimeout: 1, errReset: 1} {
		if n := testutil.ToFloat64(m.upErr[k]); n != want {
			t.Errorf("%s errors: %v, want %v", errKindNames[k], n, want)
		}
	}
	if n := h.upgraded(); n != 0 {
		t.Errorf("upgraded gauge %v", n)
	}
	h.waitIdleEndpoints(t)
}

// closedAfterRequest is an endpoint that reads a request head and closes
// the connection without an answer.
func closedAfterRequest(t *testing.T) string {
	t.Helper()
	return tcpPod(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		c.Close()
	})
}

func TestUpgradeShutdownClosesTunnels(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	pod := newWSPod(t)
	ok := backend(t, named("ok"))
	h.publish([]route.Route{
		rt("ws.test", "/", route.Prefix, "ing", 0),
		rt("ok.test", "/", route.Prefix, "ing", 1),
	}, be("ws", pod.addr), be("ok", ok))
	ws := wsHandshake(t, dialPlain(t, h.addr), "ws.test", nil)
	ws.recv()
	// Other connections are served as usual while the tunnel is open.
	for range 3 {
		if code, body, _ := h.get("ok.test", "/k"); code != 200 || body != "ok /k" {
			t.Fatalf("keep-alive request beside a tunnel: %d %q", code, body)
		}
	}
	ws.echo("still there")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if n := h.upgraded(); n != 0 {
		t.Errorf("upgraded gauge %v after Shutdown", n)
	}
	ws.eof()
	wantEvent(t, pod.events, "eof")
	h.waitIdleEndpoints(t)
}

// An upgraded connection idle past ParkIdleAfter is not parked: the parker
// would hand it back to fasthttp, which would read frames as HTTP.
func TestUpgradeNotParked(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux-only")
	}
	th := newTLSHarness(t, func(c *Config) { c.ParkIdleAfter = testParkAfter })
	pod := newWSPod(t)
	th.publish([]route.Route{rt("", "/", route.Prefix, "ing", 0)}, be("ws", pod.addr))
	tlsConn, _ := dialTLS(t, th, nil)
	for _, tc := range []struct {
		name string
		c    net.Conn
	}{
		{"plain", dialPlain(t, th.addr)},
		{"tls", tlsConn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := wsHandshake(t, tc.c, "secure.example", nil)
			ws.recv()
			ws.echo("before")
			time.Sleep(4 * testParkAfter) // idle: what parking waits for
			if n := th.parked(); n != 0 {
				t.Errorf("%d connections parked", n)
			}
			ws.echo("after")
			time.Sleep(4 * testParkAfter)
			ws.echo("after again")
		})
	}
}

func TestUpgradeIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	h := newHarness(t, func(c *Config) { c.IdleTimeout = idle })
	pod := publishWS(t, h)
	ws := wsHandshake(t, dialPlain(t, h.addr), "x", nil)
	ws.recv()
	// Traffic keeps it open past the idle timeout...
	for i := range 6 {
		time.Sleep(idle / 3)
		ws.echo(fmt.Sprint("tick ", i))
	}
	// ... silence closes it.
	start := time.Now()
	ws.eof()
	if d := time.Since(start); d < idle*3/4 || d > 10*idle {
		t.Errorf("closed after %v idle, want about %v", d, idle)
	}
	wantEvent(t, pod.events, "eof")
	waitFor(t, "gauge back to 0", func() bool { return h.upgraded() == 0 })
}

func TestUpgradeMaxConnsPerEndpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.MaxConnsPerEndpoint = 1 })
	publishWS(t, h)
	first := wsHandshake(t, dialPlain(t, h.addr), "x", nil)
	first.recv()
	resp, body := h.raw("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp.StatusCode != 503 || body != "edgegate: upstream busy\n" {
		t.Errorf("second tunnel: %d %q, want 503", resp.StatusCode, body)
	}
	first.c.Close()
	h.waitIdleEndpoints(t)
	again := wsHandshake(t, dialPlain(t, h.addr), "x", nil)
	again.recv()
	again.echo("room again")
}

// TestUpgradeNextEndpoint: a WebSocket handshake whose connect to the
// picked endpoint fails goes to another endpoint of the backend, like any
// request.
func TestUpgradeNextEndpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	pod := newWSPod(t)
	h.publish([]route.Route{rt("ws.test", "/", route.Prefix, "ing", 0)}, be("ws", closedAddr(t), pod.addr, closedAddr(t)))
	for i := range 4 {
		ws := wsHandshake(t, dialPlain(t, h.addr), "ws.test", nil)
		<-pod.reqs
		if got := ws.recv(); got != wsHello {
			t.Fatalf("handshake %d: server-initiated message %q", i, got)
		}
		ws.echo(fmt.Sprintf("message %d", i))
		ws.c.Close()
	}
	if n := testutil.ToFloat64(h.srv.m.dialRetries); n < 2 {
		t.Errorf("%v next-endpoint retries over 4 handshakes with 2 of 3 endpoints gone, want at least 2", n)
	}
}
