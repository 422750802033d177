package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/route"
)

// exchangeRaw writes req on a new connection and returns everything the
// proxy sends until it closes the connection.
func (h *harness) exchangeRaw(req string) string {
	h.t.Helper()
	c := h.send(req)
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		h.t.Fatalf("reading until close: %v (got %q)", err, b)
	}
	return string(b)
}

// bodyPod answers every request with answer and passes on the request
// bodies it got.
func bodyPod(t *testing.T, answer string) (addr string, bodies chan string) {
	bodies = make(chan string, 32)
	return backend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
		io.WriteString(w, answer)
	}), bodies
}

// splitResponse splits a raw response into its header lines (without the
// status line) and its body.
func splitResponse(t *testing.T, raw string) (status string, header http.Header, body string) {
	t.Helper()
	head, body, ok := strings.Cut(raw, "\r\n\r\n")
	if !ok {
		t.Fatalf("no end of header in %q", raw)
	}
	lines := strings.Split(head, "\r\n")
	header = http.Header{}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		header.Add(k, strings.TrimSpace(v))
	}
	return lines[0], header, body
}

// An HTTP/1.0 client must never get a chunked response (RFC 9112, 6.1): a
// response the pod sends without a length reaches it delimited by the
// connection's close, and the pod is spoken to in HTTP/1.1.
func TestHTTP10ClientGetsCloseDelimitedBody(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	protos := make(chan string, 4)
	big := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB: several chunks and copy buffers
	pod := backend(t, func(w http.ResponseWriter, r *http.Request) {
		protos <- r.Proto
		w.Header().Set("X-Pod", "a")
		// Flushing before the end makes net/http send it chunked to an
		// HTTP/1.1 client.
		io.WriteString(w, big[:100])
		w.(http.Flusher).Flush()
		io.WriteString(w, big[100:])
	})
	h.publish([]route.Route{rt("a.test", "/", route.Prefix, "i", 0)}, be("a", pod))

	raw := h.exchangeRaw("GET /stream HTTP/1.0\r\nHost: a.test\r\n\r\n")
	status, hdr, body := splitResponse(t, raw)
	if !strings.HasSuffix(status, " 200 OK") {
		t.Fatalf("status line %q", status)
	}
	if te := hdr.Get("Transfer-Encoding"); te != "" {
		t.Errorf("Transfer-Encoding %q sent to an HTTP/1.0 client", te)
	}
	if cl := hdr.Get("Content-Length"); cl != "" {
		t.Errorf("Content-Length %q on a close-delimited body", cl)
	}
	if c := hdr.Get("Connection"); !strings.EqualFold(c, "close") {
		t.Errorf("Connection %q, want close", c)
	}
	if hdr.Get("X-Pod") != "a" || hdr.Get("Date") == "" {
		t.Errorf("header lost: %v", hdr)
	}
	if body != big {
		t.Errorf("body: %d bytes, want %d (starts %q)", len(body), len(big), body[:min(len(body), 40)])
	}
	if p := <-protos; p != "HTTP/1.1" {
		t.Errorf("pod spoken to in %s, want HTTP/1.1", p)
	}

	// HEAD: the same header, no body.
	raw = h.exchangeRaw("HEAD /stream HTTP/1.0\r\nHost: a.test\r\n\r\n")
	if _, hdr, body := splitResponse(t, raw); body != "" || hdr.Get("Transfer-Encoding") != "" {
		t.Errorf("HEAD: header %v, body %d bytes", hdr, len(body))
	}
	<-protos

	// The exchange was ended: the pod connection went back to the pool and
	// an HTTP/1.1 request on it still works.
	if code, body, _ := h.get("a.test", "/"); code != 200 || body != big {
		t.Errorf("HTTP/1.1 after HTTP/1.0: %d, %d bytes", code, len(body))
	}
	<-protos
}

