// Package discovery turns the Kubernetes objects edgegate watches (Ingress,
// IngressClass, Service, EndpointSlice, kubernetes.io/tls Secret) into route
// snapshots.
//
// It has two halves. Build is a pure function from a set of objects to a
// *route.Snapshot plus the Problems found on the way: deterministic, sorted,
// free of side effects, and tolerant of any input (a bad object becomes a
// Problem and is skipped; it never blocks the rest). The Watcher runs the
// client-go informers, whose handlers only mark what changed; a coalescing
// loop then applies the change at one of three speeds and publishes the
// result through an atomic pointer:
//
//   - EndpointSlices and Services: the backends of the affected Services
//     are resolved again and replaced copy-on-write
//     (route.Snapshot.WithBackends); when a backend's error changes (its
//     Service or port appeared or vanished), a full build follows.
//   - Ingresses only, touching nothing but their rules: the tables of the
//     hosts they name, before and after, are rebuilt and the rest shared
//     (incState, route.Snapshot.Patch), with the same result as Build.
//   - Anything else (IngressClass, Secret, an Ingress's TLS, ACME or
//     default backend): Build, from everything.
package discovery

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/edgegate/edgegate/route"
)

// ControllerName is the spec.controller of the IngressClasses edgegate
// serves.
const ControllerName = "edgegate.io/ingress-controller"

// DefaultIngressClassName is the class name used when Input.IngressClassName
// (or Config.IngressClassName) is empty.
const DefaultIngressClassName = "edgegate"

const (
	// annIngressClass is the legacy (pre spec.ingressClassName) class
	// annotation on an Ingress.
	annIngressClass = "kubernetes.io/ingress.class"
	// labelServiceName ties an EndpointSlice to its Service.
	labelServiceName = discoveryv1.LabelServiceName
)

// Problem kinds.
const (
	KindIngress      = "Ingress"
	KindIngressClass = "IngressClass"
)

// Input is everything Build reads. The slices are read, never modified, and
// may contain nil entries (skipped).
type Input struct {
	// IngressClassName is the class this gateway serves; "" means
	// DefaultIngressClassName.
	IngressClassName string
	Ingresses        []*netv1.Ingress
	Classes          []*netv1.IngressClass
	Services         []*corev1.Service
	Slices           []*discoveryv1.EndpointSlice
	// Secrets are the Secrets spec.tls entries may name; only
	// kubernetes.io/tls Secrets are usable.
	Secrets []*corev1.Secret
	// TLS switches redirects and ACME.
	TLS TLSConfig
	// Now is the time certificates are checked against (expired or not
	// yet valid). The zero time skips that check. Build never reads the
	// clock.
	Now time.Time
}

// Problem is an object, or part of one, that Build skipped or could not
// resolve. Problems never stop the build.
type Problem struct {
	// Kind is the object kind: KindIngress or KindIngressClass.
	Kind string
	// Namespace is "" for cluster-scoped objects.
	Namespace string
	Name      string
	Msg       string
}

// String is "ingress ns/name: msg" ("ingressclass name: msg" for
// cluster-scoped objects).
func (p Problem) String() string {
	id := p.Name
	if p.Namespace != "" {
		id = p.Namespace + "/" + p.Name
	}
	return strings.ToLower(p.Kind) + " " + id + ": " + p.Msg
}

func compareProblems(a, b Problem) int {
	return cmp.Or(
		cmp.Compare(a.Kind, b.Kind),
		cmp.Compare(a.Namespace, b.Namespace),
		cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Msg, b.Msg),
	)
}

// backendKey identifies a backend: a Service port as an Ingress names it.
type backendKey struct {
	ns, svc, port string
}

func (k backendKey) id() string { return k.ns + "/" + k.svc + ":" + k.port }

// pendingRoute is a route before backend indexes are assigned.
type pendingRoute struct {
	r   route.Route
	key backendKey
	ing *netv1.Ingress
}

