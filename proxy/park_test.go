package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/route"
)

// Parked idle connections, as a client sees them: a keep-alive connection
// idle past ParkIdleAfter is parked (counted, no goroutine) and serves its
// next request as if nothing happened; a parked connection is closed at
// its idle timeout, when the client goes away, and on Shutdown; pipelined
// and partial requests are never cut.

const testParkAfter = 50 * time.Millisecond

func parkHarness(t *testing.T, idle time.Duration) *harness {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux-only")
	}
	h := newHarness(t, func(c *Config) {
		c.EventLoops = 0 // parking is the goroutine server's: loops hold idle connections themselves
		c.ParkIdleAfter = testParkAfter
		c.IdleTimeout = idle
		c.ReadTimeout = idle
	})
	publishEcho(t, h)
	return h
}

// parkTLSHarness is parkHarness with a TLS listener; mod may change the
// config further.
func parkTLSHarness(t *testing.T, mod func(*Config)) *tlsHarness {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux-only")
	}
	th := newTLSHarness(t, func(c *Config) {
		c.ParkIdleAfter = testParkAfter
		if mod != nil {
			mod(c)
		}
	})
	publishEcho(t, th.harness)
	return th
}

// publishEcho routes everything to a pod answering "PATH BODYLEN".
func publishEcho(t *testing.T, h *harness) {
	t.Helper()
	echo := backend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d", r.URL.Path, len(b))
	})
	h.publish([]route.Route{rt("", "/", route.Prefix, "i", 0)}, be("echo", echo))
}

// dialTLS opens a TLS connection to th's TLS listener through wrap (nil:
// the plain TCP conn).
func dialTLS(t *testing.T, th *tlsHarness, wrap func(net.Conn) net.Conn) (net.Conn, *bufio.Reader) {
	t.Helper()
	raw, err := net.Dial("tcp", th.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(20 * time.Second)) // the test's own safety net
	var nc net.Conn = raw
	if wrap != nil {
		nc = wrap(raw)
	}
	c := tls.Client(nc, &tls.Config{RootCAs: th.roots, ServerName: "secure.example"})
	return c, bufio.NewReader(c)
}

func (h *harness) parked() int64 { return h.srv.park.n.Load() }

func (h *harness) waitParked(t *testing.T, n int64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); h.parked() != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections parked, want %d", h.parked(), n)
		}
	}
}

func get(t *testing.T, c net.Conn, br *bufio.Reader, path string) string {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	code, body := readResponse(t, br)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %q", path, code, body)
	}
	return body
}

func TestParkAndResume(t *testing.T) {
	t.Parallel()
	h := parkHarness(t, 10*time.Second)
	c, br := dialProxy(t, h)
	for i := range 3 {
		if got, want := get(t, c, br, fmt.Sprintf("/r%d", i)), fmt.Sprintf("/r%d 0", i); got != want {
			t.Fatalf("request %d: %q, want %q", i, got, want)
		}
		h.waitParked(t, 1)
	}
	// A request with a body after parking, then parked again.
	fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if code, body := readResponse(t, br); code != 200 || body != "/up 5" {
		t.Fatalf("POST after parking: %d %q", code, body)
	}
	h.waitParked(t, 1)
	if n := h.srv.park.parks.Load(); n < 4 {
		t.Errorf("%d parks counted, want 4", n)
	}
}

// TestParkBusyConnectionNotParked: back-to-back requests never wait long
// enough to park.
func TestParkBusyConnectionNotParked(t *testing.T) {
	t.Parallel()
	h := parkHarness(t, 10*time.Second)
	c, br := dialProxy(t, h)
	for i := range 50 {
		get(t, c, br, fmt.Sprintf("/b%d", i))
	}
	if n := h.srv.park.parks.Load(); n != 0 {
		t.Errorf("%d parks during back-to-back requests, want 0", n)
	}
}

func TestParkedIdleTimeout(t *testing.T) {
	t.Parallel()
	// The idle timeout leaves the poll below a wide window to see the
	// connection parked on a loaded (CI) machine: parked from 50ms on,
	// closed at 2s.
	h := parkHarness(t, 2*time.Second)
	c, br := dialProxy(t, h)
	get(t, c, br, "/")
	h.waitParked(t, 1)
	start := time.Now()
	closedByServer(t, c, br)
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("parked connection closed after %s, idle timeout 2s", d)
	}
	h.waitParked(t, 0)
}

func TestParkedClientCloses(t *testing.T) {
	t.Parallel()
	h := parkHarness(t, 10*time.Second)
	c, br := dialProxy(t, h)
	get(t, c, br, "/")
	h.waitParked(t, 1)
	before := testutil.ToFloat64(h.srv.m.badRequests)
	c.(*net.TCPConn).SetLinger(0) // a reset, as clients often close
	c.Close()
	h.waitParked(t, 0)
	// Resumed, it reads the reset and ends: wait until fasthttp is done
	// with it, then nothing may have been counted.
	for deadline := time.Now().Add(10 * time.Second); h.srv.srv.GetOpenConnectionsCount() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", h.srv.srv.GetOpenConnectionsCount())
		}
	}
	if after := testutil.ToFloat64(h.srv.m.badRequests); after != before {
		t.Errorf("a parked client going away counted %v bad requests", after-before)
	}
}

