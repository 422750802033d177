package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/route"
)

// Client-side timeouts as a user sees them on the wire: a stalled header
// gets 408, an idle keep-alive connection is closed, a body that keeps
// moving is never cut off however long it takes, a stalled body gets 408,
// and a connection kept busy for longer than every timeout stays open.

func timeoutHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, func(c *Config) {
		c.ReadTimeout = 300 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
		c.WriteTimeout = 300 * time.Millisecond
	})
	echo := backend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %d", len(b))
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("echo", echo))
	return h
}

func dialProxy(t *testing.T, h *harness) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second)) // the test's own safety net
	return c, bufio.NewReader(c)
}

func readResponse(t *testing.T, br *bufio.Reader) (int, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// closedByServer reads until the server closes the connection.
func closedByServer(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("waiting for the server to close: %v", err)
	}
}

func TestClientHeaderTimeout(t *testing.T) {
	t.Parallel()
	h := timeoutHarness(t)
	c, br := dialProxy(t, h)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n") // and never the blank line
	code, body := readResponse(t, br)
	if code != http.StatusRequestTimeout || body != string(bodyReqTimeout) {
		t.Errorf("stalled header: %d %q, want 408 %q", code, body, bodyReqTimeout)
	}
	closedByServer(t, c, br)
}

func TestClientIdleTimeout(t *testing.T) {
	t.Parallel()
	h := timeoutHarness(t)
	c, br := dialProxy(t, h)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if code, body := readResponse(t, br); code != 200 || body != "got 0" {
		t.Fatalf("first request: %d %q", code, body)
	}
	// Idle: the server closes the connection without answering anything.
	n, err := br.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Errorf("idle keep-alive connection: read %d bytes, %v; want the server to close it (EOF)", n, err)
	}
}

func TestClientBodyProgressNotCutOff(t *testing.T) {
	t.Parallel()
	h := timeoutHarness(t)
	c, br := dialProxy(t, h)
	// fasthttp reads the first 8 KiB of a body with the headers (under
	// ReadTimeout as a whole); the rest trickles in: 800 ms in all, more
	// than ReadTimeout, every gap less.
	const head, chunks, gap = 8 << 10, 8, 100 * time.Millisecond
	total := head + chunks*10
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", total, strings.Repeat("h", head))
	for range chunks {
		time.Sleep(gap)
		io.WriteString(c, strings.Repeat("x", 10))
	}
	if code, body := readResponse(t, br); code != 200 || body != fmt.Sprintf("got %d", total) {
		t.Errorf("slow but moving body: %d %q, want 200 \"got %d\"", code, body, total)
	}
}

// A small body is read with the headers, so ReadTimeout bounds all of it.
func TestClientSmallBodyUnderHeaderTimeout(t *testing.T) {
	t.Parallel()
	h := timeoutHarness(t)
	c, br := dialProxy(t, h)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 80\r\n\r\n")
	for range 8 {
		time.Sleep(100 * time.Millisecond)
		if _, err := io.WriteString(c, strings.Repeat("x", 10)); err != nil {
			break // the server may already have answered and closed
		}
	}
	if code, _ := readResponse(t, br); code != http.StatusRequestTimeout {
		t.Errorf("80-byte body over 800 ms with read_timeout 300 ms: %d, want 408", code)
	}
}

func TestClientBodyStalled(t *testing.T) {
	t.Parallel()
	h := timeoutHarness(t)
	c, br := dialProxy(t, h)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
	code, body := readResponse(t, br)
	if code != http.StatusRequestTimeout || body != string(bodyReqTimeout) {
		t.Errorf("stalled body: %d %q, want 408", code, body)
	}
	closedByServer(t, c, br)
}

func TestClientBusyConnOutlivesTimeouts(t *testing.T) {
	t.Parallel()
	h := timeoutHarness(t)
	c, br := dialProxy(t, h)
	// Requests back to back for three times every timeout: none of them
	// may be cut off, and the connection must stay open throughout.
	end := time.Now().Add(900 * time.Millisecond)
	n := 0
	for time.Now().Before(end) {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if code, body := readResponse(t, br); code != 200 || body != "got 0" {
			t.Fatalf("request %d on a busy connection: %d %q", n, code, body)
		}
		n++
		time.Sleep(20 * time.Millisecond)
	}
	if n < 5 {
		t.Fatalf("only %d requests in 900 ms", n)
	}
}

// A client that stops reading a large response is disconnected after
// WriteTimeout: the proxy does not hold the endpoint's stream open forever.
func TestClientStopsReading(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.WriteTimeout = 300 * time.Millisecond })
	const size = 256 << 20
	ended := make(chan error, 1)
	big := backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		chunk := make([]byte, 64<<10)
		var err error
		for sent := 0; sent < size && err == nil; sent += len(chunk) {
			_, err = w.Write(chunk)
		}
		ended <- err
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("big", big))
	c, br := dialProxy(t, h)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	// Read the header and a little of the body, then stop reading.
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the endpoint wrote the whole 256 MiB to a client that stopped reading")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the endpoint's response still streaming 15 s after the client stopped reading (write timeout 300 ms)")
	}
	// Draining what the kernel buffered ends in a closed connection, short
	// of the announced length.
	n, _ := io.Copy(io.Discard, resp.Body)
	if n+1024 >= size {
		t.Errorf("client got the whole body (%d bytes) after it stopped reading", n+1024)
	}
}
