//go:build !race

package proxy

// rawIO: connections read and write through sysIO (see sysio_linux.go).
const rawIO = true
