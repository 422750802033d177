package discovery

import (
	"cmp"
	"reflect"
	"slices"
	"strings"

	netv1 "k8s.io/api/networking/v1"

	"github.com/edgegate/edgegate/route"
)

// incState is what the last build leaves for the next one to apply an
// Ingress change incrementally: rebuild only the hosts the changed
// Ingresses name (before and after the change), share every other host
// table, and keep every backend index that did not go away.
//
// An Ingress change is applied this way when it reaches the snapshot only
// through its rules: the Ingress (before and after) has no spec.tls, no
// spec.defaultBackend and no ACME opt-in, or those and everything the TLS
// result reads from it are unchanged. Everything else (and any IngressClass,
// Service or Secret change) takes a full Build, which starts a new incState.
// The result equals a full Build of the same objects: same hash, same
// tables, same Problems; TestIncrementalMatchesBuild checks it on random
// changes.
//
// It is owned by the builder goroutine.
type incState struct {
	cfg TLSConfig
	cls *classSet
	tls *tlsResult
	// ings are our Ingresses as last built, by namespace/name.
	ings map[nsName]*netv1.Ingress
	// byHost lists, per valid rule host, the Ingresses with rules for it.
	byHost map[string][]nsName
	// global are the problems that only a full build recomputes
	// (IngressClass, TLS, default backend); scoped and noClass are the
	// rest (see builder).
	global  []Problem
	scoped  map[ingHost][]Problem
	noClass map[nsName]Problem
	// slot is the backend index of each backend; refs counts the routes
	// (default included) using each index; free lists the nil slots.
	slot map[backendKey]int
	refs []int
	free []int
}

func newIncState(cfg TLSConfig, cls *classSet, tls *tlsResult, ings []*netv1.Ingress, snap *route.Snapshot, b *builder) *incState {
	st := &incState{
		cfg: cfg, cls: cls, tls: tls,
		ings:    make(map[nsName]*netv1.Ingress, len(ings)),
		byHost:  make(map[string][]nsName, len(ings)),
		global:  b.problems,
		scoped:  b.scoped,
		noClass: b.noClass,
	}
	if st.scoped == nil {
		st.scoped = make(map[ingHost][]Problem)
	}
	if st.noClass == nil {
		st.noClass = make(map[nsName]Problem)
	}
	for _, ing := range ings {
		k := nsName{ing.Namespace, ing.Name}
		st.ings[k] = ing
		for _, h := range ruleHosts(ing) {
			st.byHost[h] = append(st.byHost[h], k)
		}
	}
	st.rebase(snap)
	return st
}

// rebase takes the backend layout (slots, use counts, free slots) from
// snap. A full build whose result equals the current snapshot is not
// published; the state must then follow the snapshot that keeps serving,
// whose backends may sit in other slots.
func (st *incState) rebase(snap *route.Snapshot) {
	st.slot = make(map[backendKey]int, len(snap.Backends))
	st.refs = make([]int, len(snap.Backends))
	st.free = nil
	for i, be := range snap.Backends {
		if be == nil {
			st.free = append(st.free, i)
			continue
		}
		st.slot[backendKey{be.Namespace, be.Service, be.Port}] = i
	}
	eachRoute(snap, func(r *route.Route) { st.refs[r.Backend]++ })
}

