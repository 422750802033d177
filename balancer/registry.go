package balancer

import (
	"sync"
	"time"
)

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	// NewTransport, if set, creates the connection pool stored in
	// Endpoint.Transport when an address is first seen. It must not block.
	NewTransport func(addr string) any

	// CloseTransport, if set, releases a transport when its endpoint is
	// finally dropped (after the drain grace period).
	CloseTransport func(t any)

	// DrainGrace is how long an endpoint that no snapshot uses any more is
	// kept (with its pool and counters) before it is released, so requests
	// still in flight on an old snapshot finish and a quickly returning pod
	// keeps its state. Default 30s.
	DrainGrace time.Duration

	// Now returns the current time; default time.Now. Tests inject a clock.
	Now func() time.Time
}

// Registry holds the live Endpoint for every address any snapshot uses. It is
// written only by the snapshot builder (Acquire, Release, Sweep) and read lock-free
// through the Endpoint pointers the snapshots carry.
type Registry struct {
	cfg RegistryConfig

	mu        sync.Mutex
	endpoints map[string]*registryEntry
	draining  map[string]*registryEntry // the entries of endpoints with unused set
}

type registryEntry struct {
	ep     *Endpoint
	unused time.Time // zero while a published snapshot uses the endpoint
}

// NewRegistry returns an empty registry.
func NewRegistry(cfg RegistryConfig) *Registry {
	if cfg.DrainGrace <= 0 {
		cfg.DrainGrace = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Registry{cfg: cfg, endpoints: make(map[string]*registryEntry), draining: make(map[string]*registryEntry)}
}

// Acquire returns the endpoint for addr, creating it on first use. The same
// address always yields the same *Endpoint while it is registered.
func (r *Registry) Acquire(addr string) *Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.endpoints[addr]; ok {
		if !e.unused.IsZero() {
			e.unused = time.Time{}
			delete(r.draining, addr)
		}
		return e.ep
	}
	ep := &Endpoint{Addr: addr}
	if r.cfg.NewTransport != nil {
		ep.Transport = r.cfg.NewTransport(addr)
	}
	r.endpoints[addr] = &registryEntry{ep: ep}
	return ep
}

// Release starts the drain grace period of the endpoints at addrs, which the
// snapshot just published no longer uses (an address acquired again before
// its grace ends keeps its endpoint). Unknown addresses are ignored.
func (r *Registry) Release(addrs []string) {
	if len(addrs) == 0 {
		return
	}
	now := r.cfg.Now()
	r.mu.Lock()
	for _, a := range addrs {
		if e, ok := r.endpoints[a]; ok {
			r.startDrain(a, e, now)
		}
	}
	r.mu.Unlock()
}

// Sweep releases the draining endpoints whose grace period has passed and
// that have no request in flight, and returns how many. It visits only
// draining endpoints.
func (r *Registry) Sweep() int {
	now := r.cfg.Now()
	r.mu.Lock()
	drop := r.sweepLocked(now)
	r.mu.Unlock()
	r.close(drop)
	return len(drop)
}

func (r *Registry) startDrain(addr string, e *registryEntry, now time.Time) {
	if e.unused.IsZero() {
		e.unused = now
		r.draining[addr] = e
	}
}

func (r *Registry) sweepLocked(now time.Time) []*Endpoint {
	var drop []*Endpoint
	for addr, e := range r.draining {
		if now.Sub(e.unused) >= r.cfg.DrainGrace && e.ep.InFlight() == 0 {
			delete(r.draining, addr)
			delete(r.endpoints, addr)
			drop = append(drop, e.ep)
		}
	}
	return drop
}

func (r *Registry) close(drop []*Endpoint) {
	if r.cfg.CloseTransport == nil {
		return
	}
	for _, ep := range drop {
		if ep.Transport != nil {
			r.cfg.CloseTransport(ep.Transport)
		}
	}
}

// Len is the number of registered endpoints, draining ones included.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.endpoints)
}

// Each calls fn for every registered endpoint, in no particular order. fn
// must not call back into the registry.
func (r *Registry) Each(fn func(*Endpoint)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.endpoints {
		fn(e.ep)
	}
}
