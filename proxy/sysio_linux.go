package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sysIO does a TCP connection's reads and writes as raw system calls on its
// non-blocking socket, waiting for readiness through the connection's own
// netpoller registration (syscall.RawConn), so deadlines and Close work as
// for the net.Conn.
//
// Why: a read or write on a non-blocking socket never blocks, but the kernel
// runs a loopback or veth peer's TCP receive path inside the sender's write,
// which on a small VM often takes longer than one tick of the runtime's
// sysmon (20µs). Through net.Conn each such call is a blocking-syscall
// transition: sysmon finds the P "in a syscall", hands it to another thread
// and keeps waking every 20µs, and the returning thread has to find a P
// again. Under proxy load that was about a fifth of edgegate's CPU time
// (context switches, futex wake-ups, sysmon itself). As raw calls they are
// ordinary function calls to the scheduler, as they are to nginx's event
// loop.
//
// A sysIO is used by one reader and one writer at a time (their state is
// separate), like the conn it serves.
type sysIO struct {
	rc syscall.RawConn

	rbuf    []byte
	rn      int
	rerr    syscall.Errno
	readFn  func(uintptr) bool // rawRead, bound once: no allocation per call
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(uintptr) bool

	// beforeWait, when set, runs each time a read finds no data and is
	// about to wait for some (the proxy flushes what it has to the
	// client then). It runs on the reading goroutine.
	beforeWait func()
}

// newSysIO returns raw I/O for nc, or nil when nc is not a TCP connection
// (tests use pipes and other conns; they keep the net.Conn methods).
func newSysIO(nc net.Conn) *sysIO {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &sysIO{rc: rc}
	s.readFn, s.writeFn = s.rawRead, s.rawWrite
	return s
}

func (s *sysIO) rawRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		switch e {
		case 0:
			s.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if s.beforeWait != nil {
				s.beforeWait()
			}
			return false
		default:
			s.rerr = e
			return true
		}
	}
}

func (s *sysIO) rawWrite(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		b := s.wbuf[s.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			s.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.werr = e
			return true
		}
	}
	return true
}

// Read reads into p the way net.Conn's Read does: io.EOF at the end,
// *net.OpError otherwise.
func (s *sysIO) Read(nc net.Conn, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf, s.rn, s.rerr = p, 0, 0
	err := s.rc.Read(s.readFn)
	n, e := s.rn, s.rerr
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, opError(err, "read", nc)
	case e != 0:
		return 0, opError(os.NewSyscallError("read", e), "read", nc)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, as net.Conn's Write does.
func (s *sysIO) Write(nc net.Conn, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wbuf, s.wn, s.werr = p, 0, 0
	err := s.rc.Write(s.writeFn)
	n, e := s.wn, s.werr
	s.wbuf = nil
	switch {
	case err != nil:
		return n, opError(err, "write", nc)
	case e != 0:
		return n, opError(os.NewSyscallError("write", e), "write", nc)
	}
	return n, nil
}

// opError renames a RawConn error ("raw-read") to the operation net.Conn
// reports; deadline and closed-connection errors keep their identity.
func opError(err error, op string, nc net.Conn) error {
	if oe, ok := err.(*net.OpError); ok {
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: "tcp", Source: nc.LocalAddr(), Addr: nc.RemoteAddr(), Err: err}
}
