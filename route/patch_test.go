package route

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestHashIgnoresBackendLayout: the same routes over the same backends
// hash equally whatever order the backends are in and whatever free (nil)
// slots lie between them; peers compare these hashes.
func TestHashIgnoresBackendLayout(t *testing.T) {
	t.Parallel()
	mk := func(layout []int, swap bool) *Snapshot { // layout[i]: slot of backend i
		n := slices.Max(layout) + 1
		backends := make([]*Backend, n)
		for i, slot := range layout {
			backends[slot] = &Backend{Namespace: "ns", Service: fmt.Sprintf("s%d", i), Port: "80", Addrs: []string{fmt.Sprintf("10.0.0.%d:80", i+1)}}
		}
		first, second := layout[0], layout[1]
		if swap {
			first, second = second, first
		}
		routes := []Route{
			{Host: "a.test", Path: "/", Ingress: IngressRef{"ns", "a"}, Backend: first},
			{Host: "a.test", Path: "/x", Type: Exact, Ingress: IngressRef{"ns", "a"}, Backend: second},
			{Host: "*.b.test", Path: "/", Ingress: IngressRef{"ns", "b"}, Backend: layout[2]},
		}
		s, _ := New(routes, backends, &Route{Ingress: IngressRef{"ns", "d"}, Backend: layout[1]})
		return s
	}
	a, b, c := mk([]int{0, 1, 2}, false), mk([]int{2, 0, 1}, false), mk([]int{4, 1, 2}, false)
	if a.Hash() != b.Hash() || a.Hash() != c.Hash() {
		t.Errorf("hashes differ by backend layout: %x %x %x", a.Hash(), b.Hash(), c.Hash())
	}
	if d := mk([]int{0, 1, 2}, true); d.Hash() == a.Hash() {
		t.Error("routes pointing at other backends kept the hash")
	}
}

// TestPatchMatchesNew patches random host tables into a random snapshot and
// checks the result against a snapshot built from scratch with the same
// content: same hash, same View (routes name backends by ID), same answers,
// and every table that was not patched is shared, not copied.
func TestPatchMatchesNew(t *testing.T) {
	t.Parallel()
	hosts := []string{"", "a.test", "b.test", "*.w.test", "x.w.test", "c.test", "*.c.test"}
	paths := []string{"/", "/a", "/a/b", "/b", "/c/"}
	backendIDs := []string{"s0", "s1", "s2", "s3", "s4", "s5"}
	ran := 0
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		randomRoutes := func(host string, n int) []Route { // claim order, may conflict
			var rs []Route
			for range n {
				rs = append(rs, Route{
					Host: host, Path: paths[rng.IntN(len(paths))], Type: PathType(rng.IntN(2)),
					Ingress:       IngressRef{"ns", fmt.Sprintf("i%d", rng.IntN(4))},
					Backend:       rng.IntN(len(backendIDs)), // an ID index; slots are assigned below
					RedirectHTTPS: rng.IntN(3) == 0,
				})
			}
			return rs
		}
		content := make(map[string][]Route) // host -> routes, Backend = ID index
		for _, h := range hosts {
			if rng.IntN(3) > 0 {
				content[h] = randomRoutes(h, 1+rng.IntN(4))
			}
		}
		// Base: backends in ID order, one slot each.
		baseBackends := make([]*Backend, len(backendIDs))
		for i, id := range backendIDs {
			baseBackends[i] = &Backend{Namespace: "ns", Service: id, Port: "80", Addrs: []string{fmt.Sprintf("10.0.1.%d:80", i+1)}}
		}
		var all []Route
		for _, h := range hosts {
			all = append(all, content[h]...)
		}
		base, _ := New(all, baseBackends, nil)

		// Patch: new content for some hosts; the backends get a new
		// layout where the patched tables need it: slot 0 freed, a
		// seventh backend appended.
		patch := make(map[string][]Route)
		next := make(map[string][]Route)
		for _, h := range hosts {
			next[h] = content[h]
			if rng.IntN(2) == 0 {
				rs := randomRoutes(h, rng.IntN(4))
				keep, _ := Claim(rs)
				var kept []Route
				for i, r := range rs {
					if keep[i] {
						kept = append(kept, r)
					}
				}
				next[h] = kept
				patch[h] = kept
			}
		}
		used := make(map[int]bool)
		for _, rs := range next {
			for _, r := range rs {
				used[r.Backend] = true
			}
		}
		if used[0] {
			continue // slot 0 must be free for this layout; other seeds cover it
		}
		extra := &Backend{Namespace: "ns", Service: "s6", Port: "80", Addrs: []string{"10.0.1.7:80"}}
		newBackends := append(slices.Clone(baseBackends), extra)
		newBackends[0] = nil
		for h, rs := range patch {
			rs = slices.Clone(rs)
			for i := range rs {
				if rs[i].Backend == 5 && rng.IntN(2) == 0 {
					rs[i].Backend = 6 // some routes move to the new backend
				}
			}
			patch[h] = rs
			next[h] = rs
		}
		got := base.Patch(patch, newBackends)

		// From scratch: compact backends in another order.
		var want *Snapshot
		{
			var routes []Route
			for _, h := range hosts {
				routes = append(routes, next[h]...)
			}
			order := []int{6, 5, 4, 3, 2, 1}
			slot := make(map[int]int)
			var backends []*Backend
			for _, id := range order {
				slot[id] = len(backends)
				o := newBackends[id]
				backends = append(backends, &Backend{Namespace: o.Namespace, Service: o.Service, Port: o.Port, Addrs: o.Addrs})
			}
			for i := range routes {
				routes[i].Backend = slot[routes[i].Backend]
			}
			want, _ = New(routes, backends, nil)
		}
		// Both hold backends s1..s6 (the freed slot aside), in other
		// layouts: the hashes must agree.
		ran++
		if got.Hash() != want.Hash() {
			t.Fatalf("seed %d: patched hash %x, from scratch %x", seed, got.Hash(), want.Hash())
		}
		gv, wv := viewJSON(t, got, true), viewJSON(t, want, true)
		if gv != wv {
			t.Fatalf("seed %d: patched tables differ from scratch:\n%s\n%s", seed, gv, wv)
		}
		if got.RouteCount() != want.RouteCount() {
			t.Fatalf("seed %d: RouteCount %d, want %d", seed, got.RouteCount(), want.RouteCount())
		}
		for _, h := range []string{"", "a.test", "b.test", "q.w.test", "x.w.test", "c.test", "d.c.test"} {
			for _, p := range []string{"/", "/a", "/a/b/c", "/b", "/c", "/zz"} {
				g, w := got.Match([]byte(h), []byte(p)), want.Match([]byte(h), []byte(p))
				if (g == nil) != (w == nil) || g != nil && (g.Path != w.Path || g.Ingress != w.Ingress ||
					got.Backends[g.Backend].ID() != want.Backends[w.Backend].ID()) {
					t.Fatalf("seed %d: %s%s: patched %+v, from scratch %+v", seed, h, p, g, w)
				}
			}
		}
		for _, tb := range base.Hosts() {
			if _, patched := patch[tb.Host]; !patched && got.Table(tb.Host) != tb {
				t.Fatalf("seed %d: table %q not patched but not shared", seed, tb.Host)
			}
		}
		// The base snapshot is untouched.
		if again, _ := New(all, baseBackends, nil); again.Hash() != base.Hash() {
			t.Fatalf("seed %d: Patch modified its receiver", seed)
		}
	}
	if ran < 50 {
		t.Fatalf("only %d of 300 seeds left slot 0 free; the test covers too little", ran)
	}
}

