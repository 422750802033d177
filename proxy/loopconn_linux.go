package proxy

import (
	"bytes"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

var crlfcrlf = []byte("\r\n\r\n")

// lclient is a client connection served by a loop. It serves one request
// at a time; the bytes of pipelined requests wait in its buffer until the
// response to the previous one is out.
type lclient struct {
	l          *loop
	fd         int
	gen        int32
	t          tnode
	ip         []byte // X-Forwarded-For, X-Real-IP
	in         []byte // request bytes in[r:w]; nil while none are buffered
	r, w       int
	out        []byte // response bytes the socket did not take: out[outPos:]
	outPos     int
	readable   bool // no EAGAIN since the last EPOLLIN
	hup        bool // the peer ended its side: read until EOF, no edge will come
	served     bool // a response was sent: waiting is IdleTimeout's
	closeAfter bool // close once the current response is out
	closed     bool

	// The exchange in flight (inFlight): its endpoint connection (up, nil
	// between a failed connect and the next try) and its accounting.
	up      *lupstream
	reqOut  []byte // the request header as sent to the endpoint
	head    bool
	b       *route.Backend
	ep      *balancer.Endpoint
	stats   *routeStats
	tried   [maxEndpointTries]*balancer.Endpoint
	ntried  int
	retried bool // the stale-connection retry was used
	start   time.Time
	status  int
	nbytes  int64
	// copies for the access log, filled only when it is enabled
	method, host, path []byte
	inFlight           bool
}

func (c *lclient) pending() bool { return c.outPos < len(c.out) }

func (c *lclient) handle(ev uint32) {
	if ev&unix.EPOLLERR != 0 {
		c.close()
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		c.readable = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		c.hup = true
	}
	if ev&unix.EPOLLOUT != 0 && c.pending() {
		if !c.flush() {
			return
		}
		if c.up != nil {
			c.up.resume() // it was paused by the client's backpressure
			return
		}
		if c.inFlight {
			return
		}
		if c.closeAfter {
			c.close()
			return
		}
	}
	if !c.inFlight {
		c.serve()
	}
}

func (c *lclient) expired(k timerKind) {
	switch k {
	case tClientRead:
		if c.r < c.w {
			// Part of a request arrived, not all of it in time: 408, as
			// the goroutine server answers.
			c.l.s.m.badRequests.Inc()
			c.closeAfter = true
			c.local(fasthttp.StatusRequestTimeout, bodyReqTimeout, nil)
			return
		}
		c.close()
	default: // idle, or a client that stopped reading its response
		c.close()
	}
}

// serve parses and dispatches buffered requests, reading more when the
// buffer holds no complete header, until a request is in flight, output is
// pending, the connection was handed off, or the socket has nothing more.
func (c *lclient) serve() {
	l := c.l
	for !c.closed && !c.inFlight && !c.pending() {
		if c.r < c.w {
			if end := bytes.Index(c.in[c.r:c.w], crlfcrlf); end >= 0 {
				c.request(c.r, c.r+end+4)
				continue
			}
		}
		switch {
		case c.r == c.w:
			c.r, c.w = 0, 0
			if c.in != nil {
				l.cbufs.put(c.in)
				c.in = nil
			}
		case c.w == len(c.in) && c.r == 0:
			// The header does not fit: the goroutine server answers 431.
			l.handOff(c, c.in[:c.w])
			return
		case c.w == len(c.in):
			c.w = copy(c.in, c.in[c.r:c.w])
			c.r = 0
		}
		if !c.readable {
			c.waitTimer()
			return
		}
		if c.in == nil {
			c.in = l.cbufs.get()
		}
		n, err := rawRead(c.fd, c.in[c.w:])
		if err == unix.EAGAIN || err == unix.EINTR {
			c.readable = err == unix.EINTR
			continue
		}
		if err != 0 || n == 0 {
			c.close()
			return
		}
		if n < len(c.in)-c.w && !c.hup { // a short read drained the socket: the next data brings an edge
			c.readable = false
		}
		c.w += n
	}
}

// waitTimer arms the timer for waiting on the client: its next request
// (idle) or the rest of one (read). A read timer already running keeps
// its deadline: ReadTimeout bounds the whole header.
func (c *lclient) waitTimer() {
	k := tClientRead
	if c.r == c.w && c.served {
		k = tClientIdle
	}
	if c.t.kind != k || k == tClientIdle {
		c.l.setTimer(&c.t, k)
	}
}

// request serves the request whose header is in[at:end], or hands the
// connection to the goroutine server when it is not one the loop serves.
func (c *lclient) request(at, end int) {
	l := c.l
	s := l.s
	h := &l.req
	l.rd.Reset(c.in[at:end])
	l.br.Reset(&l.rd)
	if h.Read(l.br) != nil {
		l.handOff(c, c.in[at:c.w])
		return
	}
	b, r := c.route(h)
	if b == nil {
		l.handOff(c, c.in[at:c.w])
		return
	}
	closeReq := h.ConnectionClose()
	head := h.IsHead()
	if s.cfg.AccessLog {
		c.method = append(c.method[:0], h.Method()...)
		c.host = append(c.host[:0], h.Host()...)
		c.path = append(c.path[:0], l.uri.Path()...)
	}
	if rewriteRequest(h, &l.sc, c.ip, l.port, protoHTTP) {
		l.handOff(c, c.in[at:c.w]) // an upgrade: tunnels are the goroutine server's
		return
	}
	ep := b.RR.Pick(b.Endpoints)
	if ep == nil || ep.InFlight() >= int64(s.cfg.MaxConnsPerEndpoint) {
		// At the limit, requests queue for a free connection: the
		// goroutine server's pools do that.
		l.handOff(c, c.in[at:c.w])
		return
	}
	l.stopTimer(&c.t)
	c.r = end
	c.inFlight = true
	c.closeAfter = c.closeAfter || closeReq || l.draining
	c.head = head
	c.b, c.ep, c.stats = b, ep, s.m.requests.get(r)
	c.tried[0], c.ntried, c.retried = ep, 1, false
	c.start = time.Now()
	c.status, c.nbytes = 0, 0
	c.reqOut = h.AppendBytes(c.reqOut[:0])
	ep.Begin()
	c.dispatch()
}

// route returns the backend and route of a request the loop serves
// itself, or nil for every request the goroutine server answers: not
// plain HTTP/1.1, a body, an absolute-form target, a bad Host, CONNECT or
// TRACE, an ACME challenge, no route (404), a redirect, no endpoint (503).
func (c *lclient) route(h *fasthttp.RequestHeader) (*route.Backend, *route.Route) {
	l := c.l
	s := l.s
	uri, host := h.RequestURI(), h.Host()
	if cl := h.ContentLength(); cl > 0 || cl == -1 || !h.IsHTTP11() || len(uri) == 0 || uri[0] != '/' ||
		len(host) == 0 || !validHost(host) || hasRawTransferEncoding(h.RawHeaders()) {
		return nil, nil
	}
	if m := h.Method(); bytes.Equal(m, methodConnect) || bytes.Equal(m, methodTrace) {
		return nil, nil
	}
	l.uri.Reset()
	if l.uri.Parse(host, uri) != nil {
		return nil, nil
	}
	path := l.uri.Path()
	if s.cfg.ACMEChallenge != nil && bytes.HasPrefix(path, acmeChallengePrefix) {
		return nil, nil
	}
	snap := s.cfg.Snapshot()
	if snap == nil {
		return nil, nil
	}
	r := snap.Match(host, path)
	if r == nil || (r.RedirectHTTPS && s.cfg.RedirectHTTPS) || uint(r.Backend) >= uint(len(snap.Backends)) {
		return nil, nil
	}
	b := snap.Backends[r.Backend]
	if b == nil || b.Error != "" || len(b.Endpoints) == 0 {
		return nil, nil
	}
	return b, r
}

// dispatch sends the request to c.ep, on an idle pooled connection or a
// new one.
func (c *lclient) dispatch() {
	l := c.l
	p := l.pool(c.ep)
	if p == nil {
		c.connectFailed(errConnect)
		return
	}
	u := p.take(l)
	if u == nil {
		var err error
		if u, err = l.dial(p); err != nil {
			c.connectFailed(errConnect)
			return
		}
	}
	u.begin(c)
}

// connectFailed offers the request to another endpoint of the backend, as
// Server.nextEndpoint does, or answers the failure.
func (c *lclient) connectFailed(k errKind) {
	s := c.l.s
	if c.ntried < maxEndpointTries && c.ntried < len(c.b.Endpoints) {
		if next, _ := pickUntried(c.b, c.tried[:c.ntried]); next != nil {
			c.ep.End(true)
			s.m.upErr[k].Inc()
			s.m.dialRetries.Inc()
			c.ep = next
			c.tried[c.ntried] = next
			c.ntried++
			next.Begin()
			c.dispatch()
			return
		}
	}
	c.upstreamFailed(k)
}

// upstreamFailed answers a round trip that failed before the response
// started: 502, or 504 for a timeout.
func (c *lclient) upstreamFailed(k errKind) {
	s := c.l.s
	// Ended here: if the answer cannot be written (the client is gone),
	// close must not end the exchange a second time.
	c.ep.End(true)
	c.ep = nil
	s.m.upErr[k].Inc()
	code, body := statusOf(k)
	c.local(code, body, c.stats)
}

// local sends a short plain-text answer of the loop's own, as the
// goroutine server's reply does, and ends the exchange.
func (c *lclient) local(code int, body []byte, stats *routeStats) {
	l := c.l
	if stats == nil {
		stats = &l.s.m.requests.unmatched
	}
	stats.inc(code)
	c.status, c.nbytes = code, int64(len(body))
	c.send(l.localHeader(code, body, c.closeAfter), body, nil, nil)
	c.done()
}

// localHeader is the header of a plain-text answer of the loop's own, as
// the goroutine server's reply writes it.
func (l *loop) localHeader(code int, body []byte, closeConn bool) []byte {
	o := &l.out
	o.Reset()
	o.DisableNormalizing()
	o.SetNoDefaultContentType(true)
	o.SetStatusCode(code)
	o.SetContentTypeBytes(textPlain)
	o.SetContentLength(len(body))
	if closeConn {
		o.SetConnectionClose()
	}
	l.hdr = o.AppendBytes(l.hdr[:0])
	return l.hdr
}

// send writes the parts with one writev, keeping what the socket does not
// take for EPOLLOUT.
func (c *lclient) send(a, b, d, e []byte) {
	if c.closed {
		return
	}
	parts := [4][]byte{a, b, d, e}
	if c.pending() {
		for _, p := range parts {
			c.out = append(c.out, p...)
		}
		return
	}
	n, err := c.l.writev(c.fd, &parts)
	if err != 0 && err != unix.EAGAIN {
		c.close()
		return
	}
	for _, p := range parts {
		if n >= len(p) {
			n -= len(p)
			continue
		}
		if c.out == nil {
			c.out, c.outPos = c.l.obufs.get(), 0
		}
		c.out = append(c.out, p[n:]...)
		n = 0
	}
	if c.pending() {
		c.l.setTimer(&c.t, tClientWrite)
	}
}

// flush writes pending output; it reports whether all of it went.
func (c *lclient) flush() bool {
	for c.pending() {
		parts := [4][]byte{c.out[c.outPos:]}
		n, err := c.l.writev(c.fd, &parts)
		if err == unix.EAGAIN {
			return false
		}
		if err != 0 {
			c.close()
			return false
		}
		c.outPos += n
		c.l.setTimer(&c.t, tClientWrite) // progress: the limit starts again
	}
	if c.out != nil {
		c.l.obufs.put(c.out[:0])
		c.out, c.outPos = nil, 0
	}
	c.l.stopTimer(&c.t)
	return true
}

// done ends the exchange once its response is complete (possibly still
// pending on the socket) and goes on with the next request.
func (c *lclient) done() {
	l := c.l
	exchange := c.inFlight
	c.up, c.ep, c.b, c.inFlight, c.served = nil, nil, nil, false, true
	if exchange && l.s.cfg.AccessLog {
		c.logAccess()
	}
	if c.closed {
		return
	}
	if c.closeAfter {
		if !c.pending() {
			c.close()
		}
		return
	}
	if !c.pending() {
		c.serve() // the next pipelined request, if any
	}
}

func (c *lclient) logAccess() {
	addr := ""
	if c.ntried > 0 {
		addr = c.tried[c.ntried-1].Addr
	}
	c.l.s.logAccess(c.method, c.host, c.path, c.status, time.Since(c.start), addr, c.nbytes)
}

// close closes the connection and abandons an exchange in flight.
func (c *lclient) close() {
	if c.closed {
		return
	}
	fd := c.fd
	c.forget()
	c.l.remove(fd)
}

// forget releases everything of c but its socket.
func (c *lclient) forget() {
	l := c.l
	c.closed = true
	l.stopTimer(&c.t)
	if u := c.up; u != nil { // a response in flight: its connection cannot be reused
		c.up, u.c = nil, nil
		u.close()
	}
	if c.inFlight && c.ep != nil {
		c.ep.End(false)
		c.ep = nil
	}
	c.inFlight = false
	if c.in != nil {
		l.cbufs.put(c.in)
		c.in = nil
	}
	if c.out != nil {
		l.obufs.put(c.out[:0])
		c.out, c.outPos = nil, 0
	}
	l.clients--
}

func (c *lclient) abort() { c.close() }

// internalError answers 500, with Connection: close, after a panic while
// c's request was being handled, if nothing of its response was sent yet;
// abort closes c next.
func (c *lclient) internalError() {
	if c.closed || c.pending() || (c.up != nil && c.up.header) || (!c.inFlight && c.r == c.w) {
		return
	}
	l := c.l
	stats := c.stats
	if !c.inFlight || stats == nil {
		stats = &l.s.m.requests.unmatched
	}
	stats.inc(fasthttp.StatusInternalServerError)
	parts := [4][]byte{l.localHeader(fasthttp.StatusInternalServerError, bodyInternal, true), bodyInternal}
	_, _ = l.writev(c.fd, &parts) // best effort: the connection closes next
}

// lupstream is an endpoint connection of a loop, carrying one request at
// a time.
type lupstream struct {
	l          *loop
	fd         int
	gen        int32
	t          tnode
	p          *lpool
	c          *lclient // the client waiting for the response; nil when idle
	outPos     int      // how much of c.reqOut was written
	in         []byte   // response bytes in[:w]; nil when none are buffered
	w          int
	connecting bool
	readable   bool
	hup        bool // the endpoint ended its side: read until EOF, no edge will come
	idle       bool
	reused     bool // carried an earlier exchange: a failure before any byte may be a stale connection
	closed     bool

	// response state
	got        int64 // response bytes read in this exchange
	header     bool  // the response header was forwarded
	remaining  int64 // Content-Length left; -1: until close
	chunked    bool  // passed through, framing tracked
	rechunk    bool  // until close, forwarded chunked
	chunks     chunkScan
	closeAfter bool // this connection closes after the response
	paused     bool // waiting for the client to take pending output
}

// take returns the most recently used idle connection of the pool, or nil.
func (p *lpool) take(l *loop) *lupstream {
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	u := p.idle[n-1]
	p.idle = p.idle[:n-1]
	u.idle = false
	l.stopTimer(&u.t)
	return u
}

func (l *loop) dial(p *lpool) (*lupstream, error) {
	family := unix.AF_INET
	if _, ok := p.sa.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	u := &lupstream{l: l, fd: fd, p: p}
	u.t.h, u.t.kind = u, tNone
	switch err := unix.Connect(fd, p.sa); err {
	case nil:
	case unix.EINPROGRESS:
		u.connecting = true
	default:
		unix.Close(fd)
		return nil, err
	}
	gen, err := l.add(fd, u)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	u.gen = gen
	p.open++
	return u, nil
}

// begin starts c's exchange on u.
func (u *lupstream) begin(c *lclient) {
	u.c, c.up = c, u
	u.outPos, u.got, u.header, u.remaining, u.chunked, u.rechunk, u.closeAfter, u.paused = 0, 0, false, 0, false, false, false, false
	u.chunks = chunkScan{}
	if u.connecting {
		u.l.setTimer(&u.t, tUpConnect)
		return
	}
	u.l.setTimer(&u.t, tUpResponse)
	if u.flush() {
		u.pump()
	}
}

func (u *lupstream) handle(ev uint32) {
	if u.connecting {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		if e, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
			u.connectFailed(errConnect)
			return
		}
		u.connecting = false
		if u.c == nil {
			return
		}
		u.l.setTimer(&u.t, tUpResponse)
		if !u.flush() {
			return
		}
	} else if ev&unix.EPOLLOUT != 0 && u.c != nil && u.outPos < len(u.c.reqOut) && !u.flush() {
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		u.readable = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		u.hup = true
	}
	if u.c == nil {
		if u.readable && u.idle { // an idle connection has nothing to say: the endpoint closed it
			if _, err := rawRead(u.fd, u.l.probe[:]); err == unix.EAGAIN {
				u.readable = false
			} else {
				u.close()
			}
		}
		return
	}
	u.pump()
}

