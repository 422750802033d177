//go:build !linux

package proxy

import (
	"context"
	"net"
)

// front is the event-loop front end, Linux only: elsewhere Serve always
// uses the goroutine server.
type front struct{}

func (*front) shutdown(context.Context) error { return nil }

func (s *Server) serveLoops(net.Listener) (bool, error) { return false, nil }