// An HTTP/1.0 keep-alive client with responses of known length keeps its
// connection; without Host, the pod gets its own address as Host and no
// X-Forwarded-Host (there was no original host).
func TestHTTP10KeepAliveAndNoHost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	pod, got := rawBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("a", pod))

	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for i := range 2 {
		if _, err := io.WriteString(c, "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" || resp.Close {
			t.Fatalf("request %d: %d %q close=%v", i, resp.StatusCode, b, resp.Close)
		}
		req := <-got
		if !strings.HasPrefix(req, "GET /x HTTP/1.1\r\n") {
			t.Errorf("request line to the pod: %q", strings.SplitN(req, "\r\n", 2)[0])
		}
		if !strings.Contains(req, "\r\nHost: "+pod+"\r\n") {
			t.Errorf("Host to the pod is not its address %s:\n%s", pod, req)
		}
		if strings.Contains(strings.ToLower(req), "x-forwarded-host") {
			t.Errorf("X-Forwarded-Host sent for a request without Host:\n%s", req)
		}
	}
}

// Requests a reverse proxy must not pass on are answered at the edge and
// never reach the pod.
func TestRejectedRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	pod, got := rawBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("a", pod))
	for _, tc := range []struct {
		name, req string
		code      int
		allow     bool
	}{
		{"TRACE", "TRACE / HTTP/1.1\r\nHost: a.test\r\nCookie: secret\r\n\r\n", 405, true},
		{"CONNECT", "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", 405, true},
		{"userinfo in Host", "GET / HTTP/1.1\r\nHost: u:p@a.test\r\n\r\n", 400, false},
		{"userinfo in absolute-form target", "GET http://u:p@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", 400, false},
		{"slash in Host", "GET / HTTP/1.1\r\nHost: a.test/x\r\n\r\n", 400, false},
		{"backslash in Host", "GET / HTTP/1.1\r\nHost: a.test\\x\r\n\r\n", 400, false},
	} {
		resp, body := h.raw(tc.req)
		if resp.StatusCode != tc.code || len(body) > 100 {
			t.Errorf("%s: %d %q, want %d", tc.name, resp.StatusCode, body, tc.code)
		}
		if a := resp.Header.Get("Allow"); tc.allow != (a != "") || strings.Contains(a, "TRACE") || strings.Contains(a, "CONNECT") {
			t.Errorf("%s: Allow %q", tc.name, a)
		}
	}
	select {
	case req := <-got:
		t.Errorf("pod received a rejected request:\n%s", req)
	default:
	}
	if n := testutil.ToFloat64(h.srv.m.badRequests); n != 4 {
		t.Errorf("bad requests counted %v, want 4", n)
	}
	// Hosts that are well-formed still route.
	for _, host := range []string{"a.test:8080", "[::1]:80", "10.0.0.1", "xn--bcher-kva.test", "a_b.test"} {
		resp, body := h.raw("GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
		if resp.StatusCode != 200 || body != "ok" {
			t.Errorf("Host %s: %d %q", host, resp.StatusCode, body)
		}
		<-got
	}
}

// A dial that times out is an upstream timeout (504), a refused one a bad
// gateway (502).
func TestClassifyDialErrors(t *testing.T) {
	timeout := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	for _, tc := range []struct {
		err  error
		want errKind
		code int
	}{
		{&dialError{timeout}, errTimeout, 504},
		{fmt.Errorf("wrapped: %w", &dialError{timeout}), errTimeout, 504},
		{&dialError{refused}, errConnect, 502},
		{os.ErrDeadlineExceeded, errTimeout, 504},
		{io.ErrUnexpectedEOF, errReset, 502},
	} {
		k := classifyErr(tc.err)
		code, _ := statusOf(k)
		if k != tc.want || code != tc.code {
			t.Errorf("%v: kind %d status %d, want %d %d", tc.err, k, code, tc.want, tc.code)
		}
	}
}

