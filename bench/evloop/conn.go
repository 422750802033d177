package main

import (
	"bytes"

	"golang.org/x/sys/unix"
)

// client is a downstream connection. It serves one request at a time; the
// bytes of pipelined requests wait in its buffer until the response to the
// previous one is complete.
type client struct {
	l          *loop
	fd         int
	ip         []byte // X-Forwarded-For
	in         []byte // request bytes in[r:w]
	r, w       int
	out        []byte // response bytes the socket did not take: out[outPos:]
	outPos     int
	readable   bool     // no EAGAIN since the last EPOLLIN
	be         *backend // the backend serving the current request
	head       bool     // the current request is HEAD
	closeAfter bool     // close once the current response is out
	closed     bool
}

func (c *client) pending() bool { return c.outPos < len(c.out) }

func (c *client) handle(ev uint32) {
	if ev&unix.EPOLLERR != 0 {
		c.close()
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		c.readable = true
	}
	if ev&unix.EPOLLOUT != 0 && c.pending() {
		if !c.flush() {
			return
		}
		if c.be != nil {
			c.be.pump() // it was paused by our backpressure
		} else if c.closeAfter {
			c.close()
		}
	}
	c.serve()
}

// serve parses and dispatches buffered requests, reading more when the
// buffer holds no complete header, until a request is in flight, output is
// pending, or the socket has nothing more.
func (c *client) serve() {
	for !c.closed && c.be == nil && !c.pending() {
		if c.r < c.w {
			if end := bytes.Index(c.in[c.r:c.w], crlfcrlf); end >= 0 {
				c.request(c.r + end + 4)
				continue
			}
		}
		switch {
		case c.r == c.w:
			c.r, c.w = 0, 0
		case c.w == len(c.in) && c.r == 0:
			c.reply(resp431, true)
			return
		case c.w == len(c.in):
			c.w = copy(c.in, c.in[c.r:c.w])
			c.r = 0
		}
		if !c.readable {
			return
		}
		n, err := rawRead(c.fd, c.in[c.w:])
		if err == unix.EAGAIN || err == unix.EINTR {
			c.readable = err == unix.EINTR
			return
		}
		if err != 0 || n == 0 {
			c.close()
			return
		}
		if n < len(c.in)-c.w { // a short read drained the socket: the next data brings an edge
			c.readable = false
		}
		c.w += n
	}
}

// request handles the header in[r:end]: rewrite it and send it to a backend.
func (c *client) request(end int) {
	l := c.l
	h := &l.req
	l.rd.Reset(c.in[c.r:end])
	l.br.Reset(&l.rd)
	err := h.Read(l.br)
	c.r = end
	if err != nil {
		c.reply(resp400, true)
		return
	}
	if cl := h.ContentLength(); cl > 0 || cl == -1 || len(h.Peek("Transfer-Encoding")) > 0 {
		c.reply(resp501, true) // a reference: no request bodies
		return
	}
	c.closeAfter = h.ConnectionClose()
	c.head = h.IsHead()
	l.stripHopByHop(h)
	set := l.route(h.Host())
	l.buf = append(l.buf[:0], h.Peek("X-Forwarded-For")...)
	if len(l.buf) > 0 {
		l.buf = append(l.buf, ", "...)
	}
	l.buf = append(l.buf, c.ip...)
	h.SetBytesV("X-Forwarded-For", l.buf)
	h.Set("X-Forwarded-Proto", "http")
	h.SetBytesV("X-Forwarded-Host", h.Host())
	h.SetBytesV("X-Forwarded-Port", l.port)
	h.SetProtocol("HTTP/1.1")
	l.requests.Add(1)

	b, err := l.acquire(set)
	if err != nil {
		c.reply(resp502, false)
		return
	}
	b.out, b.outPos = h.AppendBytes(b.out[:0]), 0
	b.begin(c)
	if !b.connecting {
		b.flush()
	}
}

// reply sends a canned response.
func (c *client) reply(resp []byte, close bool) {
	c.closeAfter = c.closeAfter || close
	c.send(resp, nil)
	if c.closeAfter && !c.closed && !c.pending() {
		c.close()
	}
}

// send writes a and b with one writev, keeping what the socket does not
// take for EPOLLOUT.
func (c *client) send(a, b []byte) {
	if c.closed {
		return
	}
	if c.pending() {
		c.out = append(append(c.out, a...), b...)
		return
	}
	n, err := c.l.rawWritev(c.fd, a, b)
	if err != 0 && err != unix.EAGAIN {
		c.close()
		return
	}
	if err != 0 {
		n = 0
	}
	c.out, c.outPos = c.out[:0], 0
	if n < len(a) {
		c.out = append(c.out, a[n:]...)
		n = 0
	} else {
		n -= len(a)
	}
	c.out = append(c.out, b[n:]...)
}

