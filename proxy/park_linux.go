package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// parker holds the client keep-alive connections that have waited for
// their next request longer than Config.ParkIdleAfter, so that an idle
// connection costs its socket objects (and, for TLS, crypto/tls state)
// instead of a goroutine stack and fasthttp's read buffer (see "Idle
// connections" in the package doc).
//
// A conn is parked from its own goroutine: conn.Read, finding the shortened
// idle deadline expired with fasthttp's read buffer empty, returns
// errParked, fasthttp ends the connection's loop the quiet keep-alive way
// (no response, reader, writer and context released) and calls Close, which
// hands the socket here instead of closing it. One goroutine waits on an
// epoll set of the parked sockets (one-shot, level-triggered readiness) and
// resumes a socket that becomes readable (bytes, end of stream or an error)
// with fasthttp's ServeConn on a new goroutine; it closes the ones whose idle
// deadline passed.
type parker struct {
	after   time.Duration  // ParkIdleAfter
	bufSize int            // fasthttp's read buffer size (ReadBufferSize)
	serve   func(net.Conn) // resumes a connection (fasthttp ServeConn)

	epfd  int
	sweep time.Duration // how often idle deadlines are checked

	mu     sync.Mutex
	conns  map[int]*conn // by socket fd
	closed bool
	n      atomic.Int64 // parked now, for the gauge
	parks  atomic.Uint64
}

// newParker returns a parker, or nil when parking is off (after <= 0). It
// parks nothing until start.
func newParker(after, idle time.Duration, bufSize int, serve func(net.Conn)) *parker {
	if after <= 0 {
		return nil
	}
	return &parker{
		after: after, bufSize: bufSize, serve: serve, epfd: -1,
		sweep: min(max(idle/16, 10*time.Millisecond), time.Second),
	}
}

// start creates the epoll set and runs the loop until close. Without epoll
// nothing is ever parked.
func (p *parker) start() {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		syscall.Close(epfd)
		return
	}
	p.epfd, p.conns = epfd, make(map[int]*conn)
	go p.run()
}

// socketFD returns nc's file descriptor, or -1 when it has none.
func socketFD(nc net.Conn) int {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1
	}
	return fd
}

// park takes c (whose goroutine is ending) until its socket is readable or
// its idle deadline passes. It reports false when it cannot: the caller
// closes c then.
func (p *parker) park(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.conns == nil || c.fd < 0 {
		return false
	}
	p.conns[c.fd] = c
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(c.fd)}
	op := syscall.EPOLL_CTL_MOD
	if !c.epollAdded {
		op = syscall.EPOLL_CTL_ADD
	}
	if err := syscall.EpollCtl(p.epfd, op, c.fd, &ev); err != nil {
		delete(p.conns, c.fd)
		return false
	}
	c.epollAdded = true
	p.n.Add(1)
	p.parks.Add(1)
	return true
}

func (p *parker) run() {
	events := make([]syscall.EpollEvent, 256)
	var ready, expired []*conn
	lastSweep := time.Now()
	for {
		n, err := syscall.EpollWait(p.epfd, events, int(p.sweep/time.Millisecond))
		if err != nil && err != syscall.EINTR {
			return
		}
		now := time.Now()
		ready, expired = ready[:0], expired[:0]
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			syscall.Close(p.epfd)
			return
		}
		for i := range max(n, 0) {
			fd := int(events[i].Fd)
			if c := p.conns[fd]; c != nil {
				delete(p.conns, fd)
				ready = append(ready, c)
			}
		}
		if now.Sub(lastSweep) >= p.sweep {
			lastSweep = now
			for fd, c := range p.conns {
				if d := c.rd.hard; !d.IsZero() && !now.Before(d) {
					delete(p.conns, fd)
					expired = append(expired, c)
				}
			}
		}
		p.mu.Unlock()
		p.n.Add(-int64(len(ready) + len(expired)))
		for _, c := range ready {
			// A new fasthttp loop: its first read (one byte, under the
			// header deadline) is not a wait between requests, and any
			// error there ends the connection quietly. The expired park
			// deadline goes: fasthttp sets none when ReadTimeout is off.
			c.served = false
			c.SetReadDeadline(time.Time{})
			go p.serve(c.servedConn())
		}
		for _, c := range expired {
			c.closeParked()
		}
	}
}

// close closes every parked connection and refuses new ones; the loop
// ends within one sweep interval.
func (p *parker) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.closeParked()
	}
	p.n.Add(-int64(len(conns)))
}
