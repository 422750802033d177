package discovery

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"

	"github.com/edgegate/edgegate/route"
)

// TestIncrementalMatchesBuild applies random Ingress changes (adds, deletes,
// rule edits, whole rewrites, class and annotation flips; one or two at a
// time) through the incremental path and checks each result against a full
// Build of the same objects: same hash, same tables, same backends, same
// Problems, and every host table the change did not touch is shared, not
// rebuilt. Changes the incremental path declines (TLS, default backend,
// ACME) go through a full build, as in the Watcher.
func TestIncrementalMatchesBuild(t *testing.T) {
	t.Parallel()
	seeds := 1500
	if testing.Short() {
		seeds = 300
	}
	var applied, declined int
	for seed := range uint64(seeds) {
		r := rand.New(rand.NewPCG(seed, 0x1ec))
		draw := func(n int) []byte {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.IntN(0xf0)) // vocabulary draws only: readable failures
			}
			return b
		}
		a, d := checkIncremental(t, draw(50+r.IntN(250)), draw(600))
		applied += a
		declined += d
		if t.Failed() {
			t.Fatalf("seed %d", seed)
		}
	}
	t.Logf("%d changes applied incrementally, %d declined", applied, declined)
	if applied < 3*declined {
		t.Errorf("only %d of %d changes took the incremental path: the test exercises too little of it", applied, applied+declined)
	}
}

// FuzzIncremental is TestIncrementalMatchesBuild over the fuzzer's bytes.
func FuzzIncremental(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 1, 1, 1, 1, 2, 1, 1, 1, 0, 0, 1, 3, 0, 1, 1, 2, 2, 0, 1, 3, 1, 1, 0, 2})
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x00\x05\x01\x02\x03\x03\x02\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 2048 {
			t.Skip("input too large")
		}
		checkIncremental(t, data[:len(data)/2], data[len(data)/2:])
	})
}

// checkIncremental builds a base from the objects base describes, then
// applies up to 24 changes drawn from changes; it reports how many the
// incremental path applied and declined.
func checkIncremental(t *testing.T, base, changes []byte) (applied, declined int) {
	t.Helper()
	g := &fuzzGen{b: base}
	in := g.input()
	g.b = changes
	in.TLS = TLSConfig{Redirect: g.pick(3) > 0, ACME: g.pick(3) == 0, ACMEAllHosts: g.pick(4) == 0}
	for _, ing := range in.Ingresses {
		g.decorate(ing)
	}
	resolve := resolverOf(in)
	get := func(k nsName) *netv1.Ingress {
		for _, ing := range in.Ingresses {
			if ing.Namespace == k.ns && ing.Name == k.name {
				return ing
			}
		}
		return nil
	}

	cur, _, st := build(in, true)
	for step := 0; step < 24 && len(g.b) > 0; step++ {
		var keys []nsName
		before := make(map[nsName]*netv1.Ingress)
		for range 1 + g.pick(2) {
			k, ok := g.change(&in)
			if ok {
				if _, seen := before[k.key]; !seen {
					before[k.key] = k.old
				}
				keys = append(keys, k.key)
			}
		}
		want, wantProblems := Build(in)
		if g.pick(6) == 0 {
			// Something else changed (an IngressClass, a Service): a full
			// build, as the Watcher does it.
			cur, st = fullAsWatcher(in, cur)
			continue
		}
		next, problems, ok := st.applyIngresses(cur, keys, get, resolve)
		if !ok {
			declined++
			cur, st = fullAsWatcher(in, cur)
			continue
		}
		applied++
		if next.Hash() != want.Hash() || viewOf(t, next) != viewOf(t, want) {
			t.Errorf("step %d, changed %v: incremental differs from full build (hash %x, full %x):\n%s\nfull:\n%s",
				step, keys, next.Hash(), want.Hash(), viewOf(t, next), viewOf(t, want))
			return
		}
		if !slices.Equal(problems, wantProblems) {
			t.Errorf("step %d, changed %v: problems differ:\nincremental: %v\nfull:        %v", step, keys, problems, wantProblems)
			return
		}
		// Hosts no changed Ingress named before or after keep their table.
		touched := make(map[string]bool)
		for k, old := range before {
			for _, ing := range []*netv1.Ingress{old, get(k)} {
				if ing != nil {
					for _, h := range ruleHosts(ing) {
						touched[h] = true
					}
				}
			}
		}
		for _, tb := range cur.Hosts() {
			if !touched[tb.Host] && next.Table(tb.Host) != tb {
				t.Errorf("step %d: host %q was not touched by %v but its table was rebuilt", step, tb.Host, keys)
				return
			}
		}
		// Every route points at a live backend, and every live backend is
		// used.
		used := make([]bool, len(next.Backends))
		eachRoute(next, func(r *route.Route) {
			if uint(r.Backend) >= uint(len(next.Backends)) || next.Backends[r.Backend] == nil {
				t.Fatalf("step %d: route %+v points at a free slot", step, r)
			}
			used[r.Backend] = true
		})
		for i, be := range next.Backends {
			if be != nil && !used[i] {
				t.Fatalf("step %d: backend %s in slot %d is used by no route", step, be.ID(), i)
			}
		}
		cur = next
	}
	return applied, declined
}