// viewJSON renders s's tables (and its used backends when usedOnly) for
// comparison, without Version, Built and hash.
func viewJSON(t *testing.T, s *Snapshot, usedOnly bool) string {
	t.Helper()
	v := s.View()
	if usedOnly {
		used := make(map[string]bool)
		for _, h := range v.Hosts {
			for _, r := range h.Routes {
				used[r.Backend] = true
			}
		}
		if v.Default != nil {
			used[v.Default.Backend] = true
		}
		v.Backends = slices.DeleteFunc(v.Backends, func(b BackendView) bool { return !used[b.ID] })
	}
	v.Version, v.Built, v.Hash = 0, "", ""
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPatchBackendsOfAndNilSlots(t *testing.T) {
	t.Parallel()
	a := &Backend{Namespace: "ns", Service: "a", Port: "80", Addrs: []string{"10.0.0.1:80"}}
	b := &Backend{Namespace: "ns", Service: "b", Port: "80", Addrs: []string{"10.0.0.2:80"}}
	s, _ := New([]Route{
		{Host: "a.test", Path: "/", Ingress: IngressRef{"ns", "a"}, Backend: 0},
		{Host: "b.test", Path: "/", Ingress: IngressRef{"ns", "b"}, Backend: 1},
	}, []*Backend{a, b}, nil)
	c := &Backend{Namespace: "ns", Service: "a", Port: "http", Addrs: []string{"10.0.0.3:80"}}
	// b.test goes away, its slot is freed; a.test gains a route to a new
	// backend of Service a.
	p := s.Patch(map[string][]Route{
		"b.test": nil,
		"a.test": {{Host: "a.test", Path: "/", Ingress: IngressRef{"ns", "a"}, Backend: 0},
			{Host: "a.test", Path: "/h", Ingress: IngressRef{"ns", "a"}, Backend: 2}},
	}, []*Backend{a, nil, c})
	if got := p.BackendsOf("ns", "a"); !slices.Equal(got, []int{0, 2}) {
		t.Errorf("BackendsOf(a) = %v, want [0 2]", got)
	}
	if got := p.BackendsOf("ns", "b"); len(got) != 0 {
		t.Errorf("BackendsOf(b) = %v, want none", got)
	}
	if got := s.BackendsOf("ns", "a"); !slices.Equal(got, []int{0}) {
		t.Errorf("base BackendsOf(a) = %v after Patch, want [0]", got)
	}
	if r := p.Match([]byte("b.test"), []byte("/")); r != nil {
		t.Errorf("removed host still matches: %+v", r)
	}
	if r := p.Match([]byte("a.test"), []byte("/h/x")); r == nil || p.Backends[r.Backend] != c {
		t.Errorf("a.test/h/x = %+v, want the new backend", r)
	}
	if p.RouteCount() != 2 || len(p.Hosts()) != 1 {
		t.Errorf("RouteCount %d, hosts %d; want 2, 1", p.RouteCount(), len(p.Hosts()))
	}
	// WithBackends over a snapshot with a free slot.
	a2 := &Backend{Namespace: "ns", Service: "a", Port: "80", Addrs: []string{"10.0.0.9:80"}}
	w := p.WithBackends([]*Backend{a2, nil, c})
	if w.Hash() == p.Hash() {
		t.Error("endpoint change over a free slot kept the hash")
	}
	v := w.View()
	if len(v.Backends) != 2 {
		t.Errorf("View lists %d backends, want 2 (free slots skipped)", len(v.Backends))
	}
}