func (u *lupstream) expired(k timerKind) {
	switch {
	case k == tUpIdle:
		u.close()
	case k == tUpConnect:
		u.connectFailed(errTimeout)
	case u.c != nil:
		u.fail(errTimeout)
	default:
		u.close()
	}
}

// connectFailed closes u, whose connect failed, and offers the request to
// another endpoint.
func (u *lupstream) connectFailed(k errKind) {
	c := u.c
	u.c = nil
	u.close()
	if c == nil || c.closed {
		return
	}
	c.up = nil
	c.connectFailed(k)
}

// flush writes the request; it reports whether all of it went.
func (u *lupstream) flush() bool {
	req := u.c.reqOut
	for u.outPos < len(req) {
		parts := [4][]byte{req[u.outPos:]}
		n, err := u.l.writev(u.fd, &parts)
		if err == unix.EAGAIN {
			return false
		}
		if err != 0 {
			u.fail(errReset)
			return false
		}
		u.outPos += n
		u.l.setTimer(&u.t, tUpResponse)
	}
	return true
}

// resume goes on reading the response after the client took the pending
// output.
func (u *lupstream) resume() {
	if u.paused {
		u.paused = false
		u.l.setTimer(&u.t, tUpResponse)
	}
	u.pump()
}

// pumpBudget is how many reads one pump does before letting the loop's
// other connections run: a fast endpoint streaming a large body to a fast
// client would otherwise hold the loop until the body ends.
const pumpBudget = 16

