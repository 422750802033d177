package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/balancer"
)

// The event-loop front end of the plain-HTTP listener (Config.EventLoops;
// see "Event loops" in the package doc). A front is one listener's set of
// loops; a loop is one goroutine locked to its thread, with its own epoll
// set, client and endpoint connections, keep-alive pools and timers, so
// loops share nothing on the request path but the route snapshot, the
// endpoints' counters and the metrics (atomics).

const (
	// loopEvents: every connection is registered once, edge-triggered,
	// for both directions, and never modified per request.
	loopEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	// upBufMin is an endpoint connection's smallest read buffer: the
	// largest response header, and one body read.
	upBufMin = 32 << 10
)

// timerKind names a loop timer. Every timer of one kind has the same
// duration, so a list per kind, appended to as timers are set, is in
// deadline order: setting, moving and expiring a timer is O(1).
type timerKind int8

const (
	tNone        timerKind = iota - 1
	tClientRead            // ReadTimeout: a request's header is being received
	tClientIdle            // IdleTimeout: waiting for the next request
	tClientWrite           // WriteTimeout: the client is not taking the response
	tUpConnect             // ConnectTimeout
	tUpResponse            // ResponseTimeout: the endpoint owes bytes of its answer
	tUpIdle                // UpstreamIdleTimeout: a pooled endpoint connection
	numTimers
)

// tnode is a connection's timer: it is on at most one list at a time.
type tnode struct {
	prev, next *tnode
	kind       timerKind
	at         time.Duration // since the loop's epoch
	h          lhandler
}

type tlist struct{ head, tail *tnode }

// lhandler is a socket registered in a loop.
type lhandler interface {
	handle(ev uint32)
	expired(k timerKind)
	abort() // close now, for a forced shutdown or after a panic
}

// front is the set of loops serving one listener.
type front struct {
	s     *Server
	ln    net.Listener
	lnfd  int // a duplicate of ln's socket, non-blocking
	loops []*loop
	next  atomic.Uint32 // round-robin over the loops for accepted sockets
	// drained counts the loops that stopped accepting (drain): the last
	// one closes the listener.
	drained atomic.Int32
	done    chan struct{} // closed when every loop has ended
	closed  sync.Once
}

// loop is one event loop. Only its goroutine touches it, except inbox and
// ended (under mu) and the stop flags.
type loop struct {
	s    *Server
	fr   *front
	epfd int
	pf   *os.File        // epfd, registered with the runtime's poller
	prc  syscall.RawConn // pf's, to wait for epfd to be readable
	// pollFn polls epfd into nready: bound once, so a wait allocates
	// nothing.
	pollFn func(uintptr) bool
	nready int
	evfd   int // eventfd: inbox has sockets, or stop/force was set
	lnReg  bool
	evs    []unix.EpollEvent
	fds    []lhandler // by fd
	gens   []int32    // registration generation by fd: stale events are skipped
	gen    int32
	epoch  time.Time
	now    time.Duration
	tl     [numTimers]tlist
	dur    [numTimers]time.Duration
	pools  map[*balancer.Endpoint]*lpool
	swept  time.Duration
	// again holds endpoint connections to pump on the next turn, after the
	// events of this one (pumpBudget); againNext is its spare.
	again, againNext []*lupstream
	acceptAt         time.Duration // accepts paused until then (0: not paused)
	yielded          time.Duration // when the loop last yielded its P
	cur              lhandler      // being dispatched (panic recovery)

	req   fasthttp.RequestHeader
	resp  fasthttp.ResponseHeader
	out   fasthttp.ResponseHeader
	uri   fasthttp.URI
	sc    scratch
	rd    bytes.Reader
	br    *bufio.Reader
	hdr   []byte
	num   []byte // scratch for chunk sizes
	iov   [4]unix.Iovec
	ev    unix.EpollEvent
	probe [1]byte
	port  []byte // X-Forwarded-Port: the listener's port
	upBuf int
	cbufs freeList // client read buffers (MaxHeaderBytes)
	ubufs freeList // endpoint read buffers (upBuf)
	obufs freeList // client output buffers (empty, 64 KiB capacity to start)

	mu    sync.Mutex
	inbox []int
	ended bool        // under mu: the loop has ended, its eventfd is closed
	stop  atomic.Bool // drain: stop accepting, finish what is in flight
	force atomic.Bool // close everything now

	draining bool
	clients  int           // open client connections
	accepted atomic.Uint64 // client connections served, for tests
	done     chan struct{}
}

