package podnet

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// Pod is an HTTP server on its own IP inside the namespace.
type Pod struct {
	Name string     // answered in every response
	IP   netip.Addr // inside the namespace
	Port int
	Addr string // "IP:Port", or "[IP]:Port" for IPv6

	srv      *http.Server
	done     chan struct{}
	requests atomic.Int64
	closed   atomic.Bool
}

// Echo is the JSON body a Pod answers with.
type Echo struct {
	Pod        string              `json:"pod"`
	Method     string              `json:"method"`
	Path       string              `json:"path"`  // URL path as received
	Query      string              `json:"query"` // raw query
	Host       string              `json:"host"`  // Host header
	Proto      string              `json:"proto"`
	RemoteAddr string              `json:"remoteAddr"`
	Headers    map[string][]string `json:"headers"`
}

// NewPod allocates an IPv4 address, listens on it in the namespace and
// serves HTTP: every request is answered with status 200, header
// "X-Pod: <name>" and an Echo body. Port 0 picks a free port. Close (or the
// Network's Close) stops it.
func (n *Network) NewPod(name string, port int) (*Pod, error) {
	return n.newPod(name, n.AllocIP(), port)
}

// NewPod6 is NewPod on an IPv6 address.
func (n *Network) NewPod6(name string, port int) (*Pod, error) {
	return n.newPod(name, n.AllocIPv6(), port)
}

func (n *Network) newPod(name string, addr netip.Addr, port int) (*Pod, error) {
	l, err := n.Listen("tcp", netip.AddrPortFrom(addr, uint16(port)).String())
	if err != nil {
		return nil, err
	}
	p := &Pod{
		Name: name,
		IP:   addr,
		Port: l.Addr().(*net.TCPAddr).Port,
		done: make(chan struct{}),
	}
	p.Addr = net.JoinHostPort(addr.String(), strconv.Itoa(p.Port))
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(l)
	}()
	n.mu.Lock()
	closed := n.closed
	if !closed {
		n.pods = append(n.pods, p)
	}
	n.mu.Unlock()
	if closed {
		p.Close()
		return nil, errors.New("podnet: network closed")
	}
	return p, nil
}

func (p *Pod) serve(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	e := Echo{
		Pod:        p.Name,
		Method:     r.Method,
		Path:       r.URL.Path,
		Query:      r.URL.RawQuery,
		Host:       r.Host,
		Proto:      r.Proto,
		RemoteAddr: r.RemoteAddr,
		Headers:    r.Header,
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Pod", p.Name)
	_ = json.NewEncoder(w).Encode(e)
}

// Requests is the number of requests the pod has received.
func (p *Pod) Requests() int { return int(p.requests.Load()) }

// URL is "http://<Addr>".
func (p *Pod) URL() string { return "http://" + p.Addr }

// Close stops the server at once (open connections are closed). The pod's IP
// stays on the namespace, so new connections are refused, as when a pod's
// process dies. Safe to call more than once.
func (p *Pod) Close() {
	if p.closed.Swap(true) {
		return
	}
	_ = p.srv.Close()
	<-p.done
}

// Shutdown stops the server gracefully: in-flight requests finish, idle
// connections close, new connections are refused.
func (p *Pod) Shutdown(ctx context.Context) error {
	p.closed.Store(true)
	return p.srv.Shutdown(ctx)
}