// pump reads the response and forwards it until it is complete, the
// endpoint has nothing more, the client's socket pushes back, or the
// budget is spent (it then goes on in the loop's next turn).
func (u *lupstream) pump() {
	l := u.l
	for reads := 0; u.c != nil; reads++ {
		if reads == pumpBudget {
			l.again = append(l.again, u)
			return
		}
		if u.c.pending() {
			// Backpressure: the endpoint waits for the client, whose
			// WriteTimeout runs meanwhile.
			u.paused = true
			l.stopTimer(&u.t)
			return
		}
		if u.w > 0 {
			done, ok := u.forward()
			if !ok {
				return
			}
			if done {
				u.finish()
				return
			}
			if u.w > 0 && !u.readable {
				return
			}
		}
		if !u.readable || u.outPos < len(u.c.reqOut) {
			return
		}
		if u.in == nil {
			u.in = l.ubufs.get()
		}
		n, err := rawRead(u.fd, u.in[u.w:])
		if err == unix.EAGAIN {
			u.readable = false
			return
		}
		if err != 0 || n == 0 {
			u.eof()
			return
		}
		if n < len(u.in)-u.w && !u.hup {
			u.readable = false
		}
		u.w += n
		u.got += int64(n)
		l.setTimer(&u.t, tUpResponse) // progress: the limit starts again
	}
}