// lpool is one loop's idle connections to one endpoint.
type lpool struct {
	ep   *balancer.Endpoint
	sa   unix.Sockaddr
	idle []*lupstream // most recently used last
	open int
}

// serveLoops serves ln with cfg.EventLoops loops until Shutdown. It
// reports false, without serving, when ln is not a TCP listener.
func (s *Server) serveLoops(ln net.Listener) (bool, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return false, nil
	}
	fr, err := s.startFront(tl)
	if err != nil {
		return true, err
	}
	<-fr.done
	return true, nil
}

func (s *Server) startFront(tl *net.TCPListener) (*front, error) {
	s.frontsMu.Lock()
	defer s.frontsMu.Unlock()
	if s.shuttingDown {
		return nil, fmt.Errorf("proxy: serve: %w", net.ErrClosed)
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("proxy: event loops: %w", err)
	}
	lnfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		lnfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || derr != nil {
		return nil, fmt.Errorf("proxy: event loops: dup listener: %w", errors.Join(err, derr))
	}
	_ = unix.SetNonblock(lnfd, true)
	port := []byte(nil)
	if ap, ok := addrPort(tl.Addr()); ok {
		port = strconv.AppendUint(nil, uint64(ap.Port()), 10)
	}
	fr := &front{s: s, ln: tl, lnfd: lnfd, done: make(chan struct{})}
	for range s.cfg.EventLoops {
		l, err := newLoop(s, fr, port)
		if err != nil {
			for _, l := range fr.loops {
				l.closeFDs()
			}
			unix.Close(lnfd)
			return nil, err
		}
		fr.loops = append(fr.loops, l)
	}
	// The goroutine server serves the connections the loops hand off
	// (ServeConn), but its Shutdown drains connections (waits for their
	// requests, closes them when idle) only when it serves a listener:
	// it gets one that accepts nothing, closed by its Shutdown.
	hold := &holdListener{addr: tl.Addr(), serving: make(chan struct{}), closed: make(chan struct{})}
	go func() { _ = s.srv.Serve(hold) }()
	<-hold.serving
	var wg sync.WaitGroup
	for _, l := range fr.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run()
		}()
	}
	go func() {
		wg.Wait()
		fr.closeListener()
		close(fr.done)
	}()
	s.fronts = append(s.fronts, fr)
	return fr, nil
}

// holdListener is a listener that accepts no connection until it is
// closed (see startFront).
type holdListener struct {
	addr        net.Addr
	serving     chan struct{} // closed at the first Accept: Serve has registered it
	servingOnce sync.Once
	closed      chan struct{}
	closeOnce   sync.Once
}

func (h *holdListener) Accept() (net.Conn, error) {
	h.servingOnce.Do(func() { close(h.serving) })
	<-h.closed
	return nil, io.EOF
}

func (h *holdListener) Close() error {
	h.closeOnce.Do(func() { close(h.closed) })
	return nil
}

func (h *holdListener) Addr() net.Addr { return h.addr }

// closeListener closes the listening socket (both descriptors): connections
// not yet accepted are refused from then on.
func (fr *front) closeListener() {
	fr.closed.Do(func() {
		unix.Close(fr.lnfd)
		_ = fr.ln.Close()
	})
}

// shutdown drains the front: the loops stop accepting, close idle
// connections, finish the requests in flight (their responses say
// Connection: close) and end; at ctx's end whatever is left is closed and
// ctx's error returned.
func (fr *front) shutdown(ctx context.Context) error {
	for _, l := range fr.loops {
		l.stop.Store(true)
		l.wake()
	}
	select {
	case <-fr.done:
		return nil
	case <-ctx.Done():
	}
	for _, l := range fr.loops {
		l.force.Store(true)
		l.wake()
	}
	<-fr.done
	return ctx.Err()
}

