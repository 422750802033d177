// Package podnet is the "pod network" of edgegate's end-to-end tests: a
// Linux network namespace joined to the host by a veth pair and routed from
// the host the way an edge VM routes to a pod CIDR.
//
// The API server rejects loopback addresses in EndpointSlices, so test pods
// cannot listen on 127.0.0.1. Instead each Network creates a namespace
// "egpod-<pid>-<random>" holding:
//
//	host:   eg<id>h  10.244.X.1/24       fd00:ed9e:X::1/64
//	netns:  eth0     10.244.X.2/24       fd00:ed9e:X::2/64    default routes via the host end
//	pods:   eth0     10.244.X.10../32    fd00:ed9e:X::a../128 (AllocIP, AllocIPv6)
//
// X is picked at random per Network (1..254), skipping subnets that already
// have a route and holding a lock file per X, so test packages running in
// parallel do not collide. Every address is private to this machine; all
// traffic stays between the host and the namespace.
//
// Sockets are created inside the namespace by Listen (the calling OS thread
// enters the namespace, creates the socket and leaves); the socket stays in
// the namespace. NewPod adds an HTTP server that echoes each request as JSON.
//
// Setup runs iproute2's `ip` and needs root (CAP_NET_ADMIN and
// CAP_SYS_ADMIN). ForTest skips the test without root. Namespaces left by a
// process that died are removed by the next New.
package podnet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Name prefix of the namespaces this package creates.
const nsPrefix = "egpod-"

// netnsDir is where `ip netns` mounts named namespaces.
const netnsDir = "/run/netns"

// lockDir holds one lock file per subnet index in use.
const lockDir = "/run/edgegate-podnet"

// First host part of pod addresses; .1 is the host, .2 the namespace.
const firstPod = 10

// Config configures New. The zero value is ready to use.
type Config struct {
	// Name of the network namespace. Default: "egpod-<pid>-<random>".
	Name string
	// Subnet selects the pod networks 10.244.<Subnet>.0/24 and
	// fd00:ed9e:<Subnet>::/64 (1..254). Default: a random free one.
	Subnet int
}

// Network is a pod network namespace. Its methods may be called
// concurrently.
type Network struct {
	name     string // netns name
	hostIf   string // host end of the veth pair
	subnet   int
	podCIDR  netip.Prefix
	podCIDR6 netip.Prefix
	lock     *os.File

	mu        sync.Mutex
	next      int // next pod host part (v4)
	next6     int // next pod host part (v6)
	listeners []net.Listener
	pods      []*Pod
	closed    bool
}

// New creates the namespace, the veth pair, the addresses and the routes.
func New(cfg Config) (*Network, error) {
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("podnet: iproute2 `ip` not found: %w", err)
	}
	cleanStale()
	id := randHex(3)
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), id)
	}
	n := &Network{name: cfg.Name, hostIf: "eg" + id + "h", next: firstPod, next6: firstPod}
	var err error
	if n.subnet, n.lock, err = lockSubnet(cfg.Subnet); err != nil {
		return nil, err
	}
	x := n.subnet
	n.podCIDR = netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", x))
	n.podCIDR6 = netip.MustParsePrefix(fmt.Sprintf("fd00:ed9e:%x::/64", x))
	hostIP, nsIP := n.v4(1), n.v4(2)
	hostIP6, nsIP6 := n.v6(1), n.v6(2)

	steps := [][]string{
		{"netns", "add", n.name},
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", "eth0", "netns", n.name},
		{"addr", "add", hostIP.String() + "/24", "dev", n.hostIf},
		{"addr", "add", hostIP6.String() + "/64", "dev", n.hostIf, "nodad"},
		{"link", "set", n.hostIf, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
		{"-n", n.name, "addr", "add", nsIP.String() + "/24", "dev", "eth0"},
		{"-n", n.name, "addr", "add", nsIP6.String() + "/64", "dev", "eth0", "nodad"},
		{"-n", n.name, "link", "set", "eth0", "up"},
		{"-n", n.name, "route", "add", "default", "via", hostIP.String()},
		{"-6", "-n", n.name, "route", "add", "default", "via", hostIP6.String()},
	}
	for i, args := range steps {
		if err := ip(args...); err != nil {
			if i > 0 {
				_ = n.teardown()
			}
			n.lock.Close()
			return nil, err
		}
	}
	return n, nil
}

// ForTest creates a Network that is closed when the test ends. It skips the
// test without root.
func ForTest(t testing.TB) *Network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("podnet: needs root: the pod network is a network namespace with a veth pair " +
			"(run the tests as root, as CI does)")
	}
	n, err := New(Config{})
	if err != nil {
		t.Fatalf("podnet: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("podnet: close: %v", err)
		}
	})
	return n
}

// Name is the network namespace's name (as in `ip netns list`).
func (n *Network) Name() string { return n.name }

// HostInterface is the host end of the veth pair.
func (n *Network) HostInterface() string { return n.hostIf }

// PodCIDR is the IPv4 pod network, 10.244.X.0/24.
func (n *Network) PodCIDR() netip.Prefix { return n.podCIDR }

// PodCIDR6 is the IPv6 pod network, fd00:ed9e:X::/64.
func (n *Network) PodCIDR6() netip.Prefix { return n.podCIDR6 }

// HostIP is the host's address on the pod network (10.244.X.1); connections
// from the host to pods come from it.
func (n *Network) HostIP() netip.Addr { return n.v4(1) }

