package discovery

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgegate/edgegate/route"
)

// FuzzBuild builds from objects generated out of the fuzzer's bytes and
// checks what Build promises: it never panics, it is deterministic and
// independent of the order of the objects, its Problems are sorted and
// unique, every route points at a backend and every backend is used, and
// the Watcher's endpoint-only path (reresolve + WithBackends) agrees with a
// full build.
//
// The bytes drive a small generator (fuzzGen) instead of being decoded as
// YAML: decoding raw YAML spent every execution in the YAML and JSON
// decoders (milliseconds each, and new coverage on almost every mutation,
// each of which the fuzzer then minimised for up to -fuzzminimizetime, 60s
// by default, while the progress line showed 0 execs/sec). The golden YAML
// cases are covered by TestBuildGolden.
func FuzzBuild(f *testing.F) {
	f.Add([]byte{}, "")
	f.Add([]byte{0, 1, 1, 1, 1, 1, 2, 1, 1, 1, 0, 0, 1, 3, 0, 1, 1}, "")
	f.Add([]byte{3, 1, 1, 0, 0, 2, 3, 1, 2, 0, 1, 0, 2, 1, 4, 2, 2, 0, 1, 1, 1, 1, 1, 1, 2, 2}, "edgegate")
	f.Add([]byte{0, 0, 1, 2, 5, 1, 0, 1, 3, 3, 0, 2, 2, 0, 0, 0, 0, 2, 0, 1, 1, 0, 1, 0, 0, 2, 1, 1, 3, 7}, "other")
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\xf0\x05A.b-C\x01\x02\x03"), "x")
	f.Fuzz(func(t *testing.T, data []byte, class string) {
		if len(data) > 1024 || len(class) > 64 {
			t.Skip("input too large")
		}
		in := (&fuzzGen{b: data}).input()
		in.IngressClassName = class

		s1, p1 := Build(in)
		s2, p2 := Build(in)
		if s1.Hash() != s2.Hash() || !slices.Equal(p1, p2) {
			t.Fatal("Build is not deterministic")
		}
		if !slices.IsSortedFunc(p1, compareProblems) || len(slices.Compact(slices.Clone(p1))) != len(p1) {
			t.Fatalf("problems not sorted and unique: %v", p1)
		}

		// The same objects in another order give the same result.
		var seed [8]byte
		copy(seed[:], data)
		r := rand.New(rand.NewPCG(uint64(len(data)), uint64(seed[0])|uint64(seed[7])<<8))
		sh := Input{
			IngressClassName: in.IngressClassName,
			Ingresses:        shuffled(r, in.Ingresses),
			Classes:          shuffled(r, in.Classes),
			Services:         shuffled(r, in.Services),
			Slices:           shuffled(r, in.Slices),
		}
		if s3, p3 := Build(sh); s3.Hash() != s1.Hash() || !slices.Equal(p3, p1) {
			t.Fatalf("Build of shuffled input differs:\n%v\n%v", p1, p3)
		}

		used := make([]bool, len(s1.Backends))
		eachRoute(s1, func(r *route.Route) {
			if r.Backend < 0 || r.Backend >= len(s1.Backends) {
				t.Fatalf("route %+v has backend index out of range", r)
			}
			used[r.Backend] = true
		})
		if i := slices.Index(used, false); i >= 0 {
			t.Fatalf("backend %s is used by no route", s1.Backends[i].ID())
		}
		_ = s1.View()

		// The endpoint-only path agrees with a full build: re-resolving
		// every Service against the same objects changes nothing, and
		// dropping the EndpointSlices of one Service gives the hash of a
		// full build without them.
		svcs, sls := indexObjects(in.Services, in.Slices)
		for _, be := range s1.Backends {
			k := nsName{be.Namespace, be.Service}
			if _, changed, full := reresolve(s1, k, svcs[k], sls[k], nil, nil); full || len(changed) > 0 {
				t.Fatalf("re-resolving %s against the same objects: full=%v changed=%v", be.ID(), full, changed)
			}
		}
		if len(s1.Backends) > 0 {
			be := s1.Backends[int(seed[1])%len(s1.Backends)]
			k := nsName{be.Namespace, be.Service}
			backends, changed, full := reresolve(s1, k, svcs[k], nil, nil, nil)
			if full {
				t.Fatalf("dropping the slices of %s needs a full build", be.ID())
			}
			next := s1
			if len(changed) > 0 {
				next = s1.WithBackends(backends)
			}
			without := in
			without.Slices = slices.DeleteFunc(slices.Clone(in.Slices), func(sl *discoveryv1.EndpointSlice) bool {
				return sl != nil && sl.Namespace == k.ns && sl.Labels[labelServiceName] == k.name
			})
			if fullSnap, _ := Build(without); fullSnap.Hash() != next.Hash() {
				t.Fatalf("dropping the slices of %s: endpoint path hash %x, full build %x", be.ID(), next.Hash(), fullSnap.Hash())
			}

			// A changed Service goes the same way (the Watcher re-resolves
			// its backends): its ports renamed or renumbered, the path
			// either agrees with a full build or asks for one.
			if svc := svcs[k]; svc != nil {
				changed := svc.DeepCopy()
				for i := range changed.Spec.Ports {
					switch seed[2] % 3 {
					case 0:
						changed.Spec.Ports[i].Name = ""
					case 1:
						changed.Spec.Ports[i].Port++
					case 2:
						changed.Spec.Ports[i].Name = "http"
					}
				}
				backends, changedIx, full := reresolve(s1, k, changed, sls[k], nil, nil)
				if !full {
					next := s1
					if len(changedIx) > 0 {
						next = s1.WithBackends(backends)
					}
					with := in
					with.Services = slices.Clone(in.Services)
					for i, x := range with.Services {
						if x == svc {
							with.Services[i] = changed
						}
					}
					if fullSnap, _ := Build(with); fullSnap.Hash() != next.Hash() {
						t.Fatalf("changing Service %s/%s: endpoint path hash %x, full build %x", k.ns, k.name, next.Hash(), fullSnap.Hash())
					}
				}
			}
		}
	})
}

