package e2e

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// wsAccept is the Sec-WebSocket-Accept for key (RFC 6455, 4.2.2).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// startWSPod starts a pod that completes WebSocket handshakes and then
// echoes every byte it receives; other requests get the usual echo JSON.
func (e *env) startWSPod(name string, port int) *pod {
	e.t.Helper()
	n := network(e.t)
	ip := n.AllocIP()
	ln, err := n.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	if err != nil {
		e.t.Fatalf("pod %s listen: %v", name, err)
	}
	p := &pod{name: name, ip: ip, port: port}
	h := func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			w.Header().Set("X-Pod", name)
			json.NewEncoder(w).Encode(echo{Pod: name, Method: r.Method, Host: r.Host, Path: r.URL.Path, URI: r.RequestURI, Headers: r.Header})
			return
		}
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Time{})
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: %s\r\nX-Forwarded-Proto-Seen: %s\r\n\r\n",
			wsAccept(r.Header.Get("Sec-WebSocket-Key")), r.Header.Get("X-Forwarded-Proto"))
		io.Copy(c, rw.Reader)
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(h), ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	e.t.Cleanup(func() { p.srv.Close() })
	return p
}

// wsOpen sends a WebSocket handshake for host to the gateway's HTTP port
// and checks the 101.
func (e *env) wsOpen(host string) (net.Conn, *bufio.Reader) {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.gw.HTTPAddr, 3*time.Second)
	if err != nil {
		e.t.Fatalf("dial gateway: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	fmt.Fprintf(c, "GET /socket HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", host, key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		e.t.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		e.t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	if got := resp.Header.Get("X-Forwarded-Proto-Seen"); got != "http" {
		e.t.Errorf("pod saw X-Forwarded-Proto %q", got)
	}
	return c, br
}

func (e *env) upgradedGauge(want int) {
	e.t.Helper()
	series := "edgegate_http_upgraded_connections " + strconv.Itoa(want)
	e.eventually(series, func() error {
		if _, text := e.admin("/metrics"); !containsMetric(text, series) {
			return fmt.Errorf("not in /metrics")
		}
		return nil
	})
}

// TestWebSocketTunnel: an Ingress-routed WebSocket handshake through the
// real gateway becomes a tunnel to the pod; closing the client ends it, and
// SIGTERM closes an open one and still exits 0.
func TestWebSocketTunnel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.startWSPod("ws", 8080)
	e.service("ws", svcPort("http", 80, intstr.FromInt32(8080)))
	e.slice("ws", "ws-1", "http", ready(p))
	host := "ws." + e.ns + ".test"
	e.ingress(e.ing("ws", rule(host, prefix("/", "ws", 80))))
	e.expect(host, "/", want{pod: "ws"})

	c, br := e.wsOpen(host)
	for i := range 3 {
		msg := fmt.Sprintf("message %d through the tunnel", i)
		io.WriteString(c, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q: %q %v", msg, got, err)
		}
	}
	e.upgradedGauge(1)
	if _, text := e.admin("/metrics"); !strings.Contains(text, `code="101"`) {
		t.Error("no request counted with code 101")
	}
	c.Close()
	e.upgradedGauge(0)

	c, br = e.wsOpen(host)
	e.upgradedGauge(1)
	start := time.Now()
	if err := e.gw.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
		t.Errorf("tunnel at shutdown: %q %v, want end of stream", b, err)
	}
	e.waitCleanExit()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("shutdown with an open tunnel took %v", d)
	}
}