// resolverOf resolves backends against the Services and EndpointSlices of
// in, as the Watcher does against its caches.
func resolverOf(in Input) func(backendKey) ([]string, string) {
	svcs, sls := indexObjects(in.Services, in.Slices)
	return func(k backendKey) ([]string, string) {
		n := nsName{k.ns, k.svc}
		return ResolveEndpoints(k.ns, k.svc, k.port, svcs[n], sls[n])
	}
}

// fullAsWatcher is the Watcher's full build: the new snapshot replaces cur
// only when its hash differs; otherwise cur keeps serving and the new state
// is rebased onto it (its backends may sit in other slots than the new
// build's, which differ only in layout).
func fullAsWatcher(in Input, cur *route.Snapshot) (*route.Snapshot, *incState) {
	next, _, st := build(in, true)
	if next.Hash() == cur.Hash() {
		st.rebase(cur)
		return cur, st
	}
	return next, st
}

type changed struct {
	key nsName
	old *netv1.Ingress
}

// change applies one random Ingress change to in: delete, add, a rules-only
// edit, a rewrite, or a class or annotation flip.
func (g *fuzzGen) change(in *Input) (changed, bool) {
	pickExisting := func() (int, bool) {
		if len(in.Ingresses) == 0 {
			return 0, false
		}
		return g.pick(len(in.Ingresses)), true
	}
	switch g.pick(8) {
	case 0: // delete
		i, ok := pickExisting()
		if !ok {
			return changed{}, false
		}
		old := in.Ingresses[i]
		in.Ingresses = slices.Delete(slices.Clone(in.Ingresses), i, i+1)
		return changed{nsName{old.Namespace, old.Name}, old}, true
	case 1: // add
		ing := g.ingress()
		if ing == nil {
			return changed{}, false
		}
		g.decorate(ing)
		in.Ingresses = append(slices.Clone(in.Ingresses), ing)
		return changed{nsName{ing.Namespace, ing.Name}, nil}, true
	}
	i, ok := pickExisting()
	if !ok {
		return changed{}, false
	}
	old := in.Ingresses[i]
	var nw *netv1.Ingress
	switch g.pick(6) {
	case 0: // rewrite everything but the identity
		nw = g.ingressAs(old.Namespace, old.Name)
		nw.CreationTimestamp = old.CreationTimestamp
		g.decorate(nw)
	case 1: // class flip
		nw = old.DeepCopy()
		nw.Spec.IngressClassName = ptr(g.className())
	case 2: // annotation flip
		nw = old.DeepCopy()
		if nw.Annotations == nil {
			nw.Annotations = map[string]string{}
		}
		key := []string{annSSLRedirect, annACME}[g.pick(2)]
		nw.Annotations[key] = g.str("true", "false", "")
	default: // the rules only: the common edit
		nw = old.DeepCopy()
		nw.Spec.Rules = g.ingressAs(old.Namespace, old.Name).Spec.Rules
	}
	ings := slices.Clone(in.Ingresses)
	ings[i] = nw
	in.Ingresses = ings
	return changed{nsName{old.Namespace, old.Name}, old}, true
}

// decorate gives ing, at random, a TLS entry (with or without hosts and
// secretName), the ACME opt-in or the ssl-redirect opt-out.
func (g *fuzzGen) decorate(ing *netv1.Ingress) {
	switch g.pick(6) {
	case 0:
		e := netv1.IngressTLS{SecretName: g.str("web-tls", "", "other/x")}
		if g.pick(2) == 0 {
			e.Hosts = []string{g.str("a.example.com", "*.example.com", "x.a.example.com", "bad_host")}
		}
		ing.Spec.TLS = append(ing.Spec.TLS, e)
	case 1:
		if ing.Annotations == nil {
			ing.Annotations = map[string]string{}
		}
		ing.Annotations[annACME] = "true"
	case 2:
		if ing.Annotations == nil {
			ing.Annotations = map[string]string{}
		}
		ing.Annotations[annSSLRedirect] = "false"
	}
}