// TestParkPipelined: a request that arrives with the previous one, and one
// whose second half comes after longer than ParkIdleAfter, are both
// served: only an empty read buffer parks.
func TestParkPipelined(t *testing.T) {
	t.Parallel()
	h := parkHarness(t, 10*time.Second)
	c, br := dialProxy(t, h)
	io.WriteString(c, "GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHo")
	if code, body := readResponse(t, br); code != 200 || body != "/p1 0" {
		t.Fatalf("first pipelined: %d %q", code, body)
	}
	time.Sleep(4 * testParkAfter)
	if h.parked() != 0 {
		t.Fatal("parked with half a request buffered")
	}
	io.WriteString(c, "st: x\r\n\r\n")
	if code, body := readResponse(t, br); code != 200 || body != "/p2 0" {
		t.Fatalf("second pipelined: %d %q", code, body)
	}
}

func TestParkShutdown(t *testing.T) {
	t.Parallel()
	h := parkHarness(t, 10*time.Second)
	var conns []net.Conn
	var readers []*bufio.Reader
	for range 5 {
		c, br := dialProxy(t, h)
		get(t, c, br, "/")
		conns, readers = append(conns, c), append(readers, br)
	}
	h.waitParked(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i, c := range conns {
		closedByServer(t, c, readers[i])
	}
	if h.parked() != 0 {
		t.Errorf("%d still parked after Shutdown", h.parked())
	}
}

// TestParkManyConnections parks many connections at once and serves each
// again, concurrently.
func TestParkManyConnections(t *testing.T) {
	t.Parallel()
	h := parkHarness(t, 10*time.Second)
	const n = 200
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range n {
		conns[i], readers[i] = dialProxy(t, h)
		get(t, conns[i], readers[i], "/")
	}
	h.waitParked(t, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			fmt.Fprintf(conns[i], "GET /again%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
			resp, err := http.ReadResponse(readers[i], nil)
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("/again%d 0", i); string(b) != want {
				errs <- fmt.Errorf("conn %d: %q, want %q", i, b, want)
				return
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	h.waitParked(t, n)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h.srv.Collectors()...)
	want := fmt.Sprintf(`
# HELP edgegate_http_parked_connections Idle keep-alive client connections parked (no goroutine, no read buffer) until their next request.
# TYPE edgegate_http_parked_connections gauge
edgegate_http_parked_connections %d
`, n)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "edgegate_http_parked_connections"); err != nil {
		t.Error(err)
	}
}

// TestParkTLS: a TLS keep-alive connection parks with its TLS state and
// resumes on the same session (no new handshake); at its idle timeout the
// client gets a close_notify.
func TestParkTLS(t *testing.T) {
	t.Parallel()
	th := parkTLSHarness(t, func(c *Config) {
		// Wide enough for waitParked to see each parking on a loaded
		// machine before the idle timeout closes the connection.
		c.IdleTimeout = 2 * time.Second
		c.ReadTimeout = 2 * time.Second
	})
	c, br := dialTLS(t, th, nil)
	for i := range 3 {
		if got, want := get(t, c, br, fmt.Sprintf("/t%d", i)), fmt.Sprintf("/t%d 0", i); got != want {
			t.Fatalf("request %d: %q, want %q", i, got, want)
		}
		th.waitParked(t, 1)
	}
	fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	if code, body := readResponse(t, br); code != 200 || body != "/up 3" {
		t.Fatalf("POST after parking: %d %q", code, body)
	}
	if n := th.hsErrors.Load(); n != 0 {
		t.Errorf("%d handshake errors", n)
	}
	th.waitParked(t, 1)
	// Idle timeout while parked: a clean TLS close (io.EOF after
	// close_notify), not a reset.
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("parked TLS connection at its idle timeout: %v, want io.EOF (close_notify)", err)
	}
	th.waitParked(t, 0)
}

// TestParkChurn: clients whose pauses straddle ParkIdleAfter, so that
// requests arrive just before, during and after parking, with bodies and
// pipelined pairs; every response must be the right one, in order.
func TestParkChurn(t *testing.T) {
	t.Parallel()
	h := parkHarness(t, 10*time.Second)
	churn(t, h, func() (net.Conn, error) { return net.Dial("tcp", h.addr) })
}

// TestParkChurnTLS is TestParkChurn over TLS.
func TestParkChurnTLS(t *testing.T) {
	t.Parallel()
	th := parkTLSHarness(t, nil)
	churn(t, th.harness, func() (net.Conn, error) {
		return tls.Dial("tcp", th.tlsAddr, &tls.Config{RootCAs: th.roots, ServerName: "secure.example"})
	})
}

func churn(t *testing.T, h *harness, dial func() (net.Conn, error)) {
	t.Helper()
	const clients, requests = 40, 30
	errs := make(chan error, clients)
	for ci := range clients {
		go func() {
			errs <- func() error {
				rng := rand.New(rand.NewPCG(uint64(ci), 9))
				c, err := dial()
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				br := bufio.NewReader(c)
				expect := func(want string) error {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						return fmt.Errorf("client %d: waiting for %q: %w", ci, want, err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if string(b) != want {
						return fmt.Errorf("client %d: got %q, want %q", ci, b, want)
					}
					return nil
				}
				for i := range requests {
					// Pauses around the park delay, and some none.
					time.Sleep(time.Duration(rng.IntN(int(3 * testParkAfter))))
					switch rng.IntN(3) {
					case 0:
						fmt.Fprintf(c, "GET /c%d/%d HTTP/1.1\r\nHost: x\r\n\r\n", ci, i)
						if err := expect(fmt.Sprintf("/c%d/%d 0", ci, i)); err != nil {
							return err
						}
					case 1:
						body := strings.Repeat("b", rng.IntN(5000))
						fmt.Fprintf(c, "POST /c%d/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", ci, i, len(body), body)
						if err := expect(fmt.Sprintf("/c%d/%d %d", ci, i, len(body))); err != nil {
							return err
						}
					case 2:
						fmt.Fprintf(c, "GET /c%d/%d/a HTTP/1.1\r\nHost: x\r\n\r\nGET /c%d/%d/b HTTP/1.1\r\nHost: x\r\n\r\n", ci, i, ci, i)
						if err := expect(fmt.Sprintf("/c%d/%d/a 0", ci, i)); err != nil {
							return err
						}
						if err := expect(fmt.Sprintf("/c%d/%d/b 0", ci, i)); err != nil {
							return err
						}
					}
				}
				return nil
			}()
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := h.srv.park.parks.Load(); n == 0 {
		t.Error("no connection parked: the test did not exercise parking")
	}
}

// splitConn writes each Write in two halves with a pause between them.
type splitConn struct {
	net.Conn
	pause time.Duration
	split atomic.Bool // armed: split the next Write
}

func (s *splitConn) Write(p []byte) (int, error) {
	if !s.split.Swap(false) || len(p) < 2 {
		return s.Conn.Write(p)
	}
	n, err := s.Conn.Write(p[:len(p)/2])
	if err != nil {
		return n, err
	}
	time.Sleep(s.pause)
	m, err := s.Conn.Write(p[len(p)/2:])
	return n + m, err
}

// TestParkTLSRecordAcrossParkDeadline: a TLS record whose first half
// arrives before the park deadline and whose second half arrives after it
// is read whole: the request is answered, not dropped. (crypto/tls reads the
// record's bytes through the socket before fasthttp sees one, so the park
// deadline once stayed armed under it and closed the connection.)
func TestParkTLSRecordAcrossParkDeadline(t *testing.T) {
	t.Parallel()
	th := parkTLSHarness(t, func(c *Config) { c.ParkIdleAfter = 200 * time.Millisecond })
	var sc *splitConn
	c, br := dialTLS(t, th, func(raw net.Conn) net.Conn {
		sc = &splitConn{Conn: raw, pause: 400 * time.Millisecond}
		return sc
	})
	get(t, c, br, "/first")
	// Idle for less than the park delay, then a record split across it.
	time.Sleep(50 * time.Millisecond)
	sc.split.Store(true)
	if got, want := get(t, c, br, "/second"), "/second 0"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}

// TestParkWithoutReadTimeout: with no read timeout (http.read_timeout =
// "0s") fasthttp sets no deadline when it takes a parked connection up
// again, so the expired park deadline must not be left on the socket: the
// next request is served.
func TestParkWithoutReadTimeout(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux-only")
	}
	h := newHarness(t, func(c *Config) {
		c.EventLoops = 0 // parking is the goroutine server's: loops hold idle connections themselves
		c.ParkIdleAfter = testParkAfter
		c.ReadTimeout = -1
	})
	if h.srv.srv.ReadTimeout != 0 {
		t.Fatalf("fasthttp ReadTimeout %v with Config.ReadTimeout -1, want 0 (none)", h.srv.srv.ReadTimeout)
	}
	publishEcho(t, h)
	c, br := dialProxy(t, h)
	for i := range 3 {
		if got, want := get(t, c, br, fmt.Sprintf("/n%d", i)), fmt.Sprintf("/n%d 0", i); got != want {
			t.Fatalf("request %d: %q, want %q", i, got, want)
		}
		h.waitParked(t, 1)
	}
}