var (
	chunkCRLF = []byte("\r\n")
	chunkEnd  = []byte("0\r\n\r\n")
)

// forward sends what in[:w] holds of the response to the client. done:
// the response is complete; ok false: the exchange was ended.
func (u *lupstream) forward() (done, ok bool) {
	c, l := u.c, u.l
	body := u.in[:u.w]
	var hdr []byte
	if !u.header {
		// The header must end within MaxHeaderBytes (the goroutine
		// server's read buffer), however much of it one read brought.
		end := bytes.Index(body[:min(len(body), l.s.cfg.MaxHeaderBytes)], crlfcrlf)
		if end < 0 {
			if u.w >= l.s.cfg.MaxHeaderBytes || u.w == len(u.in) || l.badStatusLine(body) {
				u.fail(errReset) // a header larger than MaxHeaderBytes, or not HTTP: 502
				return false, false
			}
			return false, true // need more
		}
		h := &l.resp
		l.rd.Reset(body[:end+4])
		l.br.Reset(&l.rd)
		if err := h.Read(l.br); err != nil {
			u.fail(errReset)
			return false, false
		}
		status := h.StatusCode()
		if status < 200 {
			if status == fasthttp.StatusSwitchingProtocols {
				u.fail(errReset) // nothing asked for an upgrade
				return false, false
			}
			// An interim response (100, 103): skipped, as fasthttp's
			// client does.
			if u.w = copy(u.in, body[end+4:]); u.w > 0 {
				return u.forward()
			}
			return false, true
		}
		if bodiless(c.head, status) {
			u.remaining = 0
		} else {
			switch cl := h.ContentLength(); {
			case cl == -1:
				u.chunked = true
			case cl == -2:
				u.remaining, u.closeAfter, u.rechunk = -1, true, true
			default:
				u.remaining = int64(cl)
			}
		}
		u.closeAfter = u.closeAfter || h.ConnectionClose()
		hdr = u.responseHeader(status)
		body, u.header = body[end+4:], true
		l.s.m.upstream.Observe(time.Since(c.start).Seconds())
		c.stats.inc(status)
		c.status = status
	}
	var n int
	var tail []byte
	switch {
	case u.chunked:
		k, fwd, end, bad := u.chunks.scan(body)
		if bad {
			// Malformed framing: what is valid goes out, then both
			// connections close (the body is cut short).
			u.closeAfter, c.closeAfter = true, true
			u.w = 0
			c.nbytes += int64(fwd)
			c.send(hdr, body[:fwd], nil, nil)
			u.fail(errReset)
			return false, false
		}
		if end {
			tail = chunkCRLF
		}
		n, done = k, end
		c.nbytes += int64(fwd)
		c.send(hdr, body[:fwd], tail, nil)
	case u.rechunk:
		n = len(body)
		c.nbytes += int64(n)
		if n > 0 {
			l.num = strconv.AppendInt(l.num[:0], int64(n), 16)
			l.num = append(l.num, '\r', '\n')
			c.send(hdr, l.num, body, chunkCRLF)
		} else {
			c.send(hdr, nil, nil, nil)
		}
	default:
		n = int(min(int64(len(body)), u.remaining))
		u.remaining -= int64(n)
		done = u.remaining == 0
		c.nbytes += int64(n)
		c.send(hdr, body[:n], nil, nil)
	}
	if n < len(body) { // bytes past the response: the endpoint is out of step
		u.closeAfter = true
	}
	u.w = 0
	if c.closed {
		return false, false
	}
	return done, true
}