func newLoop(s *Server, fr *front, port []byte) (*loop, error) {
	l := &loop{
		s: s, fr: fr, epfd: -1, evfd: -1, port: port,
		evs:   make([]unix.EpollEvent, 256),
		pools: make(map[*balancer.Endpoint]*lpool),
		epoch: time.Now(),
		upBuf: max(upBufMin, s.cfg.MaxHeaderBytes),
		done:  make(chan struct{}),
	}
	l.dur = [numTimers]time.Duration{
		tClientRead:  s.cfg.ReadTimeout,
		tClientIdle:  s.cfg.IdleTimeout,
		tClientWrite: s.cfg.WriteTimeout,
		tUpConnect:   s.cfg.ConnectTimeout,
		tUpResponse:  s.cfg.ResponseTimeout,
		tUpIdle:      s.cfg.UpstreamIdleTimeout,
	}
	l.cbufs = freeList{keep: 256, newBuf: func() []byte { return make([]byte, s.cfg.MaxHeaderBytes) }}
	l.ubufs = freeList{keep: 64, newBuf: func() []byte { return make([]byte, l.upBuf) }}
	l.obufs = freeList{keep: 64, maxCap: 1 << 20, newBuf: func() []byte { return make([]byte, 0, 64<<10) }}
	l.pollFn = func(fd uintptr) bool {
		l.nready = l.poll(int(fd))
		return l.nready > 0
	}
	l.req.DisableNormalizing()
	l.resp.DisableNormalizing()
	l.br = bufio.NewReaderSize(&l.rd, max(s.cfg.MaxHeaderBytes, l.upBuf)+16)
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("proxy: event loop: epoll: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with the runtime's
	// poller (wait parks there).
	if err = unix.SetNonblock(l.epfd, true); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("proxy: event loop: epoll: %w", err)
	}
	l.pf = os.NewFile(uintptr(l.epfd), "epoll")
	if l.prc, err = l.pf.SyscallConn(); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("proxy: event loop: epoll: %w", err)
	}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("proxy: event loop: eventfd: %w", err)
	}
	l.ev = unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.evfd)}
	if err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.evfd, &l.ev); err == nil {
		err = l.listen()
	}
	if err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("proxy: event loop: epoll_ctl: %w", err)
	}
	return l, nil
}

func (l *loop) closeFDs() {
	if l.evfd >= 0 {
		unix.Close(l.evfd)
		l.evfd = -1
	}
	if l.pf != nil {
		l.pf.Close() // closes epfd
		l.pf, l.epfd = nil, -1
	} else if l.epfd >= 0 {
		unix.Close(l.epfd)
		l.epfd = -1
	}
}

// wake interrupts the loop's wait (any goroutine).
func (l *loop) wake() {
	l.mu.Lock()
	l.wakeLocked()
	l.mu.Unlock()
}

// wakeLocked is wake with l.mu held. An ended loop's eventfd is closed
// (its number may be another file's by now): it is not written.
func (l *loop) wakeLocked() {
	if !l.ended {
		one := [8]byte{1}
		_, _ = unix.Write(l.evfd, one[:])
	}
}

// give hands an accepted socket to l (any goroutine). A loop that has
// ended takes nothing: the socket is closed.
func (l *loop) give(fd int) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		unix.Close(fd)
		return
	}
	l.inbox = append(l.inbox, fd)
	l.wakeLocked()
	l.mu.Unlock()
}

// end marks the loop ended, closes the sockets still in its inbox (handed
// over by another loop after this one drained) and its own descriptors.
func (l *loop) end() {
	l.mu.Lock()
	l.ended = true
	in := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	for _, fd := range in {
		unix.Close(fd)
	}
	l.closeFDs()
}

// add registers a connection socket, edge-triggered, once for its life,
// and returns its registration generation.
func (l *loop) add(fd int, h lhandler) (int32, error) {
	for fd >= len(l.fds) {
		l.fds = append(l.fds, nil)
		l.gens = append(l.gens, 0)
	}
	l.gen++
	l.fds[fd], l.gens[fd] = h, l.gen
	l.ev = unix.EpollEvent{Events: loopEvents, Fd: int32(fd), Pad: l.gen}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &l.ev); err != nil {
		l.fds[fd] = nil
		return 0, err
	}
	return l.gen, nil
}

// remove forgets fd and closes it (which takes it out of the epoll set).
func (l *loop) remove(fd int) {
	l.fds[fd] = nil
	unix.Close(fd)
}

