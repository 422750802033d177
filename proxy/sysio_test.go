//go:build linux

package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// The raw path must behave as net.Conn does for everything fasthttp and
// the proxy's error mapping look at: data, EOF, deadlines, Close, resets,
// and writes larger than the socket buffer.
func TestSysIO(t *testing.T) {
	t.Run("data and EOF", func(t *testing.T) {
		c, s := tcpPair(t)
		sc, cc := newSysIO(s), newSysIO(c)
		if sc == nil || cc == nil {
			t.Fatal("newSysIO(*net.TCPConn) = nil")
		}
		if n, err := cc.Write(c, []byte("hello")); n != 5 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		buf := make([]byte, 16)
		n, err := sc.Read(s, buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("Read = %q, %v", buf[:n], err)
		}
		if n, err := sc.Read(s, nil); n != 0 || err != nil {
			t.Fatalf("Read(empty) = %d, %v", n, err)
		}
		c.CloseWrite()
		if n, err := sc.Read(s, buf); n != 0 || err != io.EOF {
			t.Fatalf("Read after peer's FIN = %d, %v; want 0, io.EOF", n, err)
		}
	})
	t.Run("large write waits for the reader", func(t *testing.T) {
		c, s := tcpPair(t)
		cc := newSysIO(c)
		want := strings.Repeat("0123456789abcdef", 1<<18) // 4 MiB: more than the socket buffers
		done := make(chan error, 1)
		go func() {
			n, err := cc.Write(c, []byte(want))
			if err == nil && n != len(want) {
				err = errors.New("short write")
			}
			c.CloseWrite()
			done <- err
		}()
		got, err := io.ReadAll(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("Write: %v", err)
		}
		if string(got) != want {
			t.Fatalf("read %d bytes, want %d identical ones", len(got), len(want))
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		_, s := tcpPair(t)
		sc := newSysIO(s)
		s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		start := time.Now()
		_, err := sc.Read(s, make([]byte, 8))
		if !isTimeout(err) || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read past the deadline: %v; want a timeout", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("deadline honoured after %s", d)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" {
			t.Errorf("error %#v: want *net.OpError with Op read", err)
		}
	})
	t.Run("write deadline with a peer that does not read", func(t *testing.T) {
		c, _ := tcpPair(t)
		cc := newSysIO(c)
		big := make([]byte, 64<<20)
		c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := cc.Write(c, big)
		if !isTimeout(err) {
			t.Fatalf("Write past the deadline: %d bytes, %v; want a timeout", n, err)
		}
		if n <= 0 || n >= 64<<20 {
			t.Errorf("wrote %d bytes before the deadline; want part of the buffer", n)
		}
	})
	t.Run("close unblocks a read", func(t *testing.T) {
		_, s := tcpPair(t)
		sc := newSysIO(s)
		done := make(chan error, 1)
		go func() {
			_, err := sc.Read(s, make([]byte, 8))
			done <- err
		}()
		time.Sleep(20 * time.Millisecond)
		s.Close()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read after Close: %v; want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Read still blocked after Close")
		}
	})
	t.Run("reset", func(t *testing.T) {
		c, s := tcpPair(t)
		sc := newSysIO(s)
		c.SetLinger(0) // Close sends RST
		c.Close()
		_, err := sc.Read(s, make([]byte, 8))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("Read after peer's reset: %v; want ECONNRESET", err)
		}
		if isTimeout(err) || classifyErr(err) != errReset {
			t.Errorf("reset classified as %v", classifyErr(err))
		}
	})
	t.Run("not TCP", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if newSysIO(a) != nil {
			t.Error("newSysIO(pipe) != nil: only TCP connections use raw I/O")
		}
	})
}

func TestSysIOAllocs(t *testing.T) {
	c, s := tcpPair(t)
	sc, cc := newSysIO(s), newSysIO(c)
	msg, buf := []byte("ping"), make([]byte, 8)
	allocs := testing.AllocsPerRun(200, func() {
		cc.Write(c, msg)
		sc.Read(s, buf)
	})
	if allocs != 0 {
		t.Errorf("raw write+read: %v allocs, want 0", allocs)
	}
}