// badStatusLine reports whether p, the start of a response header whose
// end has not arrived, already has a complete first line that is not a
// status line: the goroutine server's parser (fasthttp) rejects such an
// answer (a banner of some other protocol, say) as soon as it has the
// line, with a 502, rather than wait for ResponseTimeout. Empty lines
// before it are skipped, as fasthttp does.
func (l *loop) badStatusLine(p []byte) bool {
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return false
		}
		if i > 1 || i == 1 && p[0] != '\r' {
			l.hdr = append(append(l.hdr[:0], p[:i+1]...), '\r', '\n')
			l.rd.Reset(l.hdr)
			l.br.Reset(&l.rd)
			return l.resp.Read(l.br) != nil
		}
		p = p[i+1:]
	}
}

// bodiless reports whether a response has no body whatever its header
// says: the answer to a HEAD, a 204, a 304.
func bodiless(head bool, status int) bool {
	return head || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified
}

// responseHeader builds the client's response header from the endpoint's
// (l.resp) the way the goroutine server does (copyResponseHeader, then
// fasthttp's framing and Date).
func (u *lupstream) responseHeader(status int) []byte {
	l, c := u.l, u.c
	o := &l.out
	o.Reset()
	o.DisableNormalizing()
	o.SetNoDefaultContentType(true)
	copyResponseHeader(o, &l.resp, &l.sc)
	switch {
	case bodiless(c.head, status):
		// No body: the endpoint's Content-Length (if any) was copied.
	case u.chunked || u.rechunk:
		o.SetContentLength(-1)
	default:
		o.SetContentLength(int(u.remaining))
	}
	if c.closeAfter {
		o.SetConnectionClose()
	}
	l.hdr = o.AppendBytes(l.hdr[:0])
	return l.hdr
}

