package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log"
	"net"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

const (
	clientBufSize  = 8 << 10  // largest request header
	backendBufSize = 32 << 10 // largest response header; body read chunk
	connEvents     = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
)

var (
	crlfcrlf = []byte("\r\n\r\n")
	resp400  = []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	resp431  = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	resp501  = []byte("HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	resp502  = []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
	// hopByHop are removed from requests and responses (besides the
	// headers a Connection header names).
	hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
		"Proxy-Authorization", "TE", "Trailer", "Upgrade"}
)

// handler is a socket registered in a loop's epoll set.
type handler interface{ handle(events uint32) }

// loop is one event loop: its own epoll set, listening socket, connections
// and backend pools. Only its own goroutine touches it, except requests.
type loop struct {
	epfd, lfd, evfd int
	events          []unix.EpollEvent
	fds             []handler // by fd
	origins         []*origin // the backends, each with its idle pool
	next            int       // round-robin position
	port            []byte    // X-Forwarded-Port

	req   fasthttp.RequestHeader
	resp  fasthttp.ResponseHeader
	rd    bytes.Reader
	br    *bufio.Reader
	hdr   []byte // serialised response header
	buf   []byte // scratch: X-Forwarded-For, host folding, Connection tokens
	iov   [2]unix.Iovec
	ev    unix.EpollEvent
	probe [1]byte

	requests atomic.Uint64
	done     chan struct{}
	_        [64]byte // keep the next loop's counter off this cache line
}

// origin is one backend address and this loop's idle connections to it.
type origin struct {
	sa   unix.Sockaddr
	idle []*backend
}

func newLoop(addr string, backends []string) (*loop, error) {
	l := &loop{lfd: -1, evfd: -1, events: make([]unix.EpollEvent, 256), done: make(chan struct{})}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, err
	}
	if l.lfd, err = listenReusePort(addr); err != nil {
		unix.Close(l.epfd)
		return nil, err
	}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err == nil {
		err = l.register(l.lfd, unix.EPOLLIN)
	}
	if err == nil {
		err = l.register(l.evfd, unix.EPOLLIN)
	}
	if err != nil {
		l.closeAll()
		return nil, err
	}
	sa, _ := unix.Getsockname(l.lfd)
	_, port, _ := net.SplitHostPort(sockaddrString(sa))
	l.port = []byte(port)
	for _, b := range backends { // a Sockaddr per loop: unix.Connect writes into it
		sa, err := sockaddr(b)
		if err != nil {
			l.closeAll()
			return nil, fmt.Errorf("backend %q: %w", b, err)
		}
		l.origins = append(l.origins, &origin{sa: sa})
	}
	l.br = bufio.NewReaderSize(&l.rd, backendBufSize)
	return l, nil
}

func (l *loop) register(fd int, events uint32) error {
	l.ev = unix.EpollEvent{Events: events, Fd: int32(fd)}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &l.ev)
}

// add registers a connection, edge-triggered, once for its lifetime.
func (l *loop) add(fd int, h handler) error {
	for fd >= len(l.fds) {
		l.fds = append(l.fds, nil)
	}
	l.fds[fd] = h
	return l.register(fd, connEvents)
}

func (l *loop) remove(fd int) {
	l.fds[fd] = nil
	unix.Close(fd) // closing removes it from the epoll set
}

// stop asks the loop to close everything and waits until it has.
func (l *loop) stop() {
	select {
	case <-l.done:
		return
	default:
	}
	one := [8]byte{1}
	if _, err := unix.Write(l.evfd, one[:]); err != nil {
		return
	}
	<-l.done
}