// A connect that fails sends the request, body included, to another
// endpoint of the backend: a pod that is gone while its EndpointSlice still
// lists it costs clients nothing while a peer answers.
func TestNextEndpointAfterConnectFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	live, bodies := bodyPod(t, "live")
	gone1, gone2, gone3 := closedAddr(t), closedAddr(t), closedAddr(t)
	h.publish([]route.Route{
		rt("mixed.test", "/", route.Prefix, "i", 0),
		rt("dead.test", "/", route.Prefix, "i", 1),
	}, be("mixed", gone1, live, gone2), be("dead", gone1, gone2, gone3))

	c := h.client()
	for i := range 9 {
		body := fmt.Sprintf("request %d", i)
		resp, err := c.Post("http://mixed.test/", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "live" {
			t.Fatalf("request %d: %d %q, want the live endpoint's answer", i, resp.StatusCode, b)
		}
		if got := <-bodies; got != body {
			t.Errorf("request %d: live endpoint got body %q, want %q", i, got, body)
		}
	}
	retries := testutil.ToFloat64(h.srv.m.dialRetries)
	if retries < 6 || retries > 9*(maxEndpointTries-1) {
		// Round-robin over three endpoints, two of them gone: a gone one is
		// picked first for two thirds of the requests, and a retry may meet
		// the other gone one before the live one.
		t.Errorf("next-endpoint retries %v for 9 requests over 2 gone + 1 live endpoints, want 6-%d", retries, 9*(maxEndpointTries-1))
	}

	// All gone: at most maxEndpointTries connects, then 502.
	before := testutil.ToFloat64(h.srv.m.dialRetries)
	if code, body, _ := h.get("dead.test", "/"); code != 502 || body != string(bodyBadGateway) {
		t.Errorf("every endpoint gone: %d %q, want 502", code, body)
	}
	if n := testutil.ToFloat64(h.srv.m.dialRetries) - before; n != maxEndpointTries-1 {
		t.Errorf("every endpoint gone: %v retries, want %d", n, maxEndpointTries-1)
	}
	select {
	case b := <-bodies:
		t.Errorf("unexpected request at the live endpoint: %q", b)
	default:
	}
}

// With max_conns_per_endpoint connections busy, further requests wait for
// one to come free (up to the connect timeout) instead of failing at once.
func TestBusyEndpointQueues(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.MaxConnsPerEndpoint = 1; c.ConnectTimeout = 3 * time.Second })
	pod := backend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond)
		io.WriteString(w, "ok")
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("a", pod))
	codes := make(chan int, 4)
	for range cap(codes) {
		go func() {
			resp, err := h.client().Get("http://a.test/")
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for range cap(codes) {
		if c := <-codes; c != 200 {
			t.Errorf("concurrent request over the connection limit: %d, want 200 after waiting", c)
		}
	}
	if n := testutil.ToFloat64(h.srv.m.upErr[errBusy]); n != 0 {
		t.Errorf("%v busy errors", n)
	}
}

// A request with both Content-Length and Transfer-Encoding is framed by
// its chunks, and its connection is closed after the response (RFC 9112,
// 6.3): a peer that went by the length would see another request start
// elsewhere.
func TestContentLengthWithChunkedClosesConnection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	pod, bodies := bodyPod(t, "ok")
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("a", pod))

	raw := h.exchangeRaw("POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 40\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	status, hdr, body := splitResponse(t, raw)
	if !strings.HasSuffix(status, " 200 OK") || body != "ok" || !strings.EqualFold(hdr.Get("Connection"), "close") {
		t.Errorf("CL + TE: %q %v %q, want 200 ok with Connection: close (and the connection closed)", status, hdr, body)
	}
	if b := <-bodies; b != "abc" {
		t.Errorf("pod got body %q, want the chunked body abc", b)
	}
	// Chunked alone keeps the connection.
	resp, body2 := h.raw("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	if resp.StatusCode != 200 || body2 != "ok" || resp.Close {
		t.Errorf("chunked alone: %d %q close=%v", resp.StatusCode, body2, resp.Close)
	}
	<-bodies
}

func TestHasRawContentLength(t *testing.T) {
	for raw, want := range map[string]bool{
		"Host: x\r\nContent-Length: 3\r\n\r\n":          true,
		"Host: x\r\ncontent-LENGTH:3\r\n":               true,
		"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n": false,
		"X-Content-Length: 3\r\n":                       false,
		"Host: content-length:\r\n":                     false,
		"":                                              false,
	} {
		if got := hasRawContentLength([]byte(raw)); got != want {
			t.Errorf("%q: %v, want %v", raw, got, want)
		}
	}
}
