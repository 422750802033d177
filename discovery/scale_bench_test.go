package discovery

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

// scaleSizes are the Ingress counts of the scale benchmarks.
var scaleSizes = []int{100, 1000, 10000}

// scaleEndpoints is the number of endpoints of each Service.
const scaleEndpoints = 5

// scaleInput returns a cluster of n Ingresses (each one host, ing-NNNNN.example.com,
// with two Prefix paths) over max(n/5, 1) Services in namespace "scale",
// each Service with two named ports and one EndpointSlice (labelled
// kubernetes.io/service-name, named ports) of scaleEndpoints ready
// endpoints. Ingress i routes "/" to the "http" port and "/api" to port
// number 80 (the same Service port) of Service i%services: two backends per
// Service.
func scaleInput(n int) Input {
	nsvc := max(n/5, 1)
	created := metav1.NewTime(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	in := Input{
		Classes: []*netv1.IngressClass{{
			ObjectMeta: metav1.ObjectMeta{Name: DefaultIngressClassName, ResourceVersion: "1"},
			Spec:       netv1.IngressClassSpec{Controller: ControllerName},
		}},
	}
	for s := range nsvc {
		in.Services = append(in.Services, scaleService(s))
		in.Slices = append(in.Slices, scaleSlice(s, 0))
	}
	prefix := netv1.PathTypePrefix
	for i := range n {
		svc := scaleServiceName(i % nsvc)
		in.Ingresses = append(in.Ingresses, &netv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "scale", Name: fmt.Sprintf("ing-%05d", i),
				ResourceVersion:   strconv.Itoa(1000 + i),
				CreationTimestamp: metav1.NewTime(created.Add(time.Duration(i) * time.Second)),
				Labels:            map[string]string{"app.kubernetes.io/name": svc},
			},
			Spec: netv1.IngressSpec{
				IngressClassName: ptr(DefaultIngressClassName),
				Rules: []netv1.IngressRule{{
					Host: fmt.Sprintf("ing-%05d.example.com", i),
					IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{Paths: []netv1.HTTPIngressPath{
						{Path: "/", PathType: &prefix, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{
							Name: svc, Port: netv1.ServiceBackendPort{Name: "http"},
						}}},
						{Path: "/api", PathType: &prefix, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{
							Name: svc, Port: netv1.ServiceBackendPort{Number: 80},
						}}},
					}}},
				}},
			},
		})
	}
	return in
}

func scaleServiceName(s int) string { return fmt.Sprintf("svc-%05d", s) }

func scaleService(s int) *corev1.Service {
	name := scaleServiceName(s)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "scale", Name: name, ResourceVersion: strconv.Itoa(10 + s)},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{"app.kubernetes.io/name": name},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")},
				{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9090)},
			},
		},
	}
}

// scaleSlice is the EndpointSlice of Service s. Generation gen > 0 marks
// endpoint gen%scaleEndpoints not ready: one endpoint change.
func scaleSlice(s, gen int) *discoveryv1.EndpointSlice {
	name := scaleServiceName(s)
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "scale", Name: name + "-abcde", ResourceVersion: strconv.Itoa(100000 + s*10 + gen),
			Labels: map[string]string{
				discoveryv1.LabelServiceName: name,
				discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.ProtocolTCP)},
			{Name: ptr("metrics"), Port: ptr[int32](9090), Protocol: ptr(corev1.ProtocolTCP)},
		},
	}
	for e := range scaleEndpoints {
		ip := fmt.Sprintf("10.%d.%d.%d", 1+s/250, s%250, 10+e)
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{ip},
			Conditions: discoveryv1.EndpointConditions{
				Ready: ptr(gen == 0 || e != gen%scaleEndpoints), Serving: ptr(true), Terminating: ptr(false),
			},
			NodeName:  ptr(fmt.Sprintf("node-%d", e)),
			Zone:      ptr("zone-a"),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "scale", Name: fmt.Sprintf("%s-%d", name, e)},
		})
	}
	return sl
}

// endpointChange applies one EndpointSlice change to cur exactly as the
// Watcher's endpoint-only path does, minus the informer cache read:
// reresolve, WithBackends, Bind of the changed backends.
func endpointChange(tb testing.TB, cur *route.Snapshot, reg *balancer.Registry, k nsName, svc *corev1.Service, sl *discoveryv1.EndpointSlice) (*route.Snapshot, []int) {
	backends, changed, full := reresolve(cur, k, svc, []*discoveryv1.EndpointSlice{sl}, nil, nil)
	if full || len(changed) == 0 {
		tb.Fatalf("endpoint change: full=%v changed=%v", full, changed)
	}
	next := cur.WithBackends(backends)
	for _, i := range changed {
		next.Backends[i].Bind(reg)
	}
	return next, changed
}

