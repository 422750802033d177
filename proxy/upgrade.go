package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

// Protocol upgrades (RFC 9110, 7.8), WebSocket being the common one.
//
// An HTTP/1.1 GET without a body that carries an Upgrade header and the
// Connection token "upgrade" is routed like any request, then sent on a new
// connection of its own to the chosen endpoint (never a pooled one), with
// Upgrade and Connection: upgrade put back after the usual header rewrite.
// A 101 answer is passed to the client, whose connection is then taken
// from fasthttp (RequestCtx.Hijack) and joined to the endpoint's: a tunnel
// copying bytes both ways. Any other answer is forwarded as a normal
// response and the endpoint connection is closed after it.

var (
	hdrConnection = []byte("Connection")
	hdrUpgrade    = []byte("Upgrade")
)

// errTunnelIdle ends a tunnel on which no byte moved for Config.IdleTimeout.
var errTunnelIdle = errors.New("proxy: upgraded connection idle")

// upgradable reports whether a request that asked for an upgrade takes the
// tunnel path: an HTTP/1.1 GET without a body. Others are forwarded as
// plain requests, without their Upgrade header (an HTTP/1.0 Upgrade must
// be ignored, RFC 9110 7.8).
func upgradable(req *fasthttp.Request) bool {
	return req.Header.IsGet() && req.Header.IsHTTP11() && !hasBody(req)
}

// upgrade serves an upgrade request whose header rewriteRequest has
// already rewritten (x.sc.upgrade holds its Upgrade value), on endpoint ep
// of backend b (others of b when the connect fails, as for any request).
// Failures before the endpoint's answer map to statuses as for any
// request.
func (s *Server) upgrade(ctx *fasthttp.RequestCtx, st *handlerState, b *route.Backend, ep *balancer.Endpoint) {
	x := st.x
	req := &ctx.Request
	// The pool's MaxConns does not see tunnels: bound them by the
	// endpoint's requests and tunnels in progress instead.
	if ep.InFlight() >= int64(s.cfg.MaxConnsPerEndpoint) {
		s.upstreamFailed(ctx, st, fasthttp.ErrNoFreeConns, errBusy, false)
		return
	}
	req.Header.SetCanonical(hdrUpgrade, x.sc.upgrade)
	req.Header.SetCanonical(hdrConnection, tokUpgrade)

	ep.Begin()
	st.ep = ep
	t0 := time.Now()
	up, br, err := s.openUpgrade(ep.Addr, req, &x.resp)
	if err != nil && isDialError(err) && len(b.Endpoints) > 1 {
		ep, err = s.nextEndpoint(st, b, ep, err, func(ep *balancer.Endpoint, _ *fasthttp.HostClient) error {
			var err error
			up, br, err = s.openUpgrade(ep.Addr, req, &x.resp)
			return err
		})
	}
	if err != nil {
		k := classifyErr(err)
		ep.End(true)
		st.ep = nil
		s.upstreamFailed(ctx, st, err, k, false)
		return
	}
	// The exchange owns the connection opened for it until a tunnel takes
	// it over: released (a refused upgrade's response done, a panic), it
	// closes it; never pooled.
	x.dedicated = up
	s.m.upstream.Observe(time.Since(t0).Seconds())
	if x.resp.StatusCode() != fasthttp.StatusSwitchingProtocols {
		s.respond(ctx, st, false)
		return
	}

	t := &tunnel{s: s, client: ctx.Conn(), up: up, ep: ep, start: ctx.Time(), idle: s.cfg.IdleTimeout}
	if !s.tunnels.add(t) {
		// Shutting down: the 101 never reaches the client (releasing the
		// exchange closes up).
		ep.End(false)
		st.ep = nil
		s.reply(ctx, st, fasthttp.StatusServiceUnavailable, bodyNotReady)
		ctx.SetConnectionClose()
		return
	}
	st.ep = nil // the tunnel owns it now
	st.stats.inc(fasthttp.StatusSwitchingProtocols)

	s.m.upgraded.Inc()

	// The 101 head, with whatever the endpoint sent after it in the same
	// reads, leaves in one write once the connection is taken over; the
	// tunnel then reads the endpoint connection directly.
	upg := peekFold(&x.resp.Header, canonUpgrade)
	if len(upg) == 0 {
		upg = x.sc.upgrade
	}
	upg = append([]byte(nil), upg...) // copyResponseHeader resets x.sc
	rh := &ctx.Response.Header
	copyResponseHeader(rh, &x.resp.Header, &x.sc)
	rh.SetCanonical(hdrUpgrade, upg)
	rh.SetCanonical(hdrConnection, tokUpgrade)
	t.head = rh.AppendBytes(nil)
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		t.head = append(t.head, b...)
		t.early = int64(n)
	}
	if s.cfg.AccessLog {
		t.method = append([]byte(nil), x.method...)
		t.host = append([]byte(nil), x.host...)
		t.path = append([]byte(nil), x.path...)
	}
	x.dedicated = nil // the tunnel's now
	st.x = nil
	x.release()

	if c := clientConnOf(t.client); c != nil {
		// Never parked: the tunnel owns the connection from now on, and
		// it is no keep-alive connection.
		c.park, c.parkAt = nil, time.Time{}
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(t.run)
}