// viewOf renders s for comparison without Version, Built and hash.
func viewOf(t *testing.T, s *route.Snapshot) string {
	t.Helper()
	v := s.View()
	v.Version, v.Built, v.Hash = 0, "", ""
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestIncrementalMissingClass: the Problem of an Ingress naming the
// configured class while no IngressClass of that name exists comes and goes
// with incremental updates as with a full Build, and such an Ingress is not
// routed; the legacy annotation is.
func TestIncrementalMissingClass(t *testing.T) {
	t.Parallel()
	named := func(name, host string) *netv1.Ingress { return testIngress("default", name, host, "web") }
	annotated := func(name, host string) *netv1.Ingress {
		ing := testIngress("default", name, host, "web")
		ing.Spec.IngressClassName = nil
		ing.Annotations = map[string]string{annIngressClass: DefaultIngressClassName}
		return ing
	}
	in := Input{
		Ingresses: []*netv1.Ingress{named("a", "a.example.com"), annotated("b", "b.example.com")},
		Services:  []*corev1.Service{testService("default", "web")},
	}
	get := func(k nsName) *netv1.Ingress {
		for _, ing := range in.Ingresses {
			if ing.Namespace == k.ns && ing.Name == k.name {
				return ing
			}
		}
		return nil
	}
	put := func(ing *netv1.Ingress) {
		in.Ingresses = slices.DeleteFunc(slices.Clone(in.Ingresses), func(x *netv1.Ingress) bool { return x.Name == ing.Name })
		in.Ingresses = append(in.Ingresses, ing)
	}
	cur, problems, st := build(in, true)
	if len(problems) != 1 || problems[0].Name != "a" || match(cur, "a.example.com") != nil || match(cur, "b.example.com") == nil {
		t.Fatalf("base: problems %v, hosts %v; want a's missing class only, b routed", problems, cur.View().Hosts)
	}
	for _, step := range []struct {
		name   string
		change func()
		key    string
		routed map[string]bool
		missed []string // Ingresses with the missing-class Problem
	}{
		{"add c by name", func() { put(named("c", "c.example.com")) }, "c",
			map[string]bool{"a.example.com": false, "b.example.com": true, "c.example.com": false}, []string{"a", "c"}},
		{"a to the annotation", func() { put(annotated("a", "a.example.com")) }, "a",
			map[string]bool{"a.example.com": true, "b.example.com": true}, []string{"c"}},
		{"b to the name", func() { put(named("b", "b.example.com")) }, "b",
			map[string]bool{"a.example.com": true, "b.example.com": false}, []string{"b", "c"}},
		{"c unchanged", func() {}, "c",
			map[string]bool{"a.example.com": true, "c.example.com": false}, []string{"b", "c"}},
		{"c to another class", func() {
			ing := named("c", "c.example.com")
			ing.Spec.IngressClassName = ptr("nginx")
			put(ing)
		}, "c", map[string]bool{"c.example.com": false}, []string{"b"}},
		{"b deleted", func() {
			in.Ingresses = slices.DeleteFunc(slices.Clone(in.Ingresses), func(x *netv1.Ingress) bool { return x.Name == "b" })
		}, "b", map[string]bool{"a.example.com": true, "b.example.com": false}, nil},
	} {
		step.change()
		next, problems, ok := st.applyIngresses(cur, []nsName{{"default", step.key}}, get, resolverOf(in))
		if !ok {
			t.Fatalf("%s: declined", step.name)
		}
		want, wantProblems := Build(in)
		if next.Hash() != want.Hash() || !slices.Equal(problems, wantProblems) {
			t.Fatalf("%s: incremental differs from full build:\n%v\n%v", step.name, problems, wantProblems)
		}
		for host, routed := range step.routed {
			if (match(next, host) != nil) != routed {
				t.Errorf("%s: %s routed %v, want %v", step.name, host, !routed, routed)
			}
		}
		var missed []string
		for _, p := range problems {
			if strings.Contains(p.Msg, "IngressClass edgegate not found") {
				missed = append(missed, p.Name)
			}
		}
		if !slices.Equal(missed, step.missed) {
			t.Errorf("%s: missing-class problems on %v, want %v", step.name, missed, step.missed)
		}
		cur = next
	}
}