// detach forgets fd and takes it out of the epoll set without closing it.
func (l *loop) detach(fd int) {
	l.fds[fd] = nil
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

func (l *loop) run() {
	defer close(l.done)
	for {
		n := l.wait()
		l.now = time.Since(l.epoch)
		l.dispatch(n, 0)
		l.runAgain()
		l.expire()
		if l.force.Load() {
			l.abortAll()
			l.end()
			return
		}
		if l.draining && l.clients == 0 {
			l.closePools()
			l.end()
			return
		}
		if n > 0 && l.now-l.yielded >= yieldEvery {
			// A loop that always finds events never enters the scheduler
			// on its own: a goroutine queued behind it on this P (another
			// loop the poller woke, a handed-off connection) would wait
			// for the runtime to preempt it, 10ms. Yielding after every
			// turn costs a tenth of the throughput; every yieldEvery
			// bounds that wait at about as much.
			l.yielded = l.now
			runtime.Gosched()
		}
	}
}

// dispatch handles events[from:n]. A panic in a handler closes that
// connection (and its peer), is counted and logged, and the remaining
// events are handled.
func (l *loop) dispatch(n, from int) {
	i := from
	defer func() {
		if p := recover(); p != nil {
			l.recovered(p)
			l.dispatch(n, i+1)
		}
	}()
	for ; i < n; i++ {
		ev := &l.evs[i]
		switch fd := int(ev.Fd); {
		case fd == l.evfd:
			l.wakeup()
		case fd == l.fr.lnfd && l.lnReg:
			l.accept()
		case fd < len(l.fds) && l.fds[fd] != nil && l.gens[fd] == ev.Pad:
			l.cur = l.fds[fd]
			l.cur.handle(ev.Events)
			l.cur = nil
		}
	}
}

// runAgain goes on with the endpoint connections that stopped reading a
// response for fairness (lupstream.pump's budget): edge-triggered, their
// sockets will not be reported again while data waits in them.
func (l *loop) runAgain() {
	if len(l.again) == 0 {
		return
	}
	l.again, l.againNext = l.againNext[:0], l.again
	for i, u := range l.againNext {
		l.againNext[i] = nil
		if u.closed || u.c == nil {
			continue
		}
		l.runOne(u)
	}
}

func (l *loop) runOne(u *lupstream) {
	defer func() {
		if p := recover(); p != nil {
			l.recovered(p)
		}
	}()
	l.cur = u
	u.pump()
	l.cur = nil
}

func (l *loop) recovered(p any) {
	l.s.m.panics.Inc()
	l.s.log.Error("proxy: panic in event loop", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	if h := l.cur; h != nil {
		l.cur = nil
		if c, ok := h.(*lclient); ok {
			c.internalError()
		}
		h.abort()
	}
}

// wait returns the number of events ready in l.evs. It polls the loop's
// epoll set without blocking (epoll_wait with timeout 0, as a raw system
// call: no scheduler transition); when nothing is ready it parks the
// goroutine in the runtime's poller, where the epoll set is itself
// registered (it is readable while events are pending), until an event,
// the next timer, or a second (pool sweeps). So an idle loop holds no P
// and no thread, and a busy one never leaves user space to wait: a loop
// blocked in epoll_wait itself would hold its P until the runtime's sysmon
// took it back, which starves every other goroutine for up to 10ms at a
// time when loops are as many as Ps.
func (l *loop) wait() int {
	if n := l.poll(l.epfd); n > 0 || len(l.again) > 0 {
		return n
	}
	d := l.untilNextTimer()
	if d <= 0 {
		return 0
	}
	_ = l.pf.SetReadDeadline(time.Now().Add(d))
	l.nready = 0
	err := l.prc.Read(l.pollFn)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		l.s.log.Error("proxy: event loop: wait", "err", err)
		time.Sleep(10 * time.Millisecond)
	}
	return l.nready
}

// poll takes the ready events off the epoll set without waiting.
func (l *loop) poll(epfd int) int {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd),
		uintptr(unsafe.Pointer(&l.evs[0])), uintptr(len(l.evs)), 0, 0, 0)
	if e != 0 {
		return 0
	}
	return int(r)
}

// untilNextTimer is how long the loop may wait: until the earliest timer,
// at most a second (pool sweeps).
func (l *loop) untilNextTimer() time.Duration {
	now := time.Since(l.epoch)
	next := now + time.Second
	if l.acceptAt > 0 && l.acceptAt < next {
		next = l.acceptAt
	}
	for k := range l.tl {
		if h := l.tl[k].head; h != nil && h.at < next {
			next = h.at
		}
	}
	return next - now
}