// flush writes pending output; it reports whether all of it went.
func (c *client) flush() bool {
	for c.pending() {
		n, err := c.l.rawWritev(c.fd, c.out[c.outPos:], nil)
		if err == unix.EAGAIN {
			return false
		}
		if err != 0 {
			c.close()
			return false
		}
		c.outPos += n
	}
	c.out, c.outPos = c.out[:0], 0
	return true
}

// done is called by the backend when the response is complete.
func (c *client) done() {
	c.be = nil
	if c.closeAfter {
		if !c.pending() {
			c.close()
		}
		return
	}
	c.serve() // the next pipelined request, if any
}

func (c *client) close() {
	if c.closed {
		return
	}
	c.closed = true
	if b := c.be; b != nil { // a response in flight: the backend conn cannot be reused
		c.be, b.cl = nil, nil
		b.close()
	}
	c.l.remove(c.fd)
}

// backend is an upstream connection carrying one request at a time.
type backend struct {
	l          *loop
	fd         int
	o          *origin
	cl         *client // the client waiting for the response; nil when idle
	out        []byte  // the serialised request (kept for one retry)
	outPos     int
	in         []byte // response bytes in[:w]
	w          int
	connecting bool
	readable   bool
	idle       bool
	reused     bool // has served a response: a failure before any byte may be a stale conn

	// response state
	got        int  // response bytes read for the current request
	header     bool // the response header was forwarded
	remaining  int  // Content-Length left; -1: until close
	chunked    bool
	chunks     chunkScan
	closeAfter bool // the backend closes after this response
}

func (b *backend) begin(c *client) {
	b.cl, c.be = c, b
	b.got, b.header, b.remaining, b.chunked, b.closeAfter = 0, false, 0, false, false
	b.chunks = chunkScan{}
}

func (b *backend) handle(ev uint32) {
	if b.connecting {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		if e, err := unix.GetsockoptInt(b.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
			b.fail()
			return
		}
		b.connecting = false
		if !b.flush() {
			return
		}
	} else if ev&unix.EPOLLOUT != 0 && b.outPos < len(b.out) && !b.flush() {
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		b.readable = true
	}
	if b.cl == nil {
		if b.readable && b.idle { // an idle conn should have nothing to say
			if _, err := rawRead(b.fd, b.l.probe[:]); err == unix.EAGAIN {
				b.readable = false
			} else {
				b.close()
			}
		}
		return
	}
	b.pump()
}

// flush writes the request; it reports whether all of it went.
func (b *backend) flush() bool {
	for b.outPos < len(b.out) {
		n, err := b.l.rawWritev(b.fd, b.out[b.outPos:], nil)
		if err == unix.EAGAIN {
			return false
		}
		if err != 0 {
			b.fail()
			return false
		}
		b.outPos += n
	}
	return true
}

// pump reads the response and forwards it until it is complete, the
// backend has nothing more, or the client's socket pushes back.
func (b *backend) pump() {
	for b.cl != nil && !b.cl.pending() {
		if b.w > 0 {
			done, ok := b.forward()
			if !ok {
				return
			}
			if done {
				b.finish()
				return
			}
			if b.w > 0 && !b.readable {
				return
			}
		}
		if !b.readable {
			return
		}
		n, err := rawRead(b.fd, b.in[b.w:])
		if err == unix.EAGAIN {
			b.readable = false
			return
		}
		if err != 0 || n == 0 {
			b.eof()
			return
		}
		if n < len(b.in)-b.w {
			b.readable = false
		}
		b.w += n
		b.got += n
	}
}

// forward sends what in[:w] holds of the response to the client. done: the
// response is complete; ok false: the exchange was failed.
func (b *backend) forward() (done, ok bool) {
	c, l := b.cl, b.l
	body := b.in[:b.w]
	var hdr []byte
	if !b.header {
		end := bytes.Index(body, crlfcrlf)
		if end < 0 {
			if b.w == len(b.in) {
				b.fail() // header too large
				return false, false
			}
			return false, true // need more
		}
		h := &l.resp
		l.rd.Reset(body[:end+4])
		l.br.Reset(&l.rd)
		if err := h.Read(l.br); err != nil || h.StatusCode() < 200 {
			b.fail() // 1xx is not supported
			return false, false
		}
		h.SetNoDefaultContentType(true)
		b.closeAfter = h.ConnectionClose()
		switch cl, status := h.ContentLength(), h.StatusCode(); {
		case c.head || status == 204 || status == 304:
			b.remaining = 0
		case cl == -1:
			b.chunked = true // passed through verbatim; the framing is tracked
		case cl == -2:
			b.remaining, b.closeAfter, c.closeAfter = -1, true, true // body until close
		default:
			b.remaining = cl
		}
		l.stripHopByHop(h)
		if c.closeAfter {
			h.SetConnectionClose()
		}
		l.hdr = h.AppendBytes(l.hdr[:0])
		hdr, body, b.header = l.hdr, body[end+4:], true
	}
	var n int
	switch {
	case b.chunked:
		var err bool
		n, done, err = b.chunks.scan(body)
		if err {
			b.closeAfter, c.closeAfter = true, true
			c.send(hdr, body[:n])
			return true, true // end the response here; both conns close
		}
	case b.remaining < 0:
		n = len(body)
	default:
		n = min(len(body), b.remaining)
		b.remaining -= n
		done = b.remaining == 0
	}
	if n < len(body) { // bytes past the response: the backend is out of step
		b.closeAfter = true
	}
	b.w = 0
	c.send(hdr, body[:n])
	return done, true
}