// fuzzGen turns fuzzer bytes into Kubernetes objects. Most fields are drawn
// from small vocabularies that hit Build's interesting cases (conflicts,
// wildcards, classes, named and numbered ports, endpoint conditions,
// address families); a byte of 0xf0 or more instead takes a raw string
// from the input. Object names are unique per kind and namespace, as from a
// lister. When the bytes run out every draw is 0.
type fuzzGen struct {
	b    []byte
	seen map[string]bool
}

// maxFuzzObjects bounds the objects of one input.
const maxFuzzObjects = 64

func (g *fuzzGen) next() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *fuzzGen) pick(n int) int { return int(g.next()) % n }

// str returns a vocabulary entry or, for a byte of 0xf0 or more, up to 32
// raw bytes of the input.
func (g *fuzzGen) str(vocab ...string) string {
	c := g.next()
	if c < 0xf0 {
		return vocab[int(c)%len(vocab)]
	}
	n := min(int(g.next())%33, len(g.b))
	s := string(g.b[:n])
	g.b = g.b[n:]
	return s
}

// unique reports whether kind/ns/name is new, recording it.
func (g *fuzzGen) unique(kind, ns, name string) bool {
	if g.seen == nil {
		g.seen = make(map[string]bool)
	}
	k := kind + "\x00" + ns + "\x00" + name
	if g.seen[k] {
		return false
	}
	g.seen[k] = true
	return true
}

var fuzzEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func (g *fuzzGen) input() Input {
	var in Input
	for range maxFuzzObjects {
		if len(g.b) == 0 {
			break
		}
		switch g.pick(5) {
		case 0, 1:
			if ing := g.ingress(); ing != nil {
				in.Ingresses = append(in.Ingresses, ing)
			}
		case 2:
			if svc := g.service(); svc != nil {
				in.Services = append(in.Services, svc)
			}
		case 3:
			if sl := g.slice(); sl != nil {
				in.Slices = append(in.Slices, sl)
			}
		case 4:
			if ic := g.class(); ic != nil {
				in.Classes = append(in.Classes, ic)
			}
		}
	}
	return in
}

func (g *fuzzGen) ns() string { return g.str("default", "team-a", "") }

func (g *fuzzGen) svcName() string { return g.str("web", "api", "missing", "ext", "") }

func (g *fuzzGen) className() string { return g.str("", "edgegate", "other", "edge-internal") }

func (g *fuzzGen) ingress() *netv1.Ingress {
	ns, name := g.ns(), g.str("a", "b", "c", "d", "e", "f")
	if !g.unique("ingress", ns, name) {
		return nil
	}
	return g.ingressAs(ns, name)
}

