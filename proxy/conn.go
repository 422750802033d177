package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// conn wraps a client or endpoint connection to give it progress-based
// timeouts: in idle mode every Read (Write) first makes sure the underlying
// deadline is at most idle in the future, so the connection times out only
// when no byte moved for about that long, however long the whole body takes.
// fasthttp only knows whole-message deadlines, which would cap the size of a
// streamed body by time.
//
// A conn is used by one goroutine at a time (fasthttp serves a client
// connection on one goroutine and lends an endpoint connection to one
// request at a time), except Close, which passes straight through.
type conn struct {
	net.Conn
	sys *sysIO // raw reads and writes of a TCP conn; nil: net.Conn's

	rd, wd ioDeadline

	// upstream conns stay in idle mode whatever deadline fasthttp sets;
	// client conns leave it on SetReadDeadline (a new request's header
	// phase) and enter it in bodyPhase.
	upstream bool

	// readFailed records that a Read returned an error since the last
	// resetReadFailed: after a failed upstream round trip it tells a
	// client that stopped sending its body from a failing endpoint.
	readFailed bool

	// ip and port are the client IP and the local port, formatted once
	// per connection for X-Forwarded-For and X-Forwarded-Port.
	ip, port []byte

	// secure is set on client conns accepted by a TLS listener: it sets
	// X-Forwarded-Proto and disables the https redirect. It comes from the
	// listener, not from the request.
	secure bool

	// Upstream exchange accounting, for the stale-connection retry
	// (staleFailure). fasthttp writes a whole request, then reads its response,
	// so the first Write after a Read begins the next exchange on the
	// connection.
	raddr     *upstreamAddr // RemoteAddr of an upstream conn; nil for client conns
	reading   bool          // the current exchange has reached its response
	reused    bool          // an earlier exchange ran on this connection
	respBytes int64         // response bytes read in the current exchange

	// Parking of idle client conns, plain or TLS (see parker). park is nil
	// when the conn is never parked.
	park *parker
	fd   int // the socket, for the parker's epoll set
	// served is set when a request's handler returns and cleared by the
	// first byte read after it: a Read in between is fasthttp waiting for
	// the next request.
	served bool
	// parkAt, when set, is the shortened read deadline in force for that
	// wait (rd.hard keeps the idle deadline fasthttp asked for).
	parkAt time.Time
	// parking is set by a Read that returned errParked: fasthttp's next
	// Close hands the conn to the parker. Close may come from another
	// goroutine (Shutdown), hence atomic.
	parking    atomic.Bool
	epollAdded bool // guarded by park.mu
	// outer is the connection fasthttp serves when it is not c itself
	// (the *tlsConn over c): the parker resumes and closes that one.
	outer net.Conn
	// emptyWait is set by tlsConn.Read around a read fasthttp issued with
	// an empty read buffer (for a plain conn, Read tells that from the
	// length of p).
	emptyWait bool
	// prefix holds bytes an event loop read from the socket before it
	// handed the connection over: Read returns them first.
	prefix []byte
}

// errParked ends fasthttp's loop over a connection that is being parked.
// fasthttp treats a failed read before any byte of a request as a
// keep-alive connection going away: no response, nothing logged. It is a
// temporary net.Error so that crypto/tls, reading through the conn of a
// TLS connection, passes it on without marking its connection broken.
var errParked net.Error = parkedError{}

type parkedError struct{}

func (parkedError) Error() string   { return "proxy: connection parked" }
func (parkedError) Timeout() bool   { return true }
func (parkedError) Temporary() bool { return true }

// upstreamAddr is what an upstream conn's RemoteAddr returns. fasthttp keeps
// it in the Response of the round trip (Response.ParseNetConn), which is how
// the proxy finds, after a failed round trip, the connection it used.
type upstreamAddr struct {
	net.Addr
	c *conn
}

// RemoteAddr returns the peer address; an upstream conn's carries the conn.
func (c *conn) RemoteAddr() net.Addr {
	if c.raddr != nil {
		return c.raddr
	}
	return c.Conn.RemoteAddr()
}

// upstreamConnOf returns the upstream connection a round trip used, from
// the Response it filled, or nil when no connection was acquired (a failed
// dial, no free connection).
func upstreamConnOf(resp interface{ RemoteAddr() net.Addr }) *conn {
	a, _ := resp.RemoteAddr().(*upstreamAddr)
	if a == nil {
		return nil
	}
	return a.c
}

// staleFailure reports whether a failed exchange on c matches an endpoint
// closing an idle keep-alive connection as the request was sent: c had
// served an earlier exchange, no byte of this exchange's response arrived,
// and the failure is not a timeout.
func (c *conn) staleFailure(err error) bool {
	return c != nil && c.reused && c.respBytes == 0 && !isTimeout(err)
}

