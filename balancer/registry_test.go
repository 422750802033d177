package balancer

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for RegistryConfig.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// transport is what the test NewTransport hook returns.
type transport struct{ addr string }

// hooks records NewTransport and CloseTransport calls.
type hooks struct {
	mu     sync.Mutex
	made   map[string]int
	closed []string
}

func newHooks() *hooks { return &hooks{made: map[string]int{}} }

func (h *hooks) newTransport(addr string) any {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.made[addr]++
	return &transport{addr: addr}
}

func (h *hooks) closeTransport(t any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = append(h.closed, t.(*transport).addr)
}

func (h *hooks) closedAddrs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := slices.Clone(h.closed)
	slices.Sort(s)
	return s
}

const grace = 30 * time.Second

func newTestRegistry() (*Registry, *hooks, *fakeClock) {
	h, clk := newHooks(), newFakeClock()
	r := NewRegistry(RegistryConfig{
		NewTransport:   h.newTransport,
		CloseTransport: h.closeTransport,
		DrainGrace:     grace,
		Now:            clk.Now,
	})
	return r, h, clk
}

// retain reconciles r with the addresses inUse through the registry's API,
// as the watcher's publish does: addresses still in use are acquired again
// (ending any grace period), every other one is released, then a sweep. It
// returns how many endpoints the sweep dropped.
func retain(r *Registry, inUse func(string) bool) int {
	var used, unused []string
	r.Each(func(ep *Endpoint) {
		if inUse(ep.Addr) {
			used = append(used, ep.Addr)
		} else {
			unused = append(unused, ep.Addr)
		}
	})
	for _, a := range used {
		r.Acquire(a)
	}
	r.Release(unused)
	return r.Sweep()
}

func inSet(addrs ...string) func(string) bool {
	return func(a string) bool { return slices.Contains(addrs, a) }
}

func TestRegistryAcquire(t *testing.T) {
	t.Parallel()
	r, h, _ := newTestRegistry()
	a1 := r.Acquire("10.0.0.1:80")
	b := r.Acquire("10.0.0.2:80")
	a2 := r.Acquire("10.0.0.1:80")
	if a1 != a2 {
		t.Errorf("Acquire returned %p then %p for the same address", a1, a2)
	}
	if a1 == b {
		t.Error("two addresses share an endpoint")
	}
	if a1.Addr != "10.0.0.1:80" || b.Addr != "10.0.0.2:80" {
		t.Errorf("Addr %q, %q", a1.Addr, b.Addr)
	}
	if tr, ok := a1.Transport.(*transport); !ok || tr.addr != a1.Addr {
		t.Errorf("Transport %#v, want the hook's for %s", a1.Transport, a1.Addr)
	}
	if h.made["10.0.0.1:80"] != 1 || h.made["10.0.0.2:80"] != 1 {
		t.Errorf("NewTransport calls %v, want one per address", h.made)
	}
	if r.Len() != 2 {
		t.Errorf("Len %d, want 2", r.Len())
	}
}

func TestRegistryAcquireConcurrent(t *testing.T) {
	t.Parallel()
	r, h, _ := newTestRegistry()
	const n = 16
	got := make([]*Endpoint, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i] = r.Acquire("10.0.0.1:80") })
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] {
			t.Fatalf("goroutine %d got %p, goroutine 0 %p", i, got[i], got[0])
		}
	}
	if h.made["10.0.0.1:80"] != 1 {
		t.Errorf("NewTransport called %d times, want 1", h.made["10.0.0.1:80"])
	}
}