// Build turns the objects of in into a snapshot (Version 0, zero Built, not
// bound to a registry) and the Problems found, sorted and without
// duplicates. It is pure and deterministic: the same set of objects, in any
// order, gives the same snapshot hash and the same Problems. It never
// panics.
//
// Semantics, following the Ingress v1 documentation:
//
//   - An Ingress is ours when its spec.ingressClassName is the configured
//     class name and the IngressClass of that name exists with controller
//     ControllerName; naming it while it does not exist is a Problem. The
//     legacy kubernetes.io/ingress.class annotation (read only when
//     spec.ingressClassName is unset) predates IngressClass objects: it
//     selects the configured name when that IngressClass has controller
//     ControllerName or does not exist. A class-less Ingress is ours when
//     that IngressClass exists, is ours and is annotated as the cluster
//     default. Other classes are ignored silently, even when their
//     controller is ours: they belong to another edgegate fleet configured
//     with their name.
//   - Ingresses claim rules oldest first (creationTimestamp, then
//     namespace/name); a later identical host+type+path is dropped with a
//     Problem. The oldest Ingress with a usable spec.defaultBackend provides
//     the default route; the others get a Problem.
//   - ImplementationSpecific (and an unset pathType) is Prefix; its empty
//     path means "/". Paths must start with "/". Hosts are lower-cased and
//     must be DNS-1123 subdomains, optionally with a leading "*." label.
//   - Each distinct namespace/service:port is one Backend. A missing Service
//     or port, or an ExternalName Service, leaves the Backend with an Error
//     (requests get 503) and a Problem on each Ingress routing to it. A
//     Service without ready endpoints is not a Problem.
//   - Endpoints are the first address of each EndpointSlice endpoint
//     (IPv4 and IPv6 slices; FQDN slices are skipped) whose ready condition
//     is unset or true, with the port of the slice port named like the
//     Service port. A terminating endpoint is ready only when its Service
//     publishes not-ready addresses, and is then used like any other. When
//     a Service port has no ready endpoint in any of its slices, its
//     endpoints that are serving (unset: as ready) and terminating are used
//     instead, as kube-proxy does (KEP-1669), so that the last pods of a
//     rolling update finish draining rather than every request getting 503.
//     A dual-stack Service (two spec.ipFamilies) uses the addresses of its
//     primary family, the other family's only when there are none.
//     Addresses are deduplicated and sorted.
//   - TLS (spec.tls): hosts are lower-cased; an entry without hosts covers
//     the Ingress's own rule hosts. An entry without secretName is a
//     Problem and skipped. The Secret is looked up only in the Ingress's
//     own namespace ("other/x" is just a name that does not exist). For
//     each host the oldest Ingress claiming TLS for it wins; a later,
//     different Secret for the host is a Problem. The Secret must be of
//     type kubernetes.io/tls with a matching tls.crt and tls.key whose
//     leaf is valid at in.Now; otherwise the host keeps a route.Cert with
//     Error set (the default certificate answers) and its Ingress gets a
//     Problem naming the Secret. A certificate that does not cover its host
//     is served, with a warning Problem. Fingerprint is FNV-64a of tls.crt
//     and tls.key (set whenever both are present).
//   - ACME (in.TLS.ACME): every valid exact rule host of our Ingresses
//     annotated edgegate.io/acme: "true" (of all our Ingresses with
//     in.TLS.ACMEAllHosts) that no Secret-based entry covers, exactly or by
//     a wildcard, may use ACME. Wildcard hosts never may; opting one in
//     without a Secret is a Problem.
//   - Redirects (in.TLS.Redirect): a rule redirects plain HTTP to HTTPS
//     when its host has a TLS entry (exact or a covering wildcard, usable
//     or not) or is an ACME host, unless its Ingress is annotated
//     edgegate.io/ssl-redirect: "false". Hostless rules and the default
//     backend never redirect.
func Build(in Input) (*route.Snapshot, []Problem) {
	snap, problems, _ := build(in, false)
	return snap, problems
}

