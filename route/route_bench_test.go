package route

import (
	"fmt"
	"sync"
	"testing"
)

const (
	benchHosts     = 10_000
	benchWildcards = 100
)

// benchInput is a realistic large table: 10,000 hosts with three paths each
// (a catch-all, a Prefix and an Exact) and 100 wildcard hosts.
func benchInput() ([]Route, []*Backend) {
	routes := make([]Route, 0, benchHosts*3+benchWildcards*2)
	backends := make([]*Backend, 0, benchHosts+benchWildcards)
	add := func(host string, n int) {
		b := len(backends)
		backends = append(backends, &Backend{Namespace: "ns", Service: fmt.Sprintf("svc-%d", b), Port: "80",
			Addrs: []string{fmt.Sprintf("10.%d.%d.1:8080", b/256%256, b%256), fmt.Sprintf("10.%d.%d.2:8080", b/256%256, b%256)}})
		ing := IngressRef{"ns", fmt.Sprintf("ing-%d", b)}
		routes = append(routes,
			Route{Host: host, Path: "/", Type: Prefix, Ingress: ing, Backend: b},
			Route{Host: host, Path: "/api/", Type: Prefix, Ingress: ing, Backend: b})
		if n == 3 {
			routes = append(routes, Route{Host: host, Path: "/api/v1/status", Type: Exact, Ingress: ing, Backend: b})
		}
	}
	for i := range benchHosts {
		add(fmt.Sprintf("host-%d.example.com", i), 3)
	}
	for i := range benchWildcards {
		add(fmt.Sprintf("*.tenant-%d.example.net", i), 2)
	}
	return routes, backends
}

var benchSnap = sync.OnceValue(func() *Snapshot {
	routes, backends := benchInput()
	s, conflicts := New(routes, backends, &Route{Ingress: IngressRef{"ns", "default"}, Backend: 0})
	if len(conflicts) != 0 {
		panic(fmt.Sprint("bench conflicts: ", conflicts))
	}
	return s
})

var sink *Route

func BenchmarkMatch(b *testing.B) {
	s := benchSnap()
	cases := []struct {
		name, host, path string
	}{
		{"exact", "host-4242.example.com", "/api/v1/status"},
		{"exact-prefix", "host-4242.example.com", "/api/v2/users/17"},
		{"wildcard", "shop.tenant-42.example.net", "/api/orders"},
		{"miss", "unknown.example.org", "/index.html"},
		{"uppercase", "HOST-4242.Example.COM:443", "/api/v1/status"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			host, path := []byte(c.host), []byte(c.path)
			if s.Match(host, path) == nil {
				b.Fatal("no match")
			}
			b.ReportAllocs()
			for b.Loop() {
				sink = s.Match(host, path)
			}
		})
	}
	b.Run("exact-parallel", func(b *testing.B) {
		host, path := []byte("host-4242.example.com"), []byte("/api/v1/status")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var r *Route
			for pb.Next() {
				r = s.Match(host, path)
			}
			_ = r
		})
	})
}

// BenchmarkNew is the build cost of a 10,000-host snapshot (routes sorted,
// host maps and hashes computed).
func BenchmarkNew(b *testing.B) {
	routes, backends := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		New(routes, backends, nil)
	}
}

// BenchmarkWithBackends is an endpoint change on the 10,000-host snapshot:
// one backend replaced, the rest shared.
func BenchmarkWithBackends(b *testing.B) {
	s := benchSnap()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		nb := make([]*Backend, len(s.Backends))
		copy(nb, s.Backends)
		old := nb[i%len(nb)]
		nb[i%len(nb)] = &Backend{Namespace: old.Namespace, Service: old.Service, Port: old.Port,
			Addrs: []string{fmt.Sprintf("10.9.9.%d:8080", i%250)}}
		s.WithBackends(nb)
	}
}