// HostIP6 is the host's IPv6 address on the pod network (fd00:ed9e:X::1).
func (n *Network) HostIP6() netip.Addr { return n.v6(1) }

// AllocIP adds a fresh IPv4 address (10.244.X.10 and up) inside the
// namespace and returns it. It panics when the subnet is exhausted (245
// addresses) or `ip` fails, which only a broken test setup causes.
func (n *Network) AllocIP() netip.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.next > 254 {
		panic("podnet: IPv4 pod addresses exhausted in " + n.podCIDR.String())
	}
	a := n.v4(n.next)
	n.next++
	if err := ip("-n", n.name, "addr", "add", a.String()+"/32", "dev", "eth0"); err != nil {
		panic(err)
	}
	return a
}

// AllocIPv6 is AllocIP for IPv6 (fd00:ed9e:X::a and up, without DAD so the
// address is usable at once).
func (n *Network) AllocIPv6() netip.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.next6 > 0xffff {
		panic("podnet: IPv6 pod addresses exhausted in " + n.podCIDR6.String())
	}
	a := n.v6(n.next6)
	n.next6++
	if err := ip("-n", n.name, "addr", "add", a.String()+"/128", "dev", "eth0", "nodad"); err != nil {
		panic(err)
	}
	return a
}

// Listen is net.Listen inside the namespace: the socket is created there and
// stays there. Close closes the listeners Listen returned that are still
// open.
func (n *Network) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		l.Close()
		return nil, errors.New("podnet: network closed")
	}
	n.listeners = append(n.listeners, l)
	return l, nil
}

// Do runs fn on an OS thread that is inside the namespace, for creating
// other kinds of sockets there. fn must not start goroutines that expect to
// be in the namespace: only the calling thread is.
func (n *Network) Do(fn func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, n.name))
	if err != nil {
		return fmt.Errorf("podnet: open netns: %w", err)
	}
	defer target.Close()

	// A fresh goroutine: if the thread cannot return to the host namespace,
	// the goroutine exits still locked and the runtime discards the thread.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("podnet: open own netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("podnet: setns %s: %w", n.name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("podnet: setns back: %w", err)) // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Close closes the pods and listeners made through n, deletes the veth pair
// and the namespace, and releases the subnet. It is safe to call more than
// once.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	pods, listeners := n.pods, n.listeners
	n.pods, n.listeners = nil, nil
	n.mu.Unlock()

	for _, p := range pods {
		p.Close()
	}
	for _, l := range listeners {
		_ = l.Close() // may be closed already by its owner
	}
	err := n.teardown()
	n.lock.Close()
	return err
}

// teardown deletes the veth pair (both ends) and the namespace. Deleting the
// link first matters: open sockets keep a namespace alive after `ip netns
// del`, and with it the veth pair and the host's routes.
func (n *Network) teardown() error {
	var errs []error
	if linkExists(n.hostIf) {
		errs = append(errs, ip("link", "del", n.hostIf))
	}
	if _, err := os.Stat(filepath.Join(netnsDir, n.name)); err == nil {
		errs = append(errs, ip("netns", "del", n.name))
	}
	return errors.Join(errs...)
}

func (n *Network) v4(host int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 244, byte(n.subnet), byte(host)})
}

func (n *Network) v6(host int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:ed9e:%x::%x", n.subnet, host))
}

// lockSubnet picks a subnet index without a route on the host and holds an
// exclusive lock on it for the life of the Network.
func lockSubnet(want int) (int, *os.File, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return 0, nil, fmt.Errorf("podnet: %w", err)
	}
	try := func(x int) (*os.File, error) {
		f, err := os.OpenFile(filepath.Join(lockDir, strconv.Itoa(x)+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, fmt.Errorf("podnet: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			return nil, fmt.Errorf("podnet: subnet %d in use by another test process", x)
		}
		// Under the lock: nothing else of ours uses it; make sure nothing
		// else on the host does either.
		if routed(fmt.Sprintf("10.244.%d.0/24", x)) || routed(fmt.Sprintf("fd00:ed9e:%x::/64", x)) {
			f.Close()
			return nil, fmt.Errorf("podnet: subnet 10.244.%d.0/24 already routed on this host", x)
		}
		return f, nil
	}
	if want != 0 {
		if want < 1 || want > 254 {
			return 0, nil, fmt.Errorf("podnet: subnet %d out of range 1..254", want)
		}
		f, err := try(want)
		return want, f, err
	}
	start := randInt(254)
	for i := range 254 {
		x := 1 + (start+i)%254
		if f, err := try(x); err == nil {
			return x, f, nil
		}
	}
	return 0, nil, errors.New("podnet: no free subnet in 10.244.1-254.0/24")
}

// routed reports whether the host has a route for exactly prefix.
func routed(prefix string) bool {
	fam := "-4"
	if strings.Contains(prefix, ":") {
		fam = "-6"
	}
	out, err := exec.Command("ip", fam, "route", "show", "exact", prefix).Output()
	return err == nil && strings.TrimSpace(string(out)) != ""
}

// cleanStale deletes namespaces named egpod-<pid>-* whose process is gone,
// with their veth pairs. Errors are ignored: it is housekeeping.
func cleanStale() {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		_ = ip("-n", e.Name(), "link", "del", "eth0")
		_ = ip("netns", "del", e.Name())
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// ip runs iproute2's ip with args.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("podnet: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randInt(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		return os.Getpid() % n
	}
	return int(v.Int64())
}