// build is Build; with withState it also returns what an incremental
// Ingress update needs to continue from the result (see incState).
func build(in Input, withState bool) (*route.Snapshot, []Problem, *incState) {
	b := &builder{}
	className := in.IngressClassName
	if className == "" {
		className = DefaultIngressClassName
	}
	cls := b.classes(className, in.Classes)
	ings := b.ourIngresses(cls, in.Ingresses)
	svcs, sls := indexObjects(in.Services, in.Slices)
	tlsRes := b.tls(&in, ings)

	var pending []pendingRoute
	var def *pendingRoute
	var defOwner route.IngressRef
	for _, ing := range ings {
		ref := route.IngressRef{Namespace: ing.Namespace, Name: ing.Name}
		if db := ing.Spec.DefaultBackend; db != nil {
			key, msg := backendOf(ing.Namespace, db)
			switch {
			case msg != "":
				b.ingressProblem(ing, "defaultBackend: "+msg)
			case def != nil:
				b.ingressProblem(ing, "defaultBackend ignored: ingress "+defOwner.String()+" is older and sets one")
			default:
				def = &pendingRoute{r: route.Route{Type: route.Prefix, Ingress: ref}, key: key}
				defOwner = ref
			}
		}
		for ri := range ing.Spec.Rules {
			pending = b.rule(ing, ref, &ing.Spec.Rules[ri], pending)
		}
	}

	// Backends: deduplicated, sorted by ID, resolved against the Services
	// and EndpointSlices.
	keys := make(map[backendKey]int)
	for _, p := range pending {
		keys[p.key] = 0
	}
	if def != nil {
		keys[def.key] = 0
	}
	sorted := make([]backendKey, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.SortFunc(sorted, func(a, b backendKey) int {
		return cmp.Or(cmp.Compare(a.id(), b.id()), cmp.Compare(a.ns, b.ns), cmp.Compare(a.svc, b.svc))
	})
	backends := make([]*route.Backend, len(sorted))
	for i, k := range sorted {
		keys[k] = i
		be := &route.Backend{Namespace: k.ns, Service: k.svc, Port: k.port}
		be.Addrs, be.Error = ResolveEndpoints(k.ns, k.svc, k.port, svcs[nsName{k.ns, k.svc}], sls[nsName{k.ns, k.svc}])
		backends[i] = be
	}
	routes := make([]route.Route, len(pending))
	for i, p := range pending {
		routes[i] = p.r
		routes[i].Backend = keys[p.key]
		routes[i].RedirectHTTPS = tlsRes.redirect(in.TLS, p.ing, p.r.Host)
	}
	var defRoute *route.Route
	if def != nil {
		def.r.Backend = keys[def.key]
		defRoute = &def.r
	}

	snap, conflicts := route.New(routes, backends, defRoute)
	for _, c := range conflicts {
		b.conflictProblem(c)
	}
	if len(conflicts) > 0 {
		snap = compact(snap)
	}
	acme := make([]string, 0, len(tlsRes.acme))
	for h := range tlsRes.acme {
		acme = append(acme, h)
	}
	slices.Sort(acme)
	snap.SetTLS(tlsRes.certs, acme)

	// A Problem on each Ingress routing to a backend that has an Error.
	for _, t := range snap.Hosts() {
		for _, r := range t.Routes {
			if be := snap.Backends[r.Backend]; be.Error != "" {
				b.hostProblem(r.Ingress, r.Host, backendProblem(be))
			}
		}
	}
	if d := snap.Default; d != nil {
		if be := snap.Backends[d.Backend]; be.Error != "" {
			b.problems = append(b.problems, Problem{Kind: KindIngress, Namespace: d.Ingress.Namespace, Name: d.Ingress.Name, Msg: backendProblem(be)})
		}
	}

	var st *incState
	if withState {
		st = newIncState(in.TLS, cls, tlsRes, ings, snap, b)
	}
	return snap, b.all(), st
}

func backendProblem(be *route.Backend) string { return "backend " + be.ID() + ": " + be.Error }

func (b *builder) conflictProblem(c route.Conflict) {
	host := c.Route.Host
	if host == "" {
		host = "(any)"
	}
	b.hostProblem(c.Route.Ingress, c.Route.Host,
		fmt.Sprintf("host %s %s path %q ignored: already claimed by ingress %s (oldest first, then by namespace/name)",
			host, c.Route.Type, c.Route.Path, c.Winner))
}

// eachRoute calls fn for every route of s, the default included.
func eachRoute(s *route.Snapshot, fn func(*route.Route)) {
	for _, t := range s.Hosts() {
		for _, r := range t.Routes {
			fn(r)
		}
	}
	if s.Default != nil {
		fn(s.Default)
	}
}

// compact drops the backends no route of s uses (those only conflicting
// rules referred to), rebuilding s when there are any.
func compact(s *route.Snapshot) *route.Snapshot {
	used := make([]bool, len(s.Backends))
	eachRoute(s, func(r *route.Route) { used[r.Backend] = true })
	if !slices.Contains(used, false) {
		return s
	}
	remap := make([]int, len(s.Backends))
	var backends []*route.Backend
	for i, be := range s.Backends {
		if used[i] {
			remap[i] = len(backends)
			backends = append(backends, &route.Backend{
				Namespace: be.Namespace, Service: be.Service, Port: be.Port, Error: be.Error, Addrs: be.Addrs,
			})
		}
	}
	var routes []route.Route
	for _, t := range s.Hosts() {
		for _, r := range t.Routes {
			nr := *r
			nr.Backend = remap[r.Backend]
			routes = append(routes, nr)
		}
	}
	var def *route.Route
	if s.Default != nil {
		d := *s.Default
		d.Backend = remap[d.Backend]
		def = &d
	}
	// The surviving routes cannot conflict, so their order does not matter.
	n, _ := route.New(routes, backends, def)
	return n
}

type builder struct {
	// problems are those of the whole build: IngressClass, TLS and
	// default-backend problems.
	problems []Problem
	// scoped are the problems of one Ingress's rules for one host (path
	// problems, conflicts, backend errors): an incremental update replaces
	// those of the hosts it rebuilds.
	scoped map[ingHost][]Problem
	// noClass holds the problem of each Ingress that names the configured
	// class while no IngressClass of that name exists; an incremental
	// update replaces those of the Ingresses it applies.
	noClass map[nsName]Problem
}

// ingHost names the rules of one Ingress for one (lower-case) host.
type ingHost struct {
	ns, name, host string
}

func (b *builder) ingressProblem(ing *netv1.Ingress, msg string) {
	b.problems = append(b.problems, Problem{Kind: KindIngress, Namespace: ing.Namespace, Name: ing.Name, Msg: msg})
}

// hostProblem records a problem of ing's rules for host.
func (b *builder) hostProblem(ing route.IngressRef, host, msg string) {
	if b.scoped == nil {
		b.scoped = make(map[ingHost][]Problem)
	}
	k := ingHost{ing.Namespace, ing.Name, host}
	b.scoped[k] = append(b.scoped[k], Problem{Kind: KindIngress, Namespace: ing.Namespace, Name: ing.Name, Msg: msg})
}

// all returns every problem, sorted and without duplicates.
func (b *builder) all() []Problem {
	out := slices.Clone(b.problems)
	for _, ps := range b.scoped {
		out = append(out, ps...)
	}
	for _, p := range b.noClass {
		out = append(out, p)
	}
	slices.SortFunc(out, compareProblems)
	return slices.Compact(out)
}

// classSet answers which Ingresses are ours by their class.
type classSet struct {
	configured string
	// byName holds every IngressClass by name: true when its controller
	// is ours.
	byName map[string]bool
	// defaultOurs is set when the configured IngressClass is ours and the
	// cluster default.
	defaultOurs bool
}

func (b *builder) classes(configured string, list []*netv1.IngressClass) *classSet {
	cs := &classSet{configured: configured, byName: make(map[string]bool)}
	for _, ic := range list {
		if ic == nil {
			continue
		}
		mine := ic.Spec.Controller == ControllerName
		// Names are unique in a cluster; should a name repeat anyway, our
		// controller wins so the result does not depend on order.
		cs.byName[ic.Name] = cs.byName[ic.Name] || mine
		if mine && ic.Name == configured && ic.Annotations[netv1.AnnotationIsDefaultIngressClass] == "true" {
			cs.defaultOurs = true
		}
	}
	if mine, ok := cs.byName[configured]; ok && !mine {
		ctrl := ""
		for _, ic := range list {
			if ic != nil && ic.Name == configured && ctrl == "" {
				ctrl = ic.Spec.Controller
			}
		}
		b.problems = append(b.problems, Problem{
			Kind: KindIngressClass, Name: configured,
			Msg: fmt.Sprintf("controller is %q, not %q: its ingresses are not served", ctrl, ControllerName),
		})
	}
	return cs
}

// unmatchablePath explains why a path can never match a request, or returns
// "". Request paths are matched after normalisation (no empty, "." or ".."
// segments; percent-decoded), so a rule with such segments would silently
// never match. The API server rejects these for Exact and Prefix but not for
// ImplementationSpecific.
func unmatchablePath(path string) string {
	if strings.ContainsAny(path, "?#") {
		return "contains a query or fragment marker"
	}
	segs := strings.Split(path[1:], "/")
	for i, seg := range segs {
		switch {
		case seg == "." || seg == "..":
			return "contains a dot segment; request paths are normalised before matching, so it can never match"
		case seg == "" && i < len(segs)-1:
			return "contains an empty segment (\"//\"); request paths are normalised before matching, so it can never match"
		}
	}
	return ""
}

// claims reports whether ing is ours by its class: spec.ingressClassName
// must name the configured IngressClass, which must exist and be ours; the
// legacy annotation, read only without spec.ingressClassName, may also name
// it while it does not exist; a class-less Ingress is ours when the
// configured IngressClass is ours and the cluster default.
func (c *classSet) claims(ing *netv1.Ingress) bool {
	if n := ing.Spec.IngressClassName; n != nil && *n != "" {
		return *n == c.configured && c.byName[*n]
	}
	if n := ing.Annotations[annIngressClass]; n != "" {
		mine, ok := c.byName[n]
		return n == c.configured && (mine || !ok)
	}
	return c.defaultOurs
}

// missing reports whether ing names the configured class by
// spec.ingressClassName while no IngressClass of that name exists.
func (c *classSet) missing(ing *netv1.Ingress) bool {
	n := ing.Spec.IngressClassName
	if n == nil || *n != c.configured {
		return false
	}
	_, ok := c.byName[*n]
	return !ok
}

// missingProblem is the Problem of an Ingress for which c.missing holds.
func (c *classSet) missingProblem(ing *netv1.Ingress) Problem {
	return Problem{
		Kind: KindIngress, Namespace: ing.Namespace, Name: ing.Name,
		Msg: fmt.Sprintf("IngressClass %s not found: the ingress is not served until it exists with controller %s",
			c.configured, ControllerName),
	}
}

// ourIngresses returns the Ingresses of ours in claim order, recording a
// Problem for each that names the configured class while it does not
// exist.
func (b *builder) ourIngresses(cs *classSet, list []*netv1.Ingress) []*netv1.Ingress {
	// Sort keys are read once into a contiguous slice: the caches hand the
	// Ingresses over in map order, scattered in memory, and a comparator
	// reaching into each object cost ~8% of a 10k-Ingress build. (namespace,
	// name) is unique, so an unstable sort gives the one order.
	type keyed struct {
		created  int64
		ns, name string
		ing      *netv1.Ingress
	}
	ks := make([]keyed, 0, len(list))
	for _, ing := range list {
		if ing == nil {
			continue
		}
		if !cs.claims(ing) {
			if cs.missing(ing) {
				if b.noClass == nil {
					b.noClass = make(map[nsName]Problem)
				}
				b.noClass[nsName{ing.Namespace, ing.Name}] = cs.missingProblem(ing)
			}
			continue
		}
		ks = append(ks, keyed{ing.CreationTimestamp.UnixNano(), ing.Namespace, ing.Name, ing})
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		return cmp.Or(cmp.Compare(a.created, b.created), cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name))
	})
	out := make([]*netv1.Ingress, len(ks))
	for i := range ks {
		out[i] = ks[i].ing
	}
	return out
}