// wakeup handles the eventfd: sockets handed over by another loop, and
// the stop flags.
func (l *loop) wakeup() {
	var b [8]byte
	_, _ = unix.Read(l.evfd, b[:])
	l.mu.Lock()
	in := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	for _, fd := range in {
		l.newClient(fd)
	}
	if l.stop.Load() && !l.draining {
		l.drain()
	}
}

// accept takes the pending connections off the listening socket and
// spreads them over the loops.
func (l *loop) accept() {
	for !l.draining {
		fd, _, err := unix.Accept4(l.fr.lnfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			switch err {
			case unix.EINTR, unix.ECONNABORTED:
				continue
			case unix.EAGAIN:
			default:
				// EMFILE and the like: the connection stays in the
				// backlog. The listener is level-triggered, so it would
				// come straight back: stop accepting on this loop for a
				// while, as net/http and fasthttp back off.
				l.s.log.Error("proxy: event loop: accept failed; pausing accepts for 100ms", "err", err)
				l.pauseAccept()
			}
			return
		}
		loops := l.fr.loops
		t := loops[int(l.fr.next.Add(1))%len(loops)]
		if t == l {
			l.newClient(fd)
			continue
		}
		t.give(fd)
	}
}

func (l *loop) newClient(fd int) {
	if l.draining {
		unix.Close(fd)
		return
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c := &lclient{l: l, fd: fd, readable: true}
	c.t.h, c.t.kind = c, tNone
	if sa, err := unix.Getpeername(fd); err == nil {
		if ap, ok := sockaddrAddrPort(sa); ok {
			c.ip = ap.Addr().Unmap().AppendTo(nil)
		}
	}
	gen, err := l.add(fd, c)
	if err != nil {
		unix.Close(fd)
		return
	}
	c.gen = gen
	l.clients++
	l.accepted.Add(1)
	l.setTimer(&c.t, tClientRead)
}

// drain stops accepting and closes the connections with nothing in
// progress; the others close after their current response.
func (l *loop) drain() {
	l.draining = true
	l.unlisten()
	if int(l.fr.drained.Add(1)) == len(l.fr.loops) {
		// No loop accepts any more: new connections are refused from now
		// on, as the goroutine server's Shutdown does at once, rather than
		// wait in the backlog until the last request in flight is done.
		l.fr.closeListener()
	}
	for _, h := range l.fds {
		if c, ok := h.(*lclient); ok {
			c.closeAfter = true
			if c.up == nil && !c.pending() && c.r == c.w {
				c.close()
			}
		}
	}
}

func (l *loop) abortAll() {
	for _, h := range l.fds {
		if h != nil {
			h.abort()
		}
	}
	l.closePools()
}

func (l *loop) closePools() {
	for ep, p := range l.pools {
		for len(p.idle) > 0 {
			p.idle[len(p.idle)-1].close()
		}
		delete(l.pools, ep)
	}
}

// yieldEvery is how long a busy loop runs before it lets the goroutines
// waiting for its P run.
const yieldEvery = 500 * time.Microsecond

// acceptPause is how long a loop stops accepting after accept failed for
// want of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM).
const acceptPause = 100 * time.Millisecond

func (l *loop) pauseAccept() {
	l.unlisten()
	l.acceptAt = l.now + acceptPause
}

// listen registers the listening socket in the loop's epoll set. Every
// loop waits on it; EPOLLEXCLUSIVE wakes one of them per connection, which
// spreads the accepted sockets round-robin over all loops (front.next).
func (l *loop) listen() error {
	l.ev = unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(l.fr.lnfd)}
	err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.fr.lnfd, &l.ev)
	l.lnReg = err == nil
	return err
}

// unlisten takes the listening socket out of the loop's epoll set.
func (l *loop) unlisten() {
	if l.lnReg {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.fr.lnfd, nil)
		l.lnReg = false
	}
}

// resumeAccept registers the listener again once the pause is over.
func (l *loop) resumeAccept() {
	if l.acceptAt == 0 || l.now < l.acceptAt || l.draining {
		return
	}
	l.acceptAt = 0
	if err := l.listen(); err != nil {
		l.s.log.Error("proxy: event loop: resuming accepts", "err", err)
		l.acceptAt = l.now + acceptPause
	}
}