// openUpgrade dials addr on a new connection, sends req and reads the
// response head into resp. A response body, if any, streams from the
// returned reader, which also holds any bytes that followed a 101 head.
// The connection is under ResponseTimeout per read and write, like a
// pooled one.
func (s *Server) openUpgrade(addr string, req *fasthttp.Request, resp *fasthttp.Response) (*conn, *bufio.Reader, error) {
	nc, err := s.dial(addr)
	if err != nil {
		return nil, nil, err
	}
	up := nc.(*conn)
	if _, err := req.WriteTo(up); err != nil {
		_ = up.Close()
		return nil, nil, fmt.Errorf("proxy: upgrade: send request to %s: %w", addr, err)
	}
	br := bufio.NewReaderSize(up, s.cfg.MaxHeaderBytes)
	resp.Header.DisableNormalizing()
	resp.StreamBody = true // interim 1xx answers are skipped, a 101 has no body
	if err := resp.Read(br); err != nil {
		_ = up.Close()
		return nil, nil, fmt.Errorf("proxy: upgrade: read response from %s: %w", addr, err)
	}
	resp.ParseNetConn(up) // exchange.WriteTo flushes by the endpoint's pace
	return up, br, nil
}

// peekFold returns the first value of header k (matched ignoring case).
func peekFold(h *fasthttp.ResponseHeader, k string) []byte {
	for hk, v := range h.All() {
		if equalFold(hk, k) {
			return v
		}
	}
	return nil
}

// tunnel joins an upgraded client connection to its endpoint connection.
//
// Each direction has its goroutine. End of stream from one side is passed
// on as a half-close of the other (TCP shutdown for writing, preceded by
// close_notify on TLS) and the other direction goes on; the tunnel ends
// when both directions have. A failed read or write ends both at once, as
// does IdleTimeout without a byte in either direction. A write is bounded
// as outside tunnels: WriteTimeout to the client, ResponseTimeout to the
// endpoint.
type tunnel struct {
	s     *Server
	ep    *balancer.Endpoint
	start time.Time
	idle  time.Duration // 0 or less: no limit

	client net.Conn // the connection fasthttp served (*conn, *tlsConn)
	up     *conn    // the endpoint connection, opened for this tunnel
	head   []byte   // 101 head and the endpoint's bytes after it
	early  int64    // how many of those bytes

	last    atomic.Int64 // UnixNano of the last byte read on either side
	aborted atomic.Bool

	// copies for the access log, filled only when it is enabled
	method, host, path []byte
}

// tunnelBufSize is each direction's copy buffer: WebSocket messages are
// mostly small, and an idle tunnel holds both.
const tunnelBufSize = 8 << 10

// run is the hijack handler. hc reads what fasthttp buffered of the client
// connection first; fasthttp closes it when run returns.
func (t *tunnel) run(hc net.Conn) {
	defer func() {
		t.s.tunnels.remove(t)
		t.s.m.upgraded.Dec()
	}()
	t.up.tunnelMode()
	t.last.Store(time.Now().UnixNano())
	var toClient int64
	var err error
	if _, err = hc.Write(t.head); err == nil {
		toClient = t.early
		t.head = nil
		done := make(chan error, 1)
		go func() {
			_, err := t.pipe(t.up, hc, hc, t.closeWriteUp)
			done <- err
		}()
		var n int64
		n, err = t.pipe(hc, t.up, t.up, t.closeWriteClient)
		toClient += n
		err = errors.Join(err, <-done)
	}
	if err != nil {
		t.abort()
	}
	_ = t.up.Close()
	t.ep.End(false)
	s := t.s
	if s.cfg.AccessLog {
		s.logAccess(t.method, t.host, t.path, fasthttp.StatusSwitchingProtocols, time.Since(t.start), t.ep.Addr, toClient)
	}
}