// validHost checks an Ingress rule host (already lower-cased).
func validHost(h string) string {
	if h == "" {
		return ""
	}
	if net.ParseIP(h) != nil {
		return "an IP address is not allowed"
	}
	if isDNSSubdomain(strings.TrimPrefix(h, "*.")) && len(h) <= validation.DNS1123SubdomainMaxLength {
		return "" // the common case, without the validation package's regexp
	}
	var errs []string
	if strings.HasPrefix(h, "*") {
		errs = validation.IsWildcardDNS1123Subdomain(h)
	} else {
		errs = validation.IsDNS1123Subdomain(h)
	}
	return strings.Join(errs, "; ")
}

// isDNSSubdomain reports whether s matches the DNS-1123 subdomain pattern
// (lower-case alphanumeric labels with inner '-', joined by '.'); the
// caller checks the length. It accepts exactly what
// validation.IsDNS1123Subdomain's regular expression accepts.
func isDNSSubdomain(s string) bool {
	if s == "" {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
			continue
		}
		if i == start || s[start] == '-' || s[i-1] == '-' {
			return false // empty label, or one that starts or ends with '-'
		}
		start = i + 1
	}
	return true
}

func (b *builder) rule(ing *netv1.Ingress, ref route.IngressRef, rule *netv1.IngressRule, out []pendingRoute) []pendingRoute {
	if rule.HTTP == nil {
		return out
	}
	host := strings.ToLower(rule.Host)
	if msg := validHost(host); msg != "" {
		b.hostProblem(ref, host, fmt.Sprintf("rule host %q skipped: %s", rule.Host, msg))
		return out
	}
	for _, p := range rule.HTTP.Paths {
		typ := netv1.PathTypeImplementationSpecific
		if p.PathType != nil {
			typ = *p.PathType
		}
		path := p.Path
		var rt route.PathType
		switch typ {
		case netv1.PathTypeExact:
			rt = route.Exact
		case netv1.PathTypePrefix:
			rt = route.Prefix
		case netv1.PathTypeImplementationSpecific:
			rt = route.Prefix
			if path == "" {
				path = "/"
			}
		default:
			b.hostProblem(ref, host, fmt.Sprintf("path %q skipped: unknown pathType %q", p.Path, typ))
			continue
		}
		if !strings.HasPrefix(path, "/") {
			b.hostProblem(ref, host, fmt.Sprintf("path %q skipped: must start with \"/\"", p.Path))
			continue
		}
		check := path
		if rt == route.Prefix { // trailing slashes are ignored for Prefix
			check = route.PrefixKey(path) + "/"
		}
		if msg := unmatchablePath(check); msg != "" {
			b.hostProblem(ref, host, fmt.Sprintf("path %q skipped: %s", p.Path, msg))
			continue
		}
		key, msg := backendOf(ing.Namespace, &p.Backend)
		if msg != "" {
			b.hostProblem(ref, host, fmt.Sprintf("path %q skipped: %s", p.Path, msg))
			continue
		}
		out = append(out, pendingRoute{
			r:   route.Route{Host: host, Path: path, Type: rt, Ingress: ref},
			key: key,
			ing: ing,
		})
	}
	return out
}