// Timers.

func (l *loop) setTimer(n *tnode, k timerKind) {
	l.stopTimer(n)
	d := l.dur[k]
	if d <= 0 {
		return // no limit
	}
	n.kind, n.at = k, l.now+d
	lst := &l.tl[k]
	n.prev = lst.tail
	if lst.tail != nil {
		lst.tail.next = n
	} else {
		lst.head = n
	}
	lst.tail = n
}

func (l *loop) stopTimer(n *tnode) {
	if n.kind == tNone {
		return
	}
	lst := &l.tl[n.kind]
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		lst.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		lst.tail = n.prev
	}
	n.prev, n.next, n.kind = nil, nil, tNone
}

// expire fires the timers that are due, and once a second forgets the
// pools of endpoints this loop no longer has connections to.
func (l *loop) expire() {
	for k := range l.tl {
		for {
			n := l.tl[k].head
			if n == nil || n.at > l.now {
				break
			}
			l.stopTimer(n)
			l.fire(n.h, timerKind(k))
		}
	}
	l.resumeAccept()
	if l.now-l.swept >= time.Second {
		l.swept = l.now
		for ep, p := range l.pools {
			if p.open == 0 {
				delete(l.pools, ep)
			}
		}
	}
}

func (l *loop) fire(h lhandler, k timerKind) {
	defer func() {
		if p := recover(); p != nil {
			l.cur = h
			l.recovered(p)
		}
	}()
	h.expired(k)
}

// Buffers: a client holds a read buffer only while it has bytes of a
// request, an endpoint connection only while it has bytes of a response,
// so idle keep-alive connections on both sides hold none.

// freeList is a loop's stack of spare buffers of one kind, at most keep
// of them and none of more than maxCap bytes (0: any); newBuf makes one
// when it is empty.
type freeList struct {
	free   [][]byte
	keep   int
	maxCap int
	newBuf func() []byte
}

func (f *freeList) get() []byte {
	if n := len(f.free); n > 0 {
		b := f.free[n-1]
		f.free[n-1] = nil
		f.free = f.free[:n-1]
		return b
	}
	return f.newBuf()
}

func (f *freeList) put(b []byte) {
	if len(f.free) < f.keep && (f.maxCap == 0 || cap(b) <= f.maxCap) {
		f.free = append(f.free, b)
	}
}

// pool returns this loop's pool for ep, or nil when ep's address is not
// an IP:port.
func (l *loop) pool(ep *balancer.Endpoint) *lpool {
	if p := l.pools[ep]; p != nil {
		return p
	}
	ap, err := netip.ParseAddrPort(ep.Addr)
	if err != nil {
		return nil
	}
	var sa unix.Sockaddr
	if a := ap.Addr().Unmap(); a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	}
	p := &lpool{ep: ep, sa: sa}
	l.pools[ep] = p
	return p
}

func sockaddrAddrPort(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), true
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// handOff gives a client connection to the goroutine server, with the
// bytes already read from it (from the start of the request the loop does
// not serve) to be read first. The loop forgets the socket.
func (l *loop) handOff(c *lclient, prefix []byte) {
	s := l.s
	fd := c.fd
	pre := append([]byte(nil), prefix...)
	c.forget()
	l.detach(fd)
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f) // a duplicate, registered with the runtime's poller
	f.Close()
	if err != nil {
		s.log.Error("proxy: event loop: hand-off", "err", err)
		return
	}
	s.m.handOffs.Inc()
	cc := newClientConn(nc, s.cfg.ReadTimeout, s.cfg.WriteTimeout, s.park)
	cc.prefix = pre
	go func() { _ = s.srv.ServeConn(cc) }()
}

// Raw syscalls for calls that never block (every socket is non-blocking).

func rawRead(fd int, p []byte) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}

// writev writes the non-empty parts with one system call.
func (l *loop) writev(fd int, parts *[4][]byte) (int, unix.Errno) {
	n := 0
	for _, p := range parts {
		if len(p) > 0 {
			l.iov[n] = unix.Iovec{Base: &p[0]}
			l.iov[n].SetLen(len(p))
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	r, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&l.iov[0])), uintptr(n))
	l.iov = [4]unix.Iovec{} // drop the references to the buffers
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}