// pipe copies src to dst until src ends, and returns the bytes written.
// At src's end of stream it half-closes dst with closeWrite; on a failure
// it closes both connections, so that the other direction ends too.
// srcConn takes src's read deadlines.
func (t *tunnel) pipe(dst io.Writer, src io.Reader, srcConn net.Conn, closeWrite func() error) (int64, error) {
	buf := make([]byte, tunnelBufSize)
	var n int64
	if t.idle > 0 {
		if err := srcConn.SetReadDeadline(time.Now().Add(t.idle)); err != nil {
			t.abort()
			return n, err
		}
	}
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if t.idle > 0 {
				t.last.Store(time.Now().UnixNano())
			}
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				t.abort()
				return n, werr
			}
		}
		switch {
		case rerr == nil:
		case rerr == io.EOF:
			if err := closeWrite(); err != nil {
				t.abort()
				return n, err
			}
			return n, nil
		case t.idle > 0 && isTimeout(rerr) && !t.aborted.Load():
			// Idle on this side: the tunnel lives while the other
			// side moves bytes.
			last := time.Unix(0, t.last.Load())
			if time.Since(last) >= t.idle {
				t.abort()
				return n, errTunnelIdle
			}
			if err := srcConn.SetReadDeadline(last.Add(t.idle)); err != nil {
				t.abort()
				return n, err
			}
		default:
			t.abort()
			return n, rerr
		}
	}
}

// closeWriteUp half-closes the endpoint connection.
func (t *tunnel) closeWriteUp() error { return closeWriteTCP(t.up.Conn) }

// closeWriteClient half-closes the client connection: close_notify, then
// TCP, on TLS.
func (t *tunnel) closeWriteClient() error {
	switch c := t.client.(type) {
	case *tlsConn:
		if err := c.Conn.CloseWrite(); err != nil {
			return err
		}
		return closeWriteTCP(c.raw.Conn)
	case *conn:
		return closeWriteTCP(c.Conn)
	}
	return nil
}

func closeWriteTCP(nc net.Conn) error {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// abort closes both sockets under their wrappers: blocked reads and writes
// in either direction return at once. fasthttp's own Close of the client
// connection follows when run returns. abort may be called concurrently
// (Shutdown).
func (t *tunnel) abort() {
	if t.aborted.Swap(true) {
		return
	}
	if c := clientConnOf(t.client); c != nil {
		_ = c.Conn.Close()
	} else {
		_ = t.client.Close()
	}
	_ = t.up.Conn.Close()
}

// tunnelMode prepares an endpoint conn for a tunnel: one goroutine reads it
// while another writes, so the exchange accounting Read and Write share
// (reading, respBytes) stops, and reads leave idle mode (the tunnel sets
// their deadlines). Writes stay under ResponseTimeout.
func (c *conn) tunnelMode() {
	c.upstream, c.reading, c.respBytes = false, false, 0
	c.rd.on = false
}

// tunnelSet tracks open tunnels, which fasthttp no longer knows about once
// it handed their connections over, so that Shutdown can close them.
type tunnelSet struct {
	mu     sync.Mutex
	m      map[*tunnel]struct{}
	closed bool
	wg     sync.WaitGroup
}

// add registers t; it reports false after shutdown.
func (ts *tunnelSet) add(t *tunnel) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return false
	}
	if ts.m == nil {
		ts.m = make(map[*tunnel]struct{})
	}
	ts.m[t] = struct{}{}
	ts.wg.Add(1)
	return true
}

func (ts *tunnelSet) remove(t *tunnel) {
	ts.mu.Lock()
	delete(ts.m, t)
	ts.mu.Unlock()
	ts.wg.Done()
}

// shutdown refuses new tunnels, closes the open ones and waits until they
// have ended, or until ctx is done.
func (ts *tunnelSet) shutdown(ctx context.Context) {
	ts.mu.Lock()
	ts.closed = true
	open := make([]*tunnel, 0, len(ts.m))
	for t := range ts.m {
		open = append(open, t)
	}
	ts.mu.Unlock()
	for _, t := range open {
		t.abort()
	}
	done := make(chan struct{})
	go func() {
		ts.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