// backendOf validates an Ingress backend; msg says why it is unusable.
func backendOf(ns string, be *netv1.IngressBackend) (k backendKey, msg string) {
	if be.Resource != nil {
		return k, "resource backends are not supported"
	}
	s := be.Service
	if s == nil {
		return k, "backend has no service"
	}
	if s.Name == "" {
		return k, "backend service has no name"
	}
	var port string
	switch {
	case s.Port.Number != 0 && s.Port.Name != "":
		return k, fmt.Sprintf("backend service %s sets both port number and name", s.Name)
	case s.Port.Number > 0 && s.Port.Number <= 65535:
		port = strconv.Itoa(int(s.Port.Number))
	case s.Port.Number != 0:
		return k, fmt.Sprintf("backend service %s has invalid port number %d", s.Name, s.Port.Number)
	case s.Port.Name != "":
		port = s.Port.Name
	default:
		return k, fmt.Sprintf("backend service %s has no port", s.Name)
	}
	return backendKey{ns: ns, svc: s.Name, port: port}, ""
}

type nsName struct{ ns, name string }

// indexObjects indexes Services by namespace/name and EndpointSlices by
// namespace/service-name label.
func indexObjects(svcList []*corev1.Service, sliceList []*discoveryv1.EndpointSlice) (map[nsName]*corev1.Service, map[nsName][]*discoveryv1.EndpointSlice) {
	svcs := make(map[nsName]*corev1.Service, len(svcList))
	for _, s := range svcList {
		if s == nil {
			continue
		}
		k := nsName{s.Namespace, s.Name}
		// Duplicates cannot come from a lister; keep the result
		// order-independent anyway.
		if o, ok := svcs[k]; ok && o.ResourceVersion >= s.ResourceVersion {
			continue
		}
		svcs[k] = s
	}
	sls := make(map[nsName][]*discoveryv1.EndpointSlice)
	for _, s := range sliceList {
		if s == nil {
			continue
		}
		if svc := s.Labels[labelServiceName]; svc != "" {
			k := nsName{s.Namespace, svc}
			sls[k] = append(sls[k], s)
		}
	}
	return svcs, sls
}

