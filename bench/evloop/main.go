// Command evloop is a measurement reference, not the product: a minimal
// HTTP/1.1 reverse proxy built as one epoll event loop per core, so that
// bench/load can tell how close an event-loop front end in Go gets to nginx
// on small requests, next to edgegate's goroutine-per-connection server.
//
// It does the per-request work edgegate does on the hot path (parse the
// request header with fasthttp, look the Host up in a table, strip
// hop-by-hop headers, set X-Forwarded-*, count the request, keep-alive
// upstream connections, round-robin over the backends) and nothing else: no
// TLS, no request bodies (501), no timeouts, no Kubernetes. Backends come
// from EDGEGATE_BENCH_PODS (comma-separated ip:port), which bench/load sets
// for a -b binary.
//
//	go build -o /tmp/evloop ./bench/evloop
//	go run ./bench/load -profiles small,16k -targets nginx,edgegate -b /tmp/evloop
//
// Design: GOMAXPROCS loops; each is a goroutine locked to its OS thread with
// its own epoll fd, its own SO_REUSEPORT listening socket (the kernel spreads
// connections over the loops) and its own keep-alive pools to the backends,
// so loops share nothing on the request path. Sockets are registered once,
// edge-triggered for EPOLLIN|EPOLLOUT|EPOLLRDHUP, and never modified per
// request. The non-blocking read/write/writev calls and a first epoll_wait
// with timeout 0 are raw syscalls (no scheduler transition); only when that
// finds nothing does the loop block in unix.EpollWait, which tells the
// runtime, so GC and other goroutines are not held up. Steady-state requests
// allocate nothing: buffers belong to connections and loops.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/BurntSushi/toml"
	"golang.org/x/sys/unix"
)

func main() {
	cfgPath := flag.String("config", "", "TOML config: [http] listen and [admin] listen are used")
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	httpAddr, adminAddr, err := readConfig(*cfgPath)
	if err != nil {
		log.Fatalf("evloop: %v", err)
	}
	var pods []string
	for _, s := range strings.Split(os.Getenv("EDGEGATE_BENCH_PODS"), ",") {
		if s = strings.TrimSpace(s); s != "" {
			pods = append(pods, s)
		}
	}
	// One loop per P, and one P more for everything else (admin, GC). The
	// spare P also matters to sysmon: with no idle P it takes the P of a
	// loop blocked in epoll_wait after 20 µs and keeps polling every 20 µs,
	// which cost ~15% of the CPU in a profile; with one idle it leaves a
	// blocked loop alone for 10 ms and backs off.
	n := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(n + 1)
	p, err := start(httpAddr, pods, n)
	if err != nil {
		log.Fatalf("evloop: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, p.stats()) })
	ln, err := net.Listen("tcp", adminAddr)
	if err != nil {
		log.Fatalf("evloop: admin: %v", err)
	}
	go func() { _ = http.Serve(ln, mux) }()
	log.Printf("evloop: %d loops on %s, admin on %s, backends %v", len(p.loops), p.addr, adminAddr, pods)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	p.stop()
	log.Printf("evloop: stopped; requests per loop: %s", p.stats())
}

// readConfig takes [http] listen and [admin] listen from an edgegate TOML
// config and ignores everything else.
func readConfig(path string) (httpAddr, adminAddr string, err error) {
	if path == "" {
		return "", "", fmt.Errorf("-config is required")
	}
	var raw map[string]any
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return "", "", err
	}
	get := func(section string) string {
		m, _ := raw[section].(map[string]any)
		s, _ := m["listen"].(string)
		return s
	}
	httpAddr, adminAddr = get("http"), get("admin")
	if httpAddr == "" || adminAddr == "" {
		return "", "", fmt.Errorf("%s: [http] listen and [admin] listen are required", path)
	}
	return httpAddr, adminAddr, nil
}

// proxy is the set of event loops.
type proxy struct {
	loops []*loop
	addr  string // the listening address (the port resolved when 0 was asked)
}

// benchHosts is the route table: the 1,001 hosts bench/load configures, so
// that lookups hit as they do in edgegate. Every host, listed or not, goes
// to the one backend set (the pods); the table exists to pay for a lookup.
var benchHosts = func() map[string]int {
	m := map[string]int{"bench.test": 0}
	for i := range 1000 {
		m[fmt.Sprintf("h%04d.bench.test", i)] = 0
	}
	return m
}()

// start opens n loops listening on addr and proxying to the backends.
func start(addr string, backends []string, n int) (*proxy, error) {
	if len(backends) == 0 {
		return nil, fmt.Errorf("no backends (set EDGEGATE_BENCH_PODS=ip:port,...)")
	}
	p := &proxy{}
	for i := range n {
		l, err := newLoop(addr, backends)
		if err != nil {
			p.stop()
			return nil, err
		}
		if i == 0 { // later loops share the port the first one got
			sa, err := unix.Getsockname(l.lfd)
			if err != nil {
				return nil, err
			}
			addr = sockaddrString(sa)
			p.addr = addr
		}
		p.loops = append(p.loops, l)
	}
	for _, l := range p.loops {
		go l.run()
	}
	return p, nil
}

// stop wakes every loop through its eventfd and waits until each has
// closed its sockets.
func (p *proxy) stop() {
	var wg sync.WaitGroup
	for _, l := range p.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.stop()
		}()
	}
	wg.Wait()
}

// stats lists the requests counted by each loop, then the process's heap
// allocations and GC cycles so far (to check that requests allocate nothing).
func (p *proxy) stats() string {
	var parts []string
	for _, l := range p.loops {
		parts = append(parts, strconv.FormatUint(l.requests.Load(), 10))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return fmt.Sprintf("requests %s; mallocs %d; gc %d", strings.Join(parts, " "), ms.Mallocs, ms.NumGC)
}

// listenReusePort opens a non-blocking SO_REUSEPORT listening socket.
func listenReusePort(addr string) (int, error) {
	sa, err := sockaddr(addr)
	if err != nil {
		return -1, err
	}
	fd, err := socket(sa)
	if err != nil {
		return -1, err
	}
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", addr, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// socket makes a non-blocking TCP socket of sa's family.
func socket(sa unix.Sockaddr) (int, error) {
	family := unix.AF_INET
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	return unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
}

// sockaddr resolves host:port (a name is looked up once, at start).
func sockaddr(hostport string) (unix.Sockaddr, error) {
	a, err := net.ResolveTCPAddr("tcp", hostport)
	if err != nil {
		return nil, err
	}
	if ip4 := a.IP.To4(); ip4 != nil || a.IP == nil {
		sa := &unix.SockaddrInet4{Port: a.Port}
		if ip4 != nil {
			copy(sa.Addr[:], ip4)
		}
		return sa, nil
	}
	sa := &unix.SockaddrInet6{Port: a.Port}
	copy(sa.Addr[:], a.IP.To16())
	return sa, nil
}

// sockaddrString formats sa as host:port.
func sockaddrString(sa unix.Sockaddr) string {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
	}
	return ""
}