// boundBuild builds in and binds every backend, as the Watcher's first
// publish does.
func boundBuild(in Input, reg *balancer.Registry) *route.Snapshot {
	s, _ := Build(in)
	for _, be := range s.Backends {
		be.Bind(reg)
	}
	return s
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range scaleSizes {
		in := scaleInput(n)
		b.Run(fmt.Sprintf("ingresses=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, p := Build(in)
				if len(p) != 0 || len(s.Hosts()) != n {
					b.Fatalf("Build: %d hosts, problems %v", len(s.Hosts()), p)
				}
			}
		})
	}
}

// BenchmarkEndpointChange measures applying one EndpointSlice change (one
// endpoint of one Service turns not ready) through the Watcher's
// endpoint-only path. It must stay roughly flat across the Ingress count.
func BenchmarkEndpointChange(b *testing.B) {
	for _, n := range scaleSizes {
		in := scaleInput(n)
		reg := balancer.NewRegistry(balancer.RegistryConfig{})
		cur := boundBuild(in, reg)
		s := len(in.Services) / 2
		k := nsName{"scale", scaleServiceName(s)}
		svc, changedSlice := in.Services[s], scaleSlice(s, 1)
		b.Run(fmt.Sprintf("ingresses=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				endpointChange(b, cur, reg, k, svc, changedSlice)
			}
		})
	}
}

// BenchmarkEndpointCopy isolates the part of an endpoint change that is
// O(#backends): cloning the backend pointers and WithBackends (which also
// recombines the per-backend hashes).
func BenchmarkEndpointCopy(b *testing.B) {
	for _, n := range scaleSizes {
		cur, _ := Build(scaleInput(n))
		i := len(cur.Backends) / 2
		old := cur.Backends[i]
		b.Run(fmt.Sprintf("ingresses=%d/backends=%d", n, len(cur.Backends)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				backends := slices.Clone(cur.Backends)
				backends[i] = &route.Backend{Namespace: old.Namespace, Service: old.Service, Port: old.Port, Addrs: old.Addrs[1:]}
				cur.WithBackends(backends)
			}
		})
	}
}

// BenchmarkEndpointPublish is BenchmarkEndpointChange plus the Watcher's
// publish (hash check, in-use address bookkeeping, Registry.Release and Sweep,
// metrics): the whole endpoint-only rebuild minus the informer cache read.
// Each iteration flips one endpoint of one Service between ready and not
// ready, so every iteration publishes.
func BenchmarkEndpointPublish(b *testing.B) {
	for _, n := range scaleSizes {
		in := scaleInput(n)
		b.Run(fmt.Sprintf("ingresses=%d", n), func(b *testing.B) {
			w, _ := publishedWatcher(b, in)
			s := len(in.Services) / 2
			k := nsName{"scale", scaleServiceName(s)}
			svc := in.Services[s]
			gens := []*discoveryv1.EndpointSlice{scaleSlice(s, 1), scaleSlice(s, 0)}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				cur := w.snap.Load()
				backends, changed, full := reresolve(cur, k, svc, gens[i%2:i%2+1], nil, nil)
				if full || len(changed) == 0 {
					b.Fatalf("endpoint change: full=%v changed=%v", full, changed)
				}
				if !w.publish(cur, cur.WithBackends(backends), changed) {
					b.Fatal("endpoint change not published")
				}
				i++
			}
		})
	}
}