// ruleHosts returns the valid, lower-case hosts ing has routable rules for
// ("" for hostless rules), each once.
func ruleHosts(ing *netv1.Ingress) []string {
	var hosts []string
	for i := range ing.Spec.Rules {
		r := &ing.Spec.Rules[i]
		if r.HTTP == nil {
			continue
		}
		h := strings.ToLower(r.Host)
		if validHost(h) == "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// acmeOptIn reports whether ing's hosts take part in ACME.
func (st *incState) acmeOptIn(ing *netv1.Ingress) bool {
	return st.cfg.ACME && (st.cfg.ACMEAllHosts || ing.Annotations[annACME] == "true")
}

// rulesOnly reports whether replacing old with nw (nil: absent or not ours)
// changes the snapshot only through their rules, which an incremental update
// handles: nothing the TLS result, the default route or their Problems read
// from them differs.
func (st *incState) rulesOnly(old, nw *netv1.Ingress) bool {
	if old == nil || nw == nil {
		x := cmp.Or(old, nw)
		return len(x.Spec.TLS) == 0 && x.Spec.DefaultBackend == nil && !st.acmeOptIn(x)
	}
	if !old.CreationTimestamp.Equal(&nw.CreationTimestamp) ||
		!reflect.DeepEqual(old.Spec.TLS, nw.Spec.TLS) ||
		!reflect.DeepEqual(old.Spec.DefaultBackend, nw.Spec.DefaultBackend) ||
		st.acmeOptIn(old) != st.acmeOptIn(nw) {
		return false
	}
	// TLS entries without hosts, and ACME, read the rule hosts.
	readsHosts := st.acmeOptIn(nw) || slices.ContainsFunc(nw.Spec.TLS, func(t netv1.IngressTLS) bool { return len(t.Hosts) == 0 })
	if !readsHosts {
		return true
	}
	return slices.EqualFunc(old.Spec.Rules, nw.Spec.Rules, func(a, b netv1.IngressRule) bool {
		return a.Host == b.Host && (a.HTTP == nil) == (b.HTTP == nil)
	})
}

// applyIngresses applies the changes of the Ingresses keys (get reads each
// from the caches, nil when deleted) to cur, the snapshot st was left by.
// resolve gives the addresses of a backend cur does not have yet. ok false
// means a full build is needed; st is then unchanged. When nothing of ours
// changed, next is cur.
func (st *incState) applyIngresses(cur *route.Snapshot, keys []nsName, get func(nsName) *netv1.Ingress,
	resolve func(backendKey) (addrs []string, errMsg string)) (next *route.Snapshot, problems []Problem, ok bool) {
	type change struct {
		key     nsName
		old, nw *netv1.Ingress
	}
	var changes []change
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b nsName) int { return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name)) })
	keys = slices.Compact(keys)
	var noClass []*netv1.Ingress // those naming the missing configured class
	for _, k := range keys {
		old := st.ings[k]
		nw := get(k)
		if nw != nil && !st.cls.claims(nw) {
			if st.cls.missing(nw) {
				noClass = append(noClass, nw)
			}
			nw = nil
		}
		if old == nw {
			continue
		}
		if !st.rulesOnly(old, nw) {
			return nil, nil, false
		}
		changes = append(changes, change{k, old, nw})
	}

	// From here on st changes: no way back to ok = false.
	for _, k := range keys {
		delete(st.noClass, k)
	}
	for _, ing := range noClass {
		st.noClass[nsName{ing.Namespace, ing.Name}] = st.cls.missingProblem(ing)
	}
	if len(changes) == 0 {
		return cur, st.problems(), true
	}

	b := &builder{scoped: st.scoped}
	affected := make(map[string]bool)
	for _, c := range changes {
		if c.old != nil {
			for _, h := range ruleHosts(c.old) {
				affected[h] = true
				st.byHost[h] = slices.DeleteFunc(st.byHost[h], func(k nsName) bool { return k == c.key })
				if len(st.byHost[h]) == 0 {
					delete(st.byHost, h)
				}
			}
			for i := range c.old.Spec.Rules {
				delete(st.scoped, ingHost{c.key.ns, c.key.name, strings.ToLower(c.old.Spec.Rules[i].Host)})
			}
			delete(st.ings, c.key)
		}
		if c.nw != nil {
			st.ings[c.key] = c.nw
			for _, h := range ruleHosts(c.nw) {
				affected[h] = true
				st.byHost[h] = append(st.byHost[h], c.key)
			}
			// Rules with an invalid host route nowhere: only their Problem.
			ref := route.IngressRef{Namespace: c.key.ns, Name: c.key.name}
			for i := range c.nw.Spec.Rules {
				r := &c.nw.Spec.Rules[i]
				if r.HTTP != nil && validHost(strings.ToLower(r.Host)) != "" {
					b.rule(c.nw, ref, r, nil)
				}
			}
		}
	}

	hosts := make([]string, 0, len(affected))
	for h := range affected {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	backends := cur.Backends
	cloned := false
	tables := make(map[string][]route.Route, len(hosts))
	var released []int
	for _, h := range hosts {
		owners := slices.Clone(st.byHost[h])
		slices.SortFunc(owners, func(a, b nsName) int { return compareClaim(st.ings[a], st.ings[b]) })
		var pending []pendingRoute
		for _, k := range owners {
			delete(st.scoped, ingHost{k.ns, k.name, h})
			ing := st.ings[k]
			ref := route.IngressRef{Namespace: k.ns, Name: k.name}
			for i := range ing.Spec.Rules {
				if r := &ing.Spec.Rules[i]; r.HTTP != nil && strings.ToLower(r.Host) == h {
					pending = b.rule(ing, ref, r, pending)
				}
			}
		}
		routes := make([]route.Route, len(pending))
		for i := range pending {
			routes[i] = pending[i].r
		}
		keep, conflicts := route.Claim(routes)
		for _, c := range conflicts {
			b.conflictProblem(c)
		}
		kept := make([]route.Route, 0, len(routes))
		for i, p := range pending {
			if !keep[i] {
				continue
			}
			ix, found := st.slot[p.key]
			if !found {
				if !cloned {
					backends, cloned = slices.Clone(backends), true
				}
				addrs, errMsg := resolve(p.key)
				be := &route.Backend{Namespace: p.key.ns, Service: p.key.svc, Port: p.key.port, Addrs: addrs, Error: errMsg}
				if n := len(st.free); n > 0 {
					ix, st.free = st.free[n-1], st.free[:n-1]
					backends[ix] = be
				} else {
					ix = len(backends)
					backends = append(backends, be)
					st.refs = append(st.refs, 0)
				}
				st.slot[p.key] = ix
			}
			st.refs[ix]++
			r := p.r
			r.Backend = ix
			r.RedirectHTTPS = st.tls.redirect(st.cfg, p.ing, h)
			kept = append(kept, r)
			if be := backends[ix]; be.Error != "" {
				b.hostProblem(r.Ingress, h, backendProblem(be))
			}
		}
		if old := cur.Table(h); old != nil {
			for _, r := range old.Routes {
				st.refs[r.Backend]--
				released = append(released, r.Backend)
			}
		}
		tables[h] = kept
	}
	// Backends no route uses any more leave a free slot, so that no other
	// index moves.
	for _, ix := range released {
		if st.refs[ix] > 0 || backends[ix] == nil {
			continue
		}
		if !cloned {
			backends, cloned = slices.Clone(backends), true
		}
		be := backends[ix]
		delete(st.slot, backendKey{be.Namespace, be.Service, be.Port})
		backends[ix] = nil
		st.free = append(st.free, ix)
	}
	return cur.Patch(tables, backends), st.problems(), true
}

// problems returns every current problem, sorted and without duplicates.
func (st *incState) problems() []Problem {
	b := builder{problems: st.global, scoped: st.scoped, noClass: st.noClass}
	return b.all()
}

// compareClaim orders Ingresses the way they claim rules: oldest first, then
// by namespace/name.
func compareClaim(a, b *netv1.Ingress) int {
	return cmp.Or(
		cmp.Compare(a.CreationTimestamp.UnixNano(), b.CreationTimestamp.UnixNano()),
		cmp.Compare(a.Namespace, b.Namespace),
		cmp.Compare(a.Name, b.Name),
	)
}
