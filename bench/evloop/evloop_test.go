package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var big = bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB

// testBackend answers /small, /16k, /chunked (several flushed writes), and
// /echo (the request's headers, one "Name: value" a line).
func testBackend(t *testing.T, name string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		switch r.URL.Path {
		case "/small":
			io.WriteString(w, "small\n")
		case "/16k":
			w.Header().Set("Content-Length", fmt.Sprint(len(big))) // also for HEAD
			w.Write(big)
		case "/chunked":
			for i := range 5 {
				fmt.Fprintf(w, "part %d;", i)
				w.(http.Flusher).Flush()
			}
		case "/echo":
			for k, v := range r.Header {
				fmt.Fprintf(w, "%s: %s\n", k, strings.Join(v, ","))
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func startProxy(t *testing.T, backends ...string) *proxy {
	p, err := start("127.0.0.1:0", backends, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	return p
}

// exchange sends raw request bytes on c and reads n responses.
func exchange(t *testing.T, c net.Conn, br *bufio.Reader, raw string, n int) []*http.Response {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var out []*http.Response
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading response: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading body: %v", err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		out = append(out, resp)
	}
	return out
}

func body(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

func get(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: bench.test\r\n\r\n" }

func TestKeepAliveBodies(t *testing.T) {
	a, b := testBackend(t, "a"), testBackend(t, "b")
	p := startProxy(t, a.Listener.Addr().String(), b.Listener.Addr().String())
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	seen := map[string]bool{}
	for i := range 6 { // one client conn throughout: keep-alive
		for path, want := range map[string]string{"/small": "small\n", "/16k": string(big),
			"/chunked": "part 0;part 1;part 2;part 3;part 4;"} {
			r := exchange(t, c, br, get(path), 1)[0]
			if got := body(r); r.StatusCode != 200 || got != want {
				t.Fatalf("round %d %s: %d, %d bytes %.40q; want 200, %d bytes", i, path, r.StatusCode, len(got), got, len(want))
			}
			if path == "/chunked" && r.TransferEncoding == nil {
				t.Errorf("/chunked: not chunked (%v)", r.Header)
			}
			seen[r.Header.Get("X-Backend")] = true
		}
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("backends seen: %v; want both (round-robin)", seen)
	}
	// HEAD: a Content-Length but no body; the next response follows at once.
	io.WriteString(c, "HEAD /16k HTTP/1.1\r\nHost: bench.test\r\n\r\n")
	if r, err := http.ReadResponse(br, &http.Request{Method: "HEAD"}); err != nil || r.StatusCode != 200 || r.ContentLength != int64(len(big)) {
		t.Fatalf("HEAD: %v %v", r, err)
	}
	if r := exchange(t, c, br, get("/small"), 1)[0]; body(r) != "small\n" {
		t.Errorf("GET after HEAD: %d %q", r.StatusCode, body(r))
	}
	if got := p.stats(); strings.HasPrefix(got, "requests 0 0;") {
		t.Errorf("requests not counted: %s", got)
	}
}

func TestForwardedHeaders(t *testing.T) {
	p := startProxy(t, testBackend(t, "a").Listener.Addr().String())
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := exchange(t, c, bufio.NewReader(c), "GET /echo HTTP/1.1\r\nHost: Any.Host.Example:8080\r\n"+
		"X-Forwarded-For: 10.1.2.3\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"+
		"Proxy-Authorization: x\r\nX-Kept: yes\r\n\r\n", 1)[0]
	got := body(r)
	_, port, _ := net.SplitHostPort(p.addr)
	for _, want := range []string{"X-Forwarded-For: 10.1.2.3, 127.0.0.1\n", "X-Forwarded-Proto: http\n",
		"X-Forwarded-Host: Any.Host.Example:8080\n", "X-Forwarded-Port: " + port + "\n", "X-Kept: yes\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("backend saw no %q in:\n%s", want, got)
		}
	}
	for _, gone := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization"} {
		if strings.Contains(got, gone+":") {
			t.Errorf("hop-by-hop %s reached the backend:\n%s", gone, got)
		}
	}
}

func TestPipelined(t *testing.T) {
	p := startProxy(t, testBackend(t, "a").Listener.Addr().String())
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rs := exchange(t, c, bufio.NewReader(c), get("/16k")+get("/small")+get("/chunked"), 3)
	for i, want := range []string{string(big), "small\n", "part 0;part 1;part 2;part 3;part 4;"} {
		if got := body(rs[i]); rs[i].StatusCode != 200 || got != want {
			t.Errorf("response %d: %d, %d bytes; want %d bytes", i, rs[i].StatusCode, len(got), len(want))
		}
	}
}

func TestBackendDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := startProxy(t, dead)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for range 2 { // the client conn survives a 502
		if r := exchange(t, c, br, get("/small"), 1)[0]; r.StatusCode != http.StatusBadGateway {
			t.Fatalf("backend down: %d; want 502", r.StatusCode)
		}
	}
	r := exchange(t, c, br, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", 1)[0]
	if r.StatusCode != http.StatusNotImplemented {
		t.Errorf("request body: %d; want 501", r.StatusCode)
	}
}

// TestStalePooledConn: a pooled conn the backend closed while idle is
// detected (or retried on a fresh conn), not answered with a 502.
func TestStalePooledConn(t *testing.T) {
	s := testBackend(t, "a")
	p := startProxy(t, s.Listener.Addr().String())
	for i := range 2 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		r := exchange(t, c, bufio.NewReader(c), get("/small"), 1)[0]
		c.Close()
		if r.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, r.StatusCode)
		}
		s.CloseClientConnections() // every pooled conn goes stale
	}
}