func TestRegistryNoHooks(t *testing.T) {
	t.Parallel()
	r := NewRegistry(RegistryConfig{})
	if r.cfg.DrainGrace != 30*time.Second {
		t.Errorf("default DrainGrace %v, want 30s", r.cfg.DrainGrace)
	}
	if r.cfg.Now == nil {
		t.Error("default clock not set")
	}
	ep := r.Acquire("10.0.0.1:80")
	if ep.Transport != nil {
		t.Errorf("Transport %v without a NewTransport hook, want nil", ep.Transport)
	}
	// Releasing without a CloseTransport hook must not panic.
	r.cfg.Now = func() time.Time { return time.Unix(0, 0) }
	retain(r, inSet())
	r.cfg.Now = func() time.Time { return time.Unix(0, 0).Add(time.Hour) }
	if n := retain(r, inSet()); n != 1 || r.Len() != 0 {
		t.Errorf("released %d, Len %d, want 1, 0", n, r.Len())
	}
}

// TestRegistryDrainGrace walks one endpoint through the drain grace period with
// an injected clock. Each step advances the clock, optionally acts, then
// reconciles it (retain) with the addresses in use.
func TestRegistryDrainGrace(t *testing.T) {
	t.Parallel()
	const a, b = "10.0.0.1:80", "10.0.0.2:80"
	type step struct {
		advance  time.Duration
		act      func(r *Registry, a *Endpoint) // before retain; a is a's endpoint
		inUse    []string
		released int      // retain's result
		closed   []string // CloseTransport calls so far, sorted
		len      int
	}
	// Not through Acquire, which would stop the drain.
	begin := func(_ *Registry, ep *Endpoint) { ep.Begin() }
	end := func(_ *Registry, ep *Endpoint) { ep.End(false) }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{
			name: "in use: never released",
			steps: []step{
				{inUse: []string{a, b}, len: 2},
				{advance: time.Hour, inUse: []string{a, b}, len: 2},
			},
		},
		{
			name: "released after the grace, not before",
			steps: []step{
				{inUse: []string{b}, len: 2},                                                             // a starts draining
				{advance: grace - time.Nanosecond, inUse: []string{b}, len: 2},                           // just short
				{advance: time.Nanosecond, inUse: []string{b}, released: 1, closed: []string{a}, len: 1}, // exactly the grace
				{advance: time.Hour, inUse: []string{b}, closed: []string{a}, len: 1},
			},
		},
		{
			name: "grace counts from the first retain that left it out",
			steps: []step{
				{advance: time.Hour, inUse: []string{b}, len: 2}, // time before it was left out does not count
				{advance: grace / 2, inUse: []string{b}, len: 2},
				{advance: grace / 2, inUse: []string{b}, released: 1, closed: []string{a}, len: 1},
			},
		},
		{
			name: "back in use during the grace: the clock restarts",
			steps: []step{
				{inUse: []string{b}, len: 2},
				{advance: grace / 2, inUse: []string{a, b}, len: 2},
				{advance: grace / 2, inUse: []string{b}, len: 2}, // draining again from here
				{advance: grace - time.Second, inUse: []string{b}, len: 2},
				{advance: time.Second, inUse: []string{b}, released: 1, closed: []string{a}, len: 1},
			},
		},
		{
			name: "Acquire during the grace stops the drain",
			steps: []step{
				{inUse: []string{b}, len: 2},
				{advance: grace / 2, act: func(r *Registry, _ *Endpoint) { r.Acquire(a) }, inUse: []string{b}, len: 2}, // restarts now
				{advance: grace / 2, inUse: []string{b}, len: 2},
				{advance: grace / 2, inUse: []string{b}, released: 1, closed: []string{a}, len: 1},
			},
		},
		{
			name: "in flight past the grace: kept until it ends",
			steps: []step{
				{act: begin, inUse: []string{b}, len: 2},
				{advance: grace, inUse: []string{b}, len: 2},
				{advance: time.Hour, inUse: []string{b}, len: 2},
				{act: end, inUse: []string{b}, released: 1, closed: []string{a}, len: 1},
			},
		},
		{
			name: "all unused",
			steps: []step{
				{inUse: nil, len: 2},
				{advance: grace, inUse: nil, released: 2, closed: []string{a, b}, len: 0},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, h, clk := newTestRegistry()
			epA := r.Acquire(a)
			r.Acquire(b)
			for i, s := range tc.steps {
				clk.Advance(s.advance)
				if s.act != nil {
					s.act(r, epA)
				}
				if n := retain(r, inSet(s.inUse...)); n != s.released {
					t.Errorf("step %d: retain released %d, want %d", i, n, s.released)
				}
				if got := h.closedAddrs(); !slices.Equal(got, s.closed) {
					t.Errorf("step %d: CloseTransport calls %v, want %v", i, got, s.closed)
				}
				if n := r.Len(); n != s.len {
					t.Errorf("step %d: Len %d, want %d", i, n, s.len)
				}
			}
			// A released address comes back as a new endpoint with a new
			// transport; a kept one is the same pointer.
			released := slices.Contains(h.closedAddrs(), a)
			if again := r.Acquire(a); (again != epA) != released {
				t.Errorf("re-Acquire after release=%v returned the same endpoint: %v", released, again == epA)
			}
			if want := 1 + btoi(released); h.made[a] != want {
				t.Errorf("NewTransport(%s) called %d times, want %d", a, h.made[a], want)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestRegistryEach(t *testing.T) {
	t.Parallel()
	r, _, clk := newTestRegistry()
	addrs := []string{"10.0.0.3:80", "10.0.0.1:80", "[fd00::1]:8080"}
	want := map[string]*Endpoint{}
	for _, a := range addrs {
		want[a] = r.Acquire(a)
	}
	// Draining endpoints are still listed.
	retain(r, inSet(addrs[0]))
	clk.Advance(grace / 2)
	retain(r, inSet(addrs[0]))
	if r.Len() != len(addrs) {
		t.Errorf("Len %d, want %d", r.Len(), len(addrs))
	}
	got := map[string]*Endpoint{}
	r.Each(func(ep *Endpoint) {
		if _, dup := got[ep.Addr]; dup {
			t.Errorf("Each visited %s twice", ep.Addr)
		}
		got[ep.Addr] = ep
	})
	if len(got) != len(want) {
		t.Errorf("Each visited %d endpoints, want %d", len(got), len(want))
	}
	for a, ep := range want {
		if got[a] != ep {
			t.Errorf("Each: %s -> %p, want %p", a, got[a], ep)
		}
	}
}

// TestRegistryReleaseSweep is the incremental path an endpoint-only publish
// takes: Release starts the grace of exactly the addresses given, Sweep
// drops them once it has passed and nothing is in flight, and an address
// acquired again in time keeps its endpoint.
func TestRegistryReleaseSweep(t *testing.T) {
	t.Parallel()
	r, h, clk := newTestRegistry()
	a, b := r.Acquire("10.0.0.1:80"), r.Acquire("10.0.0.2:80")
	r.Acquire("10.0.0.3:80")
	r.Release([]string{a.Addr, b.Addr, "10.9.9.9:80"}) // an unknown address is ignored
	if n := r.Sweep(); n != 0 {
		t.Fatalf("Sweep right after Release dropped %d", n)
	}
	clk.Advance(grace / 2)
	if got := r.Acquire(b.Addr); got != b {
		t.Fatal("b re-acquired during its grace got a new endpoint")
	}
	r.Release([]string{a.Addr}) // a second Release keeps the first start
	a.Begin()
	clk.Advance(grace / 2)
	if n := r.Sweep(); n != 0 {
		t.Fatalf("Sweep dropped %d endpoints with a request in flight on a", n)
	}
	a.End(false)
	if n := r.Sweep(); n != 1 || r.Len() != 2 {
		t.Fatalf("Sweep after grace: dropped %d, Len %d; want 1, 2", n, r.Len())
	}
	if got := h.closedAddrs(); !slices.Equal(got, []string{a.Addr}) {
		t.Errorf("closed transports %v, want [%s]", got, a.Addr)
	}
	if r.Acquire(a.Addr) == a {
		t.Error("a dropped endpoint came back as the same *Endpoint")
	}
	clk.Advance(2 * grace)
	if n := r.Sweep(); n != 0 {
		t.Errorf("Sweep dropped %d endpoints never released (b re-acquired, the third in use)", n)
	}
}
