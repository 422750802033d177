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
// written only by the snapshot builder (Acquire, Retain) and read lock-free
// through the Endpoint pointers the snapshots carry.
type Registry struct {
	cfg RegistryConfig

	mu        sync.Mutex
	endpoints map[string]*registryEntry
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
	return &Registry{cfg: cfg, endpoints: make(map[string]*registryEntry)}
}

// Acquire returns the endpoint for addr, creating it on first use. The same
// address always yields the same *Endpoint while it is registered.
func (r *Registry) Acquire(addr string) *Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.endpoints[addr]; ok {
		e.unused = time.Time{}
		return e.ep
	}
	ep := &Endpoint{Addr: addr}
	if r.cfg.NewTransport != nil {
		ep.Transport = r.cfg.NewTransport(addr)
	}
	r.endpoints[addr] = &registryEntry{ep: ep}
	return ep
}

// Retain is called after a snapshot is published with the set of addresses it
// uses. Endpoints outside the set start their drain grace period; endpoints
// whose grace period has passed are released. It returns how many were
// released.
func (r *Registry) Retain(inUse func(addr string) bool) int {
	now := r.cfg.Now()
	var drop []*Endpoint
	r.mu.Lock()
	for addr, e := range r.endpoints {
		switch {
		case inUse(addr):
			e.unused = time.Time{}
		case e.unused.IsZero():
			e.unused = now
		case now.Sub(e.unused) >= r.cfg.DrainGrace && e.ep.InFlight() == 0:
			delete(r.endpoints, addr)
			drop = append(drop, e.ep)
		}
	}
	r.mu.Unlock()
	if r.cfg.CloseTransport != nil {
		for _, ep := range drop {
			if ep.Transport != nil {
				r.cfg.CloseTransport(ep.Transport)
			}
		}
	}
	return len(drop)
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