func (l *loop) closeAll() {
	for fd, h := range l.fds {
		if h != nil {
			l.remove(fd)
		}
	}
	for _, fd := range []int{l.lfd, l.evfd, l.epfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

func (l *loop) run() {
	runtime.LockOSThread()
	defer close(l.done)
	for {
		n := l.wait()
		for i := range n {
			ev := &l.events[i]
			switch fd := int(ev.Fd); {
			case fd == l.lfd:
				l.accept()
			case fd == l.evfd:
				l.closeAll()
				return
			case fd < len(l.fds) && l.fds[fd] != nil:
				l.fds[fd].handle(ev.Events)
			}
		}
	}
}

// wait polls without blocking through a raw syscall (no scheduler
// transition) and blocks, through the runtime, only when nothing is ready.
func (l *loop) wait() int {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd),
		uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
	if e == 0 && r > 0 {
		return int(r)
	}
	for {
		n, err := unix.EpollWait(l.epfd, l.events, -1)
		if err == nil {
			return n
		}
		if err != unix.EINTR {
			log.Fatalf("evloop: epoll_wait: %v", err)
		}
	}
}

func (l *loop) accept() {
	for {
		fd, sa, err := unix.Accept4(l.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if err != unix.EAGAIN && err != unix.ECONNABORTED && err != unix.EINTR {
				log.Printf("evloop: accept: %v", err)
			}
			if err == unix.EAGAIN || err == unix.EMFILE || err == unix.ENFILE {
				return
			}
			continue
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		host, _, _ := net.SplitHostPort(sockaddrString(sa))
		c := &client{l: l, fd: fd, ip: []byte(host), in: make([]byte, clientBufSize), readable: true}
		if err := l.add(fd, c); err != nil {
			l.remove(fd)
		}
	}
}

// acquire picks the next backend of the set round-robin and returns an
// idle pooled connection to it or a new (possibly still connecting) one.
// There is one set (the pods), so set is always 0.
func (l *loop) acquire(set int) (*backend, error) {
	_ = set
	o := l.origins[l.next%len(l.origins)]
	l.next++
	if n := len(o.idle); n > 0 {
		b := o.idle[n-1]
		o.idle = o.idle[:n-1]
		b.idle = false
		return b, nil
	}
	return l.dial(o)
}

func (l *loop) dial(o *origin) (*backend, error) {
	fd, err := socket(o.sa)
	if err != nil {
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	b := &backend{l: l, fd: fd, o: o, in: make([]byte, backendBufSize)}
	switch err := unix.Connect(fd, o.sa); err {
	case nil:
	case unix.EINPROGRESS:
		b.connecting = true
	default:
		unix.Close(fd)
		return nil, err
	}
	if err := l.add(fd, b); err != nil {
		l.remove(fd)
		return nil, err
	}
	return b, nil
}

// route looks the request's host up (port stripped, case folded). Every
// host maps to the one backend set; the lookup is the cost being measured.
func (l *loop) route(host []byte) int {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && bytes.IndexByte(host[i:], ']') < 0 {
		host = host[:i]
	}
	for _, ch := range host {
		if 'A' <= ch && ch <= 'Z' {
			l.buf = append(l.buf[:0], host...)
			for i, ch := range l.buf {
				if 'A' <= ch && ch <= 'Z' {
					l.buf[i] = ch + 'a' - 'A'
				}
			}
			host = l.buf
			break
		}
	}
	if set, ok := benchHosts[string(host)]; ok {
		return set
	}
	return 0 // unknown hosts: the default set
}

// header is what fasthttp's RequestHeader and ResponseHeader share.
type header interface {
	Peek(key string) []byte
	Del(key string)
	DelBytes(key []byte)
}

// stripHopByHop deletes the hop-by-hop headers and those the Connection
// header names.
func (l *loop) stripHopByHop(h header) {
	l.buf = append(l.buf[:0], h.Peek("Connection")...)
	for tok := range bytes.SplitSeq(l.buf, []byte(",")) {
		if tok = bytes.TrimSpace(tok); len(tok) > 0 && !bytes.EqualFold(tok, []byte("close")) &&
			!bytes.EqualFold(tok, []byte("keep-alive")) {
			h.DelBytes(tok)
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}

// Raw syscalls for calls that never block (every socket is non-blocking).

func rawRead(fd int, p []byte) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}

func (l *loop) rawWritev(fd int, a, b []byte) (int, unix.Errno) {
	n := 0
	for _, p := range [2][]byte{a, b} {
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
	l.iov = [2]unix.Iovec{} // drop the references to the buffers
	return int(r), e
}