// ioDeadline is one direction's deadline state.
type ioDeadline struct {
	idle  time.Duration // 0 disables idle mode
	on    bool          // idle mode active
	hard  time.Time     // deadline set through Set*Deadline; zero: none
	armed time.Time     // when the underlying deadline was last set in idle mode
}

// next returns the deadline to set before an I/O call, and false when the
// one already set is recent enough (re-arming costs a timer update, so it
// happens at most every idle/8; the effective idle limit is thus between
// 7/8 and all of idle).
func (d *ioDeadline) next() (time.Time, bool) {
	now := time.Now()
	if !d.armed.IsZero() && now.Sub(d.armed) < d.idle/8 {
		return time.Time{}, false
	}
	d.armed = now
	t := now.Add(d.idle)
	if !d.hard.IsZero() && d.hard.Before(t) {
		t = d.hard
	}
	return t, true
}

func (c *conn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		if c.prefix = c.prefix[n:]; len(c.prefix) == 0 {
			c.prefix = nil
		}
		c.served = false
		return n, nil
	}
	if !c.parkAt.IsZero() && !c.emptyWait && (c.outer != nil || len(p) != c.park.bufSize) {
		// Not the wait with an empty read buffer (the rest of a pipelined
		// request): the idle deadline applies as set.
		c.parkAt = time.Time{}
		if err := c.Conn.SetReadDeadline(c.rd.hard); err != nil {
			c.readFailed = true
			return 0, err
		}
	}
	if c.rd.on {
		if t, ok := c.rd.next(); ok {
			if err := c.Conn.SetReadDeadline(t); err != nil {
				c.readFailed = true
				return 0, err
			}
		}
	}
	var n int
	var err error
	if c.sys != nil {
		n, err = c.sys.Read(c.Conn, p)
	} else {
		n, err = c.Conn.Read(p)
	}
	if err != nil {
		c.readFailed = true
	}
	if c.upstream {
		c.reading = true
		c.respBytes += int64(n)
		return n, err
	}
	if n > 0 {
		c.served = false
		if !c.parkAt.IsZero() {
			c.parkAt = time.Time{}
			if c.outer != nil {
				// crypto/tls may need more of this record from the socket
				// before fasthttp sees a byte and sets its own deadline:
				// the shortened one must not cut that read.
				if derr := c.Conn.SetReadDeadline(c.rd.hard); derr != nil && err == nil {
					err = derr
				}
			}
		}
		return n, err
	}
	if err != nil && !c.parkAt.IsZero() && errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(c.rd.hard) {
		// Idle for ParkIdleAfter with nothing buffered: park.
		c.parkAt = time.Time{}
		c.parking.Store(true)
		return 0, errParked
	}
	return n, err
}

// Close closes the connection, or parks it when its last Read asked for
// that (errParked). For a TLS connection the *tlsConn's Close decides.
func (c *conn) Close() error {
	if c.outer == nil && c.parking.CompareAndSwap(true, false) && c.park.park(c) {
		return nil
	}
	return c.Conn.Close()
}

// closeParked closes a connection the parker holds: through TLS (which
// sends close_notify) for a TLS connection.
func (c *conn) closeParked() {
	if c.outer != nil {
		c.outer.Close()
		return
	}
	c.Conn.Close()
}

// servedConn returns the connection fasthttp serves: c, or the *tlsConn over
// it.
func (c *conn) servedConn() net.Conn {
	if c.outer != nil {
		return c.outer
	}
	return c
}

// requestDone records that a request's handler returned: the next read
// that finds nothing is the wait for another request.
func (c *conn) requestDone() { c.served = true }