// ResolveEndpoints resolves the Ingress backend namespace/service:port
// against its Service (nil when it does not exist) and the EndpointSlices of
// that Service. It returns the ready endpoint addresses (or, when there are
// none, the serving terminating ones), sorted and deduplicated, or an error
// message when the backend cannot have endpoints.
// port is a port number ("80") or a port name ("http"): IANA service names
// always contain a letter, so an all-digit port is a number.
//
// Build and the Watcher's endpoint-only updates both resolve through it, so
// the two paths agree.
func ResolveEndpoints(ns, svcName, port string, svc *corev1.Service, sls []*discoveryv1.EndpointSlice) (addrs []string, errMsg string) {
	if svc == nil {
		return nil, "service " + ns + "/" + svcName + " not found"
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, "ExternalName services are not supported"
	}
	sp, ok := servicePort(svc, port)
	if !ok {
		return nil, "service " + ns + "/" + svcName + " has no port " + port
	}
	var draining []string // serving and terminating: used only without ready ones
	for _, sl := range sls {
		if sl == nil || sl.Namespace != ns || sl.Labels[labelServiceName] != svcName {
			continue
		}
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		num := -1
		for _, p := range sl.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == sp.Name && p.Port != nil && *p.Port > 0 && *p.Port <= 65535 {
				num = int(*p.Port)
				break
			}
		}
		if num < 0 {
			continue
		}
		ps := strconv.Itoa(num)
		for i := range sl.Endpoints {
			ep := &sl.Endpoints[i]
			ready, drain := endpointUse(ep.Conditions)
			if !ready && !drain {
				continue
			}
			if len(ep.Addresses) == 0 {
				continue
			}
			// The addresses of one endpoint are fungible; like kube-proxy
			// use the first only so a pod is not weighted twice.
			a, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil || a.Zone() != "" || a.Is4In6() {
				continue
			}
			if a.Is4() != (sl.AddressType == discoveryv1.AddressTypeIPv4) {
				continue
			}
			if ready {
				addrs = append(addrs, net.JoinHostPort(a.String(), ps))
			} else {
				draining = append(draining, net.JoinHostPort(a.String(), ps))
			}
		}
	}
	if len(addrs) == 0 {
		addrs = draining
	}
	if fams := svc.Spec.IPFamilies; len(fams) == 2 {
		// Dual-stack: every pod is in both families' slices. Use the
		// Service's primary family, so that a pod is not weighted twice and
		// an edge routing only one family to the pods is not sent the
		// other, unless only the other has endpoints.
		addrs = preferFamily(addrs, fams[0])
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), ""
}

