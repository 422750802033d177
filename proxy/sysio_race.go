//go:build race

package proxy

// rawIO is off under the race detector: it learns that one goroutine's
// socket write happens before another's read from annotations in net.Conn's
// I/O (internal/poll), which raw system calls bypass, so every test that
// shares memory with a handler across a request would report a false race.
// `make test` runs the proxy and end-to-end tests a second time without
// -race to cover the raw path.
const rawIO = false
