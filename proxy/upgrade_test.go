package proxy

import (
	"bufio"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &wsPod{addr: ln.Addr().String(), reqs: make(chan *http.Request, 16), events: make(chan string, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
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
	for i := range 5 {
		ws.echo(fmt.Sprintf("message %d", i))
	}
	ws.echo(strings.Repeat("large frame, several reads. ", 10000))
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
	for _, want := range []string{"method=GET host=WS.test:8080 path=/chat status=101", "upstream=" + pod.addr} {
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