// preferFamily returns the addresses ("ip:port") of family fam, or all of
// them when none is of that family.
func preferFamily(addrs []string, fam corev1.IPFamily) []string {
	v6 := fam == corev1.IPv6Protocol
	var out []string
	for _, a := range addrs {
		if strings.HasPrefix(a, "[") == v6 {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return addrs
	}
	return out
}

// endpointUse tells from its conditions whether an endpoint takes new
// requests: ready when its ready condition is unset or true; drain when it
// is not ready but serving (unset: as ready) and terminating, a fallback for
// when a Service port has no ready endpoint (kube-proxy's, KEP-1669).
func endpointUse(c discoveryv1.EndpointConditions) (ready, drain bool) {
	ready = c.Ready == nil || *c.Ready
	serving := ready
	if c.Serving != nil {
		serving = *c.Serving
	}
	terminating := c.Terminating != nil && *c.Terminating
	return ready, !ready && serving && terminating
}

// servicePort finds the Service port an Ingress backend port refers to.
func servicePort(svc *corev1.Service, port string) (corev1.ServicePort, bool) {
	num, err := strconv.ParseInt(port, 10, 32)
	byNumber := err == nil
	for _, p := range svc.Spec.Ports {
		if byNumber && int64(p.Port) == num || !byNumber && p.Name == port {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}
