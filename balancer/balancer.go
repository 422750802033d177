// Package balancer owns live upstream state: one long-lived Endpoint per pod
// address (in-flight count, connection pool, health) kept in a Registry that
// outlives route snapshots, and the policies that pick an Endpoint for a
// request. Snapshots only hold pointers to these Endpoints, so swapping a
// snapshot never resets health or drops pooled connections.
package balancer

import (
	"errors"
	"sync/atomic"
)

// ErrNoEndpoint is returned when a backend has no ready endpoint.
var ErrNoEndpoint = errors.New("balancer: no ready endpoint")

// Endpoint is the live state of one upstream address ("10.1.2.3:8080" or
// "[fd00::1]:8080"). It is shared by every snapshot that routes to the
// address. All fields are safe for concurrent use.
type Endpoint struct {
	// Addr is the dialable host:port. Immutable.
	Addr string

	// Transport is the connection pool for Addr, created once by the
	// Registry's NewTransport hook. Its concrete type belongs to the caller
	// (the proxy stores a *fasthttp.HostClient); nil when no hook is set.
	Transport any

	inFlight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
}

// Begin records the start of a request to the endpoint.
func (e *Endpoint) Begin() { e.inFlight.Add(1); e.requests.Add(1) }

// End records the end of a request; failed reports a transport failure
// (refused, reset, timeout), not an HTTP error status.
func (e *Endpoint) End(failed bool) {
	e.inFlight.Add(-1)
	if failed {
		e.failures.Add(1)
	}
}

// InFlight is the number of requests currently in progress.
func (e *Endpoint) InFlight() int64 { return e.inFlight.Load() }

// Requests is the total number of requests started.
func (e *Endpoint) Requests() uint64 { return e.requests.Load() }

// Failures is the total number of transport failures.
func (e *Endpoint) Failures() uint64 { return e.failures.Load() }

// Policy picks an endpoint from an immutable list. Implementations must be
// safe for concurrent use, must not block, and must not allocate.
type Policy interface {
	Pick(eps []*Endpoint) *Endpoint
}

// RoundRobin cycles through the endpoints with an atomic counter. The zero
// value is ready to use.
type RoundRobin struct {
	next atomic.Uint64
}

// Pick returns the next endpoint in turn, or nil when eps is empty.
func (r *RoundRobin) Pick(eps []*Endpoint) *Endpoint {
	switch len(eps) {
	case 0:
		return nil
	case 1:
		return eps[0]
	}
	n := r.next.Add(1) - 1
	return eps[n%uint64(len(eps))]
}
