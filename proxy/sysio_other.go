//go:build !linux

package proxy

import "net"

// sysIO is Linux-only; elsewhere connections use their net.Conn methods.
type sysIO struct{ beforeWait func() }

func newSysIO(net.Conn) *sysIO { return nil }

func (*sysIO) Read(nc net.Conn, p []byte) (int, error)  { return nc.Read(p) }
func (*sysIO) Write(nc net.Conn, p []byte) (int, error) { return nc.Write(p) }