func (g *fuzzGen) ingressAs(ns, name string) *netv1.Ingress {
	ing := &netv1.Ingress{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name,
		CreationTimestamp: metav1.NewTime(fuzzEpoch.Add(time.Duration(g.pick(4)) * time.Hour)),
	}}
	switch g.pick(4) {
	case 1:
		ing.Spec.IngressClassName = ptr(g.className())
	case 2:
		ing.Annotations = map[string]string{annIngressClass: g.className()}
	case 3:
		ing.Spec.IngressClassName = ptr(g.className())
		ing.Annotations = map[string]string{annIngressClass: g.className()}
	}
	if g.pick(4) == 0 {
		ing.Spec.DefaultBackend = g.backend()
	}
	for range g.pick(3) {
		rule := netv1.IngressRule{Host: g.str("", "a.example.com", "A.Example.COM", "*.example.com",
			"x.a.example.com", "b.example.com.", "10.0.0.1", "bad_host", "*", "*.*.example.com")}
		if g.pick(5) != 0 {
			rule.HTTP = &netv1.HTTPIngressRuleValue{}
			for range 1 + g.pick(3) {
				p := netv1.HTTPIngressPath{Path: g.str("/", "", "/a", "/a/", "/a/b", "/a//b", "/./a", "/a?x", "a", "/A", "/a/..")}
				switch g.pick(5) {
				case 1:
					p.PathType = ptr(netv1.PathTypeExact)
				case 2:
					p.PathType = ptr(netv1.PathTypePrefix)
				case 3:
					p.PathType = ptr(netv1.PathTypeImplementationSpecific)
				case 4:
					p.PathType = ptr(netv1.PathType(g.str("Bogus", "")))
				}
				if be := g.backend(); be != nil {
					p.Backend = *be
				}
				rule.HTTP.Paths = append(rule.HTTP.Paths, p)
			}
		}
		ing.Spec.Rules = append(ing.Spec.Rules, rule)
	}
	return ing
}

var fuzzPortNumbers = []int32{80, 8080, 0, 70000, -1, 443}

func (g *fuzzGen) backend() *netv1.IngressBackend {
	switch g.pick(8) {
	case 0:
		return &netv1.IngressBackend{}
	case 1:
		return &netv1.IngressBackend{Resource: &corev1.TypedLocalObjectReference{Kind: "Bucket", Name: "b"}}
	}
	sb := &netv1.IngressServiceBackend{Name: g.svcName()}
	switch g.pick(4) {
	case 0, 1:
		sb.Port.Number = fuzzPortNumbers[g.pick(len(fuzzPortNumbers))]
	case 2:
		sb.Port.Name = g.str("http", "metrics", "", "80")
	case 3:
		sb.Port.Number = fuzzPortNumbers[g.pick(len(fuzzPortNumbers))]
		sb.Port.Name = g.str("http", "metrics")
	}
	return &netv1.IngressBackend{Service: sb}
}

func (g *fuzzGen) service() *corev1.Service {
	ns, name := g.ns(), g.svcName()
	if !g.unique("service", ns, name) {
		return nil
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: strconv.Itoa(g.pick(3))}}
	if g.pick(6) == 0 {
		svc.Spec.Type = corev1.ServiceTypeExternalName
		svc.Spec.ExternalName = "example.org"
	}
	for range g.pick(4) {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: g.str("http", "metrics", "", "80"),
			Port: fuzzPortNumbers[g.pick(len(fuzzPortNumbers))],
		})
	}
	return svc
}

func (g *fuzzGen) slice() *discoveryv1.EndpointSlice {
	ns, name := g.ns(), g.str("s1", "s2", "s3", "s4")
	if !g.unique("slice", ns, name) {
		return nil
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name},
		AddressType: []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN}[g.pick(3)],
	}
	if g.pick(6) != 0 {
		sl.Labels = map[string]string{labelServiceName: g.svcName()}
	}
	for range g.pick(3) {
		p := discoveryv1.EndpointPort{}
		if g.pick(4) != 0 {
			p.Name = ptr(g.str("http", "", "metrics"))
		}
		if g.pick(5) != 0 {
			p.Port = ptr(fuzzPortNumbers[g.pick(len(fuzzPortNumbers))])
		}
		sl.Ports = append(sl.Ports, p)
	}
	for range g.pick(5) {
		ep := discoveryv1.Endpoint{}
		for range g.pick(3) {
			ep.Addresses = append(ep.Addresses, g.str("10.0.0.1", "10.0.0.2", "fd00::1", "::ffff:10.0.0.1",
				"fe80::1%eth0", "bogus", "010.0.0.1", "web.example.org"))
		}
		conds := []*bool{nil, ptr(true), ptr(false)}
		ep.Conditions.Ready = conds[g.pick(3)]
		ep.Conditions.Serving = conds[g.pick(3)]
		ep.Conditions.Terminating = conds[g.pick(3)]
		sl.Endpoints = append(sl.Endpoints, ep)
	}
	return sl
}

func (g *fuzzGen) class() *netv1.IngressClass {
	name := g.className()
	if !g.unique("class", "", name) {
		return nil
	}
	ic := &netv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       netv1.IngressClassSpec{Controller: g.str(ControllerName, "example.com/other", "")},
	}
	if g.pick(2) == 0 {
		ic.Annotations = map[string]string{netv1.AnnotationIsDefaultIngressClass: g.str("true", "false")}
	}
	return ic
}