// finish ends the exchange: the conn goes back to its pool, the client
// goes on with its next request.
func (b *backend) finish() {
	c := b.cl
	b.cl = nil
	if b.closeAfter {
		b.close()
	} else {
		b.idle, b.reused = true, true
		b.o.idle = append(b.o.idle, b)
	}
	if c.closed {
		return
	}
	c.done()
}

// eof handles the backend closing its side mid-exchange.
func (b *backend) eof() {
	if b.header && b.remaining < 0 { // a body delimited by close
		b.closeAfter = true
		b.finish()
		return
	}
	b.fail()
}

// fail closes the conn after an error. A request that got no response byte
// on a reused conn (the backend may have closed it while idle) is retried
// once on a new conn; otherwise the client gets a 502, or is closed if the
// response had started.
func (b *backend) fail() {
	c := b.cl
	b.cl = nil
	b.close()
	if c == nil || c.closed {
		return
	}
	c.be = nil
	if b.got == 0 && b.reused { // the new conn is not reused: one retry at most
		if nb, err := b.l.dial(b.o); err == nil {
			nb.out, b.out = b.out, nb.out
			nb.begin(c)
			if !nb.connecting {
				nb.flush()
			}
			return
		}
	}
	if b.header {
		c.close()
		return
	}
	c.reply(resp502, false)
	if !c.closed && !c.pending() {
		c.done()
	}
}

func (b *backend) close() {
	if b.idle {
		for i, x := range b.o.idle {
			if x == b {
				b.o.idle = append(b.o.idle[:i], b.o.idle[i+1:]...)
				break
			}
		}
		b.idle = false
	}
	if b.fd >= 0 {
		b.l.remove(b.fd)
		b.fd = -1
	}
}

// chunkScan follows chunked framing so a chunked body can be passed on
// verbatim and its end found.
type chunkScan struct {
	state int
	size  int
}

const (
	chSize        = iota // hex digits of a chunk size
	chExt                // a chunk extension, up to CR
	chSizeLF             // LF ending the size line
	chData               // size bytes of data
	chDataCR             // CR after the data
	chDataLF             // LF after the data
	chTrailer            // start of a trailer line, or of the final CRLF
	chTrailerLine        // rest of a trailer line
	chEndLF              // LF of the final CRLF
)

// scan consumes p up to the end of the body: n bytes belong to it, done
// when the last one did, bad on malformed framing.
func (s *chunkScan) scan(p []byte) (n int, done, bad bool) {
	for n < len(p) {
		if s.state == chData {
			k := min(len(p)-n, s.size)
			n += k
			if s.size -= k; s.size == 0 {
				s.state = chDataCR
			}
			continue
		}
		ch := p[n]
		n++
		switch s.state {
		case chSize:
			switch {
			case '0' <= ch && ch <= '9', 'a' <= ch|0x20 && ch|0x20 <= 'f':
				if s.size > 1<<40 {
					return n, false, true
				}
				d := int(ch - '0')
				if ch > '9' {
					d = int(ch|0x20-'a') + 10
				}
				s.size = s.size*16 + d
			case ch == ';' || ch == ' ' || ch == '\t':
				s.state = chExt
			case ch == '\r':
				s.state = chSizeLF
			default:
				return n, false, true
			}
		case chExt:
			if ch == '\r' {
				s.state = chSizeLF
			}
		case chSizeLF:
			if ch != '\n' {
				return n, false, true
			}
			if s.state = chData; s.size == 0 {
				s.state = chTrailer
			}
		case chDataCR, chDataLF:
			if ch != "\r\n"[s.state-chDataCR] {
				return n, false, true
			}
			if s.state++; s.state > chDataLF {
				s.state = chSize
			}
		case chTrailer:
			s.state = chTrailerLine
			if ch == '\r' {
				s.state = chEndLF
			}
		case chTrailerLine:
			if ch == '\n' {
				s.state = chTrailer
			}
		case chEndLF:
			if ch != '\n' {
				return n, false, true
			}
			return n, true, false
		}
	}
	return n, false, false
}