func (c *conn) Write(p []byte) (int, error) {
	if c.reading {
		// First write of the next exchange on an upstream conn.
		c.reading, c.reused, c.respBytes = false, true, 0
	}
	if c.wd.on {
		if t, ok := c.wd.next(); ok {
			if err := c.Conn.SetWriteDeadline(t); err != nil {
				return 0, err
			}
		}
	}
	if c.sys != nil {
		return c.sys.Write(c.Conn, p)
	}
	return c.Conn.Write(p)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.rd.hard, c.rd.armed = t, time.Time{}
	c.parkAt = time.Time{}
	if !c.upstream {
		c.rd.on = false
		if c.park != nil && c.served && !t.IsZero() {
			// fasthttp starts waiting for the next request: wait
			// ParkIdleAfter of it here, the rest parked.
			if at := time.Now().Add(c.park.after); at.Before(t) {
				c.parkAt = at
				return c.Conn.SetReadDeadline(at)
			}
		}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.wd.hard, c.wd.armed = t, time.Time{}
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// bodyPhase switches a client connection's reads to idle mode for the rest
// of the current request: the header-phase deadline no longer applies.
func (c *conn) bodyPhase() {
	if c.rd.idle <= 0 {
		return
	}
	c.rd.on, c.rd.hard, c.rd.armed = true, time.Time{}, time.Time{}
}

func newClientConn(nc net.Conn, readIdle, writeIdle time.Duration, park *parker) *conn {
	c := &conn{Conn: nc, fd: -1}
	if park != nil {
		if c.fd = socketFD(nc); c.fd >= 0 {
			c.park = park
		}
	}
	if rawIO {
		c.sys = newSysIO(nc)
	}
	c.rd.idle = readIdle
	c.wd.idle = writeIdle
	c.wd.on = writeIdle > 0
	if ap, ok := addrPort(nc.RemoteAddr()); ok {
		c.ip = ap.Addr().Unmap().AppendTo(nil)
	}
	if ap, ok := addrPort(nc.LocalAddr()); ok {
		c.port = strconv.AppendUint(nil, uint64(ap.Port()), 10)
	}
	return c
}

func newUpstreamConn(nc net.Conn, idle time.Duration) *conn {
	c := &conn{Conn: nc, upstream: true}
	if rawIO {
		c.sys = newSysIO(nc)
	}
	c.raddr = &upstreamAddr{Addr: nc.RemoteAddr(), c: c}
	c.rd.idle, c.wd.idle = idle, idle
	c.rd.on, c.wd.on = idle > 0, idle > 0
	return c
}

// addrPort extracts IP and port from a TCP address (or anything whose
// String is "ip:port", as test listeners use).
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case nil:
		return netip.AddrPort{}, false
	case *net.TCPAddr:
		ap := a.AddrPort()
		return ap, ap.IsValid()
	default:
		ap, err := netip.ParseAddrPort(a.String())
		return ap, err == nil
	}
}

// listener wraps accepted connections in *conn and, for a TLS listener, the
// *conn in a *tlsConn: TLS records pass through the *conn, so its
// progress-based timeouts cover the handshake and the encrypted bytes.
type listener struct {
	net.Listener
	readIdle, writeIdle time.Duration
	park                *parker // nil: never park

	tls      *tls.Config // nil: plain HTTP
	hsFailed func(error) // Config.HandshakeError; may be nil
	log      *slog.Logger
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := newClientConn(nc, l.readIdle, l.writeIdle, l.park)
	if l.tls == nil {
		return c, nil
	}
	c.secure = true
	// The handshake runs on the connection's own goroutine (first Read),
	// never in the accept loop.
	t := &tlsConn{Conn: tls.Server(c, l.tls), raw: c, l: l}
	c.outer = t
	return t, nil
}

// tlsConn is a client connection of a TLS listener. It embeds *tls.Conn so
// fasthttp sees TLS (RequestCtx.IsTLS, TLSConnectionState). Its first Read
// runs the handshake explicitly, under the read deadline fasthttp set for
// the first request (http.read_timeout), so that a failure is reported to
// Config.HandshakeError and ends the connection quietly: fasthttp sees
// io.EOF, not a malformed request to answer 400.
type tlsConn struct {
	*tls.Conn
	raw  *conn
	l    *listener
	done bool // handshake attempted
}

func (t *tlsConn) Read(p []byte) (int, error) {
	if !t.done {
		t.done = true
		if err := t.Conn.Handshake(); err != nil {
			t.handshakeFailed(err)
			return 0, io.EOF
		}
	}
	if t.raw.park == nil || len(p) != t.raw.park.bufSize {
		return t.Conn.Read(p)
	}
	// fasthttp's read buffer is empty: if TLS needs bytes from the socket
	// now, this is the wait for the next request (crypto/tls reads the
	// socket only once it has no plaintext left).
	t.raw.emptyWait = true
	n, err := t.Conn.Read(p)
	t.raw.emptyWait = false
	return n, err
}

// Close closes the connection, or parks it (TLS state and all) when its
// last Read asked for that.
func (t *tlsConn) Close() error {
	if c := t.raw; c.parking.CompareAndSwap(true, false) && c.park.park(c) {
		return nil
	}
	return t.Conn.Close()
}

func (t *tlsConn) handshakeFailed(err error) {
	if t.l.hsFailed != nil {
		t.l.hsFailed(err)
	}
	if t.l.log.Enabled(context.Background(), slog.LevelDebug) {
		t.l.log.Debug("tls handshake failed", "client", t.raw.Conn.RemoteAddr().String(), "err", err)
	}
}

// clientConnOf returns the *conn under a connection the listener accepted,
// or nil for any other connection.
func clientConnOf(nc net.Conn) *conn {
	switch c := nc.(type) {
	case *conn:
		return c
	case *tlsConn:
		return c.raw
	}
	return nil
}
