package discovery

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

// An endpoint-only publish releases exactly the addresses no backend uses
// any more: an address that moves between two backends changed together
// keeps its endpoint (pool, counters), one that disappears drains and is
// dropped after the grace period.
func TestPublishReleasesOnlyUnusedAddresses(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	const grace = time.Minute
	reg := balancer.NewRegistry(balancer.RegistryConfig{DrainGrace: grace, Now: func() time.Time { return now }})
	w, err := New(Config{Client: fake.NewClientset(), Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := Build(scaleInput(10)) // two Services, each behind two backends (ports "http" and "80")
	w.publish(nil, first, nil)
	svcBackends := func(s *route.Snapshot, svc string) []int {
		var idx []int
		for i, b := range s.Backends {
			if b.Service == svc {
				idx = append(idx, i)
			}
		}
		return idx
	}
	a, b := svcBackends(first, scaleServiceName(0)), svcBackends(first, scaleServiceName(1))
	if len(a) != 2 || len(b) != 2 {
		t.Fatalf("backends per service: %d and %d, want 2 and 2", len(a), len(b))
	}
	moved := first.Backends[a[0]].Addrs[0] // leaves service 0, joins service 1
	gone := first.Backends[b[0]].Addrs[len(first.Backends[b[0]].Addrs)-1]
	movedEP := first.Backends[a[0]].Endpoints[0]
	before := reg.Len()

	next := slices.Clone(first.Backends)
	for _, i := range a {
		old := first.Backends[i]
		next[i] = &route.Backend{Namespace: old.Namespace, Service: old.Service, Port: old.Port,
			Addrs: slices.DeleteFunc(slices.Clone(old.Addrs), func(s string) bool { return s == moved })}
	}
	for _, i := range b {
		old := first.Backends[i]
		addrs := slices.DeleteFunc(slices.Clone(old.Addrs), func(s string) bool { return s == gone })
		addrs = append(addrs, moved)
		slices.Sort(addrs)
		next[i] = &route.Backend{Namespace: old.Namespace, Service: old.Service, Port: old.Port, Addrs: addrs}
	}
	changed := append(slices.Clone(a), b...)
	slices.Sort(changed)
	if !w.publish(first, first.WithBackends(next), changed) {
		t.Fatal("endpoint change not published")
	}

	now = now.Add(grace)
	reg.Sweep()
	if got, want := reg.Len(), before-1; got != want {
		t.Fatalf("registry holds %d endpoints after the grace period, want %d (only %s dropped)", got, want, gone)
	}
	var found *balancer.Endpoint
	reg.Each(func(ep *balancer.Endpoint) {
		if ep.Addr == gone {
			t.Errorf("%s, used by no backend, still registered", gone)
		}
		if ep.Addr == moved {
			found = ep
		}
	})
	if found != movedEP {
		t.Errorf("%s moved between backends and got a new endpoint (%p, was %p)", moved, found, movedEP)
	}
	cur := w.snap.Load()
	for _, i := range b {
		if !slices.ContainsFunc(cur.Backends[i].Endpoints, func(ep *balancer.Endpoint) bool { return ep == movedEP }) {
			t.Errorf("backend %s does not use the moved endpoint", cur.Backends[i].ID())
		}
	}
}

// A full rebuild (an Ingress change) keeps the backends it did not change:
// same *Backend, so bound endpoints and the round-robin position carry
// over, while a backend whose endpoints changed in the same rebuild is new
// and its dropped address is released after the grace period.
func TestFullRebuildKeepsUnchangedBackends(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	const grace = time.Minute
	reg := balancer.NewRegistry(balancer.RegistryConfig{DrainGrace: grace, Now: func() time.Time { return now }})
	w, err := New(Config{Client: fake.NewClientset(), Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	in := scaleInput(10) // two Services
	first, _ := Build(in)
	w.publish(nil, first, nil)
	idx := func(s *route.Snapshot, svc, port string) int {
		for i, b := range s.Backends {
			if b.Service == svc && b.Port == port {
				return i
			}
		}
		t.Fatalf("no backend %s:%s", svc, port)
		return -1
	}
	svc0, svc1 := scaleServiceName(0), scaleServiceName(1)
	kept := first.Backends[idx(first, svc0, "http")]
	for range 3 { // move its rotation on
		kept.RR.Pick(kept.Endpoints)
	}
	wantNext := kept.RR.Pick(kept.Endpoints)
	for range len(kept.Endpoints) - 1 {
		kept.RR.Pick(kept.Endpoints)
	} // a full turn: the next pick is wantNext again
	before := reg.Len()

	// An Ingress change (a new path) plus, in the same rebuild, service
	// 1 losing an endpoint (scaleSlice(s, 1) marks endpoint 1 not ready).
	in.Ingresses[3].Spec.Rules[0].HTTP.Paths[1].Path = "/api2"
	in.Slices[1] = scaleSlice(1, 1)
	dropped := first.Backends[idx(first, svc1, "http")].Addrs[1]
	next, _ := Build(in)
	if !w.publish(first, next, nil) {
		t.Fatal("not published")
	}
	cur := w.snap.Load()
	if got := cur.Backends[idx(cur, svc0, "http")]; got != kept {
		t.Fatalf("unchanged backend %s replaced by a new one on a full rebuild", kept.ID())
	}
	if got := kept.RR.Pick(kept.Endpoints); got != wantNext {
		t.Errorf("round-robin restarted: picked %s, want %s", got.Addr, wantNext.Addr)
	}
	changedB := cur.Backends[idx(cur, svc1, "http")]
	if changedB == first.Backends[idx(first, svc1, "http")] || slices.Contains(changedB.Addrs, dropped) {
		t.Fatalf("backend %s with a changed endpoint list was kept", changedB.ID())
	}
	for _, ep := range changedB.Endpoints {
		if ep == nil {
			t.Fatalf("new backend %s not bound", changedB.ID())
		}
	}
	now = now.Add(grace)
	reg.Sweep()
	if got := reg.Len(); got != before-1 {
		t.Errorf("registry holds %d endpoints after the grace period, want %d (%s released)", got, before-1, dropped)
	}
	if cur.Hash() != next.Hash() {
		t.Error("reusing backends changed the snapshot's hash")
	}
}