// finish ends the exchange: the connection goes back to its pool, the
// client goes on with its next request.
func (u *lupstream) finish() {
	c, l := u.c, u.l
	u.c = nil
	c.up = nil
	c.ep.End(false)
	c.ep = nil
	if u.w == 0 && u.in != nil {
		l.ubufs.put(u.in)
		u.in = nil
	}
	if u.closeAfter || l.draining || u.hup { // hup: the endpoint closed it already
		u.close()
	} else {
		u.idle, u.reused = true, true
		u.p.idle = append(u.p.idle, u)
		l.setTimer(&u.t, tUpIdle)
	}
	if u.rechunk {
		c.send(chunkEnd, nil, nil, nil)
	}
	c.done()
}

// eof handles the endpoint closing its side mid-exchange.
func (u *lupstream) eof() {
	if u.header && u.remaining < 0 { // a body delimited by close
		u.closeAfter = true
		u.finish()
		return
	}
	u.fail(errReset)
}

// fail closes the connection after an error (k: reset or timeout). A
// request that got no response byte on a reused connection (the endpoint
// may have closed it while idle) is sent again once on a new connection;
// otherwise the client gets a 502 or 504, or is closed if its response
// had started.
func (u *lupstream) fail(k errKind) {
	c, l := u.c, u.l
	u.c = nil
	u.close()
	if c == nil || c.closed {
		return
	}
	c.up = nil
	s := l.s
	if u.got == 0 && u.reused && k != errTimeout && !c.retried {
		c.retried = true
		s.m.staleRetries.Inc()
		// Every other idle connection of the pool has been idle at least
		// as long as this one (most recently used first): drop them.
		for len(u.p.idle) > 0 {
			u.p.idle[len(u.p.idle)-1].close()
		}
		if nu, err := l.dial(u.p); err == nil {
			nu.begin(c)
			return
		}
	}
	if u.header {
		s.m.upErr[k].Inc()
		c.ep.End(true)
		c.ep = nil
		c.close()
		return
	}
	c.upstreamFailed(k)
}

func (u *lupstream) close() {
	if u.closed {
		return
	}
	u.closed = true
	l := u.l
	l.stopTimer(&u.t)
	if u.idle {
		for i, x := range u.p.idle {
			if x == u {
				u.p.idle = append(u.p.idle[:i], u.p.idle[i+1:]...)
				break
			}
		}
		u.idle = false
	}
	if u.in != nil {
		l.ubufs.put(u.in)
		u.in = nil
	}
	u.p.open--
	l.remove(u.fd)
}

func (u *lupstream) abort() {
	if c := u.c; c != nil {
		c.close() // closes u too
		return
	}
	u.close()
}
