//go:build !linux

package proxy

import (
	"net"
	"sync/atomic"
	"time"
)

// parker is Linux-only (epoll); elsewhere idle connections keep their
// goroutine.
type parker struct {
	after   time.Duration
	bufSize int
	n       atomic.Int64
	parks   atomic.Uint64
}

func newParker(after, idle time.Duration, bufSize int, serve func(net.Conn)) *parker { return nil }

func socketFD(nc net.Conn) int { return -1 }

func (p *parker) park(c *conn) bool { return false }

func (p *parker) start() {}

func (p *parker) close() {}