// TestEndpointChangeSharesTables checks the copy-on-write promise the
// benchmarks rely on: an endpoint change shares every host table and every
// unchanged backend with the previous snapshot, leaves that snapshot alone,
// and gives the same snapshot as a full build of the changed objects.
func TestEndpointChangeSharesTables(t *testing.T) {
	t.Parallel()
	in := scaleInput(100)
	reg := balancer.NewRegistry(balancer.RegistryConfig{})
	cur := boundBuild(in, reg)
	curBackends := slices.Clone(cur.Backends)
	curAddrs := make([][]string, len(cur.Backends))
	for i, be := range cur.Backends {
		curAddrs[i] = slices.Clone(be.Addrs)
	}

	s := 7
	k := nsName{"scale", scaleServiceName(s)}
	changedSlice := scaleSlice(s, 1)
	next, changed := endpointChange(t, cur, reg, k, in.Services[s], changedSlice)

	want := cur.BackendsOf(k.ns, k.name)
	if !slices.Equal(changed, want) || len(want) != 2 {
		t.Fatalf("changed backends %v, want those of %v: %v", changed, k, want)
	}
	if next.Hash() == cur.Hash() {
		t.Fatal("endpoint change did not change the hash")
	}
	// Host tables: the very same pointers, in the same order.
	ch, nh := cur.Hosts(), next.Hosts()
	if len(ch) != len(nh) || len(nh) != 100 {
		t.Fatalf("host tables: %d before, %d after", len(ch), len(nh))
	}
	for i := range ch {
		if ch[i] != nh[i] {
			t.Fatalf("host table %q copied (%p -> %p), want shared", ch[i].Host, ch[i], nh[i])
		}
	}
	if next.Default != cur.Default {
		t.Fatal("default route not shared")
	}
	// Backends: only the changed pointers differ.
	if len(next.Backends) != len(cur.Backends) {
		t.Fatalf("%d backends after, %d before", len(next.Backends), len(cur.Backends))
	}
	for i := range next.Backends {
		same := next.Backends[i] == cur.Backends[i]
		if slices.Contains(changed, i) == same {
			t.Errorf("backend %d (%s): shared=%v, want shared only when unchanged", i, cur.Backends[i].ID(), same)
		}
	}
	for _, i := range changed {
		be := next.Backends[i]
		if len(be.Addrs) != scaleEndpoints-1 || len(be.Endpoints) != len(be.Addrs) {
			t.Errorf("changed backend %s: addrs %v, %d endpoints bound", be.ID(), be.Addrs, len(be.Endpoints))
		}
	}
	// A request to the changed Service's host resolves to the same shared
	// route and the new backend.
	host := []byte("ing-00007.example.com")
	r1, r2 := cur.Match(host, []byte("/api/x")), next.Match(host, []byte("/api/x"))
	if r1 == nil || r1 != r2 || next.Backends[r2.Backend] == cur.Backends[r1.Backend] {
		t.Fatalf("match before %+v, after %+v: want the same route with a new backend", r1, r2)
	}
	// The old snapshot is untouched.
	for i, be := range cur.Backends {
		if be != curBackends[i] || !slices.Equal(be.Addrs, curAddrs[i]) {
			t.Fatalf("backend %d of the old snapshot modified", i)
		}
	}
	// The two speeds agree: a full build of the changed objects has the
	// same hash.
	in.Slices = slices.Clone(in.Slices)
	in.Slices[s] = changedSlice
	full, _ := Build(in)
	if full.Hash() != next.Hash() {
		t.Fatalf("full build hash %x, endpoint change hash %x", full.Hash(), next.Hash())
	}
}

// BenchmarkFullPublish is what an Ingress change costs the Watcher once the
// informer caches are read: Build, then publish (Bind of every backend,
// registry reconciliation, metrics), on a table whose endpoints are already
// registered.
func BenchmarkFullPublish(b *testing.B) {
	for _, n := range scaleSizes {
		in := scaleInput(n)
		b.Run(fmt.Sprintf("ingresses=%d", n), func(b *testing.B) {
			w, _ := publishedWatcher(b, in)
			// The informer caches list in map order: shuffle, as they do.
			rng := rand.New(rand.NewPCG(1, 2))
			rng.Shuffle(len(in.Ingresses), func(i, j int) { in.Ingresses[i], in.Ingresses[j] = in.Ingresses[j], in.Ingresses[i] })
			rng.Shuffle(len(in.Services), func(i, j int) { in.Services[i], in.Services[j] = in.Services[j], in.Services[i] })
			rng.Shuffle(len(in.Slices), func(i, j int) { in.Slices[i], in.Slices[j] = in.Slices[j], in.Slices[i] })
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				// A changed path in one Ingress: the hash differs, so every
				// iteration publishes.
				i++
				in.Ingresses[len(in.Ingresses)/2].Spec.Rules[0].HTTP.Paths[1].Path = fmt.Sprintf("/api%d", i)
				next, _ := Build(in)
				if !w.publish(w.snap.Load(), next, nil) {
					b.Fatal("not published")
				}
			}
		})
	}
}

// BenchmarkIngressChange is what an Ingress change costs the Watcher on the
// incremental path: a new path on one Ingress, applied by rebuilding only
// its host (applyIngresses), then published. Compare BenchmarkFullPublish,
// which is what the same change costs as a full build.
func BenchmarkIngressChange(b *testing.B) {
	for _, n := range scaleSizes {
		in := scaleInput(n)
		b.Run(fmt.Sprintf("ingresses=%d", n), func(b *testing.B) {
			w, st := publishedWatcher(b, in)
			resolve := resolverOf(in)
			target := in.Ingresses[len(in.Ingresses)/2]
			key := []nsName{{target.Namespace, target.Name}}
			var cur *netv1.Ingress
			get := func(nsName) *netv1.Ingress { return cur }
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				cur = target.DeepCopy()
				cur.Spec.Rules[0].HTTP.Paths[1].Path = fmt.Sprintf("/api%d", i)
				snap := w.snap.Load()
				next, _, ok := st.applyIngresses(snap, key, get, resolve)
				if !ok {
					b.Fatal("declined")
				}
				if !w.publish(snap, next, changedSlots(snap, next)) {
					b.Fatal("not published")
				}
			}
		})
	}
}

// publishedWatcher returns a Watcher (fake clientset, a registry of its own)
// that has published a full build of in, and the build's incremental state.
func publishedWatcher(tb testing.TB, in Input) (*Watcher, *incState) {
	tb.Helper()
	w, err := New(Config{Client: fake.NewClientset(), Registry: balancer.NewRegistry(balancer.RegistryConfig{}), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	first, _, st := build(in, true)
	w.publish(nil, first, nil)
	return w, st
}
