// Package route owns the immutable route snapshot the proxy reads on every
// request: host tables, path rules in Ingress v1 precedence order, backends
// with their ready endpoints, and the allocation-free lookup over them.
//
// It exists apart from discovery (which builds snapshots) and proxy (which
// reads them) so that both sides share one small, well-tested type and the
// matching rules live in exactly one place.
//
// A Snapshot is never modified after New returns. Endpoint changes produce a
// new Snapshot with WithBackends, which shares every route table with its
// parent and replaces only the backend list (copy-on-write), so their cost
// does not grow with the number of Ingresses.
package route

import (
	"cmp"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/edgegate/edgegate/balancer"
)

// PathType is an Ingress v1 path type. ImplementationSpecific is treated as
// Prefix by edgegate and is recorded as such.
type PathType uint8

const (
	Prefix PathType = iota
	Exact
)

func (t PathType) String() string {
	if t == Exact {
		return "Exact"
	}
	return "Prefix"
}

// IngressRef names the Ingress a route came from.
type IngressRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r IngressRef) String() string { return r.Namespace + "/" + r.Name }

// Route is one host+path rule.
type Route struct {
	// Host is the lower-case host of the rule: "" for a hostless rule or
	// the default backend, "*.example.com" for a wildcard.
	Host string
	// Path is the path as written in the Ingress ("" for the default
	// backend).
	Path string
	Type PathType
	// Ingress is the Ingress that owns the rule.
	Ingress IngressRef
	// Backend is the index of the rule's backend in Snapshot.Backends.
	Backend int
	// RedirectHTTPS makes the plain-HTTP listener answer this rule with a
	// 308 to https: its host has TLS configured and its Ingress did not opt
	// out (edgegate.io/ssl-redirect: "false").
	RedirectHTTPS bool

	// key is Path normalised for matching: for Prefix, without trailing
	// slashes ("/" becomes "").
	key string
}

// Key is the normalised match key of the route (Prefix paths without
// trailing slashes). Two routes of one host with the same Type and Key
// conflict.
func (r *Route) Key() string { return r.key }

// Matches reports whether the request path p (already normalised by the
// HTTP server: absolute, no dot segments) matches the rule, per the Ingress
// v1 definitions: Exact compares the whole path case-sensitively; Prefix
// compares element-wise on "/" ("/foo" matches "/foo", "/foo/" and
// "/foo/bar", never "/foobar").
func (r *Route) Matches(p []byte) bool {
	if r.Type == Exact {
		return string(p) == r.Path
	}
	k := r.key
	if len(k) == 0 {
		return true
	}
	if len(p) < len(k) || string(p[:len(k)]) != k {
		return false
	}
	return len(p) == len(k) || p[len(k)] == '/'
}

// matchLen is the length the precedence rules compare: the longest match
// wins, and Exact beats Prefix at equal length.
func (r *Route) matchLen() int {
	if r.Type == Exact {
		return len(r.Path)
	}
	return len(r.key)
}

// PrefixKey returns the match key of a Prefix path: the path without
// trailing slashes.
func PrefixKey(path string) string { return strings.TrimRight(path, "/") }

// Backend is a Service port with its ready endpoints at build time.
type Backend struct {
	Namespace string
	Service   string
	// Port is the service port as the Ingress named it: a number ("80") or a
	// name ("http").
	Port string
	// Error, when set, says why the backend has no endpoints (for example
	// the Service does not exist). Requests to it get 503.
	Error string
	// Addrs are the ready endpoint addresses (host:port), sorted.
	Addrs []string
	// Endpoints are the live endpoints for Addrs, in the same order; set by
	// Bind. Immutable once published.
	Endpoints []*balancer.Endpoint

	// RR is the round-robin state for this backend. It is the only mutable
	// part of a snapshot and is only touched atomically.
	RR balancer.RoundRobin

	hash uint64
}

// ID is "namespace/service:port".
func (b *Backend) ID() string { return b.Namespace + "/" + b.Service + ":" + b.Port }

// Bind resolves Addrs to live endpoints from reg. It must be called before
// the snapshot holding b is published.
func (b *Backend) Bind(reg *balancer.Registry) {
	b.Endpoints = make([]*balancer.Endpoint, len(b.Addrs))
	for i, a := range b.Addrs {
		b.Endpoints[i] = reg.Acquire(a)
	}
}

func (b *Backend) computeHash() uint64 {
	h := fnv.New64a()
	for _, s := range []string{b.Namespace, b.Service, b.Port, b.Error} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	for _, a := range b.Addrs {
		h.Write([]byte(a))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// HostTable is the rules of one host in precedence order.
type HostTable struct {
	Host   string
	Routes []*Route

	hash uint64 // of the routes, naming backends by ID (see tableHash)
}

func (t *HostTable) match(p []byte) *Route {
	for _, r := range t.Routes {
		if r.Matches(p) {
			return r
		}
	}
	return nil
}

// Snapshot is an immutable route table. Read it only through an atomic
// pointer load; never modify it.
type Snapshot struct {
	// Version increases by one with every published snapshot.
	Version uint64
	// Built is when the snapshot was built.
	Built time.Time
	// Backends are indexed by Route.Backend. An entry may be nil: a free
	// slot no route refers to (Patch leaves them so that no other
	// backend's index moves).
	Backends []*Backend
	// Default answers requests no rule matches (spec.defaultBackend of the
	// oldest Ingress that sets one); nil means 404.
	Default *Route

	exact    map[string]*HostTable
	wildcard map[string]*HostTable // keyed by the suffix after "*."
	hostless *HostTable
	hosts    []*HostTable // every table, sorted by host, for listing
	routes   int          // number of routes in the tables
	// The hash is a sum of independent parts so that WithBackends and
	// Patch update it in proportion to what they change. No part depends
	// on backend indexes: equal content hashes equally however the
	// backends are laid out.
	tablesSum   uint64 // sum of mix64(table hash)
	defaultHash uint64
	backendsSum uint64 // sum of mix64(backend hash) over non-nil Backends
	tlsHash     uint64
	hash        uint64
	backendIx   map[string][]int // "namespace/service" -> backend indexes
	certs       map[string]*Cert // host or "*.suffix" -> certificate (SetTLS)
	acme        map[string]bool  // hosts that may use ACME (SetTLS)
}

// Conflict reports a rule dropped because an older Ingress already claimed
// the same host, path type and path.
type Conflict struct {
	Route  Route
	Winner IngressRef
}

// NormalizeRouteHost is the host key of a rule: lower case, without a
// trailing dot.
func NormalizeRouteHost(host string) string { return strings.TrimSuffix(strings.ToLower(host), ".") }

func (r *Route) normalize() {
	r.Host = NormalizeRouteHost(r.Host)
	if r.Type == Prefix {
		r.key = PrefixKey(r.Path)
	} else {
		r.key = r.Path
	}
}

// Claim resolves conflicts among routes given in claim order (oldest
// Ingress first): a route with the same host, type and match key as an
// earlier one loses. keep[i] reports whether routes[i] survives. New uses
// it; a caller rebuilding only some hosts (Patch) calls it per host, which
// gives the same answer since claims never cross hosts.
func Claim(routes []Route) (keep []bool, conflicts []Conflict) {
	type claimKey struct {
		host string
		typ  PathType
		key  string
	}
	keep = make([]bool, len(routes))
	claimed := make(map[claimKey]IngressRef, len(routes))
	for i := range routes {
		r := routes[i]
		r.normalize()
		ck := claimKey{r.Host, r.Type, r.key}
		if w, ok := claimed[ck]; ok {
			conflicts = append(conflicts, Conflict{Route: r, Winner: w})
			continue
		}
		claimed[ck] = r.Ingress
		keep[i] = true
	}
	return keep, conflicts
}

// New builds a snapshot. routes must be given in claim order (oldest Ingress
// first); a later route with the same host, type and match key as an earlier
// one is dropped and reported as a Conflict. def may be nil. Backends may
// hold nil slots no route refers to.
func New(routes []Route, backends []*Backend, def *Route) (*Snapshot, []Conflict) {
	s := &Snapshot{
		Backends:  backends,
		exact:     make(map[string]*HostTable),
		wildcard:  make(map[string]*HostTable),
		backendIx: make(map[string][]int),
	}
	for i, b := range backends {
		if b == nil {
			continue
		}
		b.hash = b.computeHash()
		s.backendsSum += mix64(b.hash)
		k := b.Namespace + "/" + b.Service
		s.backendIx[k] = append(s.backendIx[k], i)
	}
	if def != nil {
		d := *def
		d.Host, d.key = "", ""
		s.Default = &d
		s.defaultHash = defaultRouteHash(&d, backends)
	}

	keep, conflicts := Claim(routes)
	block := make([]Route, 0, len(routes)) // one allocation for every kept route
	for i := range routes {
		if keep[i] {
			block = append(block, routes[i])
			block[len(block)-1].normalize()
		}
	}
	ptrs := make([]*Route, len(block))
	for i := range block {
		ptrs[i] = &block[i]
	}
	slices.SortFunc(ptrs, func(a, b *Route) int { return strings.Compare(a.Host, b.Host) })
	for lo := 0; lo < len(ptrs); {
		hi := lo + 1
		for hi < len(ptrs) && ptrs[hi].Host == ptrs[lo].Host {
			hi++
		}
		t := ownTable(ptrs[lo].Host, ptrs[lo:hi:hi], backends)
		s.place(t)
		s.hosts = append(s.hosts, t)
		s.routes += len(t.Routes)
		s.tablesSum += mix64(t.hash)
		lo = hi
	}
	s.hash = s.combineHash()
	return s, conflicts
}

func compareTables(a, b *HostTable) int { return strings.Compare(a.Host, b.Host) }

// newTable makes the table of host from its surviving routes (any order);
// the table owns copies of them.
func newTable(host string, routes []Route, backends []*Backend) *HostTable {
	rs := make([]Route, len(routes))
	copy(rs, routes)
	ptrs := make([]*Route, len(rs))
	for i := range rs {
		rs[i].normalize()
		ptrs[i] = &rs[i]
	}
	return ownTable(host, ptrs, backends)
}

// ownTable makes a table of normalised routes it takes ownership of. No two
// of them conflict, so precedence orders them totally.
func ownTable(host string, routes []*Route, backends []*Backend) *HostTable {
	t := &HostTable{Host: host, Routes: routes}
	slices.SortFunc(t.Routes, func(a, b *Route) int {
		if c := cmp.Compare(b.matchLen(), a.matchLen()); c != 0 {
			return c
		}
		if a.Type != b.Type {
			if a.Type == Exact {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Path, b.Path)
	})
	t.hash = tableHash(t, backends)
	return t
}

// place files t under its host in the lookup maps.
func (s *Snapshot) place(t *HostTable) {
	switch host := t.Host; {
	case host == "":
		s.hostless = t
	case strings.HasPrefix(host, "*."):
		s.wildcard[host[2:]] = t
	default:
		s.exact[host] = t
	}
}

// Table returns the table of host exactly as written in the rules ("" for
// the hostless rules, "*.example.com" for a wildcard), nil when there is
// none. Unlike Match it does no wildcard or fallback lookup.
func (s *Snapshot) Table(host string) *HostTable {
	switch {
	case host == "":
		return s.hostless
	case strings.HasPrefix(host, "*."):
		return s.wildcard[host[2:]]
	default:
		return s.exact[host]
	}
}

// RouteCount is the number of rules in the host tables (the default route
// not included).
func (s *Snapshot) RouteCount() int { return s.routes }

// WithBackends returns a copy of s that shares its route tables and uses
// backends instead of s.Backends. backends must have the same length and
// order (same Namespace/Service/Port at each index, nil where s has nil);
// only their endpoints and errors may differ. Version and Built are left
// for the caller to set.
//
// A Backend pointer that s also holds at the same index is treated as
// unchanged (snapshots are immutable); every other Backend is hashed afresh,
// so a Backend built by copying an older one still changes the hash when its
// Addrs or Error differ.
func (s *Snapshot) WithBackends(backends []*Backend) *Snapshot {
	n := *s
	n.Backends = backends
	sum := s.backendsSum
	for i, b := range backends {
		var old *Backend
		if i < len(s.Backends) {
			old = s.Backends[i]
		}
		if old == b {
			continue
		}
		if old != nil {
			sum -= mix64(old.hash)
		}
		if b != nil {
			b.hash = b.computeHash()
			sum += mix64(b.hash)
		}
	}
	n.backendsSum = sum
	n.hash = n.combineHash()
	return &n
}

// Patch returns a copy of s with the tables of the hosts in tables
// replaced and backends instead of s.Backends; every other table is shared
// with s, so the cost is that of the patched hosts (plus copying the host
// index), not of the whole table. It is how an Ingress change is applied
// without rebuilding every host.
//
// tables maps a host key (NormalizeRouteHost) to the surviving routes of
// that host after Claim, in any order; an empty list removes the host.
// backends may be longer than s.Backends and hold nil slots; a slot that any
// table kept from s refers to must hold a backend with the same
// Namespace/Service/Port as in s. Certificates, ACME hosts and the default
// route carry over. Version and Built are left for the caller to set.
func (s *Snapshot) Patch(tables map[string][]Route, backends []*Backend) *Snapshot {
	n := *s
	n.Backends = backends
	n.exact = maps.Clone(s.exact)
	n.wildcard = maps.Clone(s.wildcard)

	// Backends: only the slots whose pointer changed.
	ixCloned := false
	for i := range max(len(s.Backends), len(backends)) {
		var old, b *Backend
		if i < len(s.Backends) {
			old = s.Backends[i]
		}
		if i < len(backends) {
			b = backends[i]
		}
		if old == b {
			continue
		}
		if !ixCloned {
			n.backendIx = maps.Clone(s.backendIx)
			ixCloned = true
		}
		if old != nil {
			n.backendsSum -= mix64(old.hash)
			k := old.Namespace + "/" + old.Service
			ix := slices.DeleteFunc(slices.Clone(n.backendIx[k]), func(j int) bool { return j == i })
			if len(ix) == 0 {
				delete(n.backendIx, k)
			} else {
				n.backendIx[k] = ix
			}
		}
		if b != nil {
			b.hash = b.computeHash()
			n.backendsSum += mix64(b.hash)
			k := b.Namespace + "/" + b.Service
			ix := append(slices.Clone(n.backendIx[k]), i)
			slices.Sort(ix)
			n.backendIx[k] = ix
		}
	}

	// Tables: drop the patched hosts from the sorted list, then merge the
	// new tables in.
	var added []*HostTable
	for host, routes := range tables {
		if old := s.Table(host); old != nil {
			n.tablesSum -= mix64(old.hash)
			n.routes -= len(old.Routes)
			switch {
			case host == "":
				n.hostless = nil
			case strings.HasPrefix(host, "*."):
				delete(n.wildcard, host[2:])
			default:
				delete(n.exact, host)
			}
		}
		if len(routes) == 0 {
			continue
		}
		t := newTable(host, routes, backends)
		n.place(t)
		n.tablesSum += mix64(t.hash)
		n.routes += len(t.Routes)
		added = append(added, t)
	}
	slices.SortFunc(added, compareTables)
	hosts := make([]*HostTable, 0, len(s.hosts)+len(added))
	for _, t := range s.hosts {
		if _, patched := tables[t.Host]; patched {
			continue
		}
		for len(added) > 0 && added[0].Host < t.Host {
			hosts = append(hosts, added[0])
			added = added[1:]
		}
		hosts = append(hosts, t)
	}
	n.hosts = append(hosts, added...)
	n.hash = n.combineHash()
	return &n
}

// SharesRoutes reports whether s and o hold the same route tables, the
// same *Route values: one was made from the other by WithBackends. Callers
// that key state by *Route skip work on endpoint-only changes with it.
func (s *Snapshot) SharesRoutes(o *Snapshot) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.Default == o.Default && s.hostless == o.hostless && len(s.hosts) == len(o.hosts) &&
		(len(s.hosts) == 0 || &s.hosts[0] == &o.hosts[0])
}

// BackendsOf returns the indexes in Backends of the backends that use the
// Service namespace/name.
func (s *Snapshot) BackendsOf(namespace, name string) []int {
	return s.backendIx[namespace+"/"+name]
}

// Hash identifies the routed content (rules, backends, endpoint addresses)
// independent of Version and Built: equal hashes mean nothing to publish.
func (s *Snapshot) Hash() uint64 { return s.hash }

// Hosts returns the host tables sorted by host ("" is the hostless table).
func (s *Snapshot) Hosts() []*HostTable { return s.hosts }

// Match returns the route for a request's Host header value and normalised
// path, or nil when neither a rule nor a default backend applies (404). The
// host may carry a port and any letter case. Precedence follows Ingress v1:
// the host is chosen first (exact, then a wildcard matching exactly one
// label, then hostless rules), then the longest matching path of that host;
// when no path of the chosen host matches, the default backend answers.
// A host longer than MaxHostLen after stripping its port and trailing dot is
// not a DNS name: it matches only hostless rules. Match is safe on a nil
// Snapshot (it returns nil) and does not allocate.
func (s *Snapshot) Match(host, path []byte) *Route {
	if s == nil {
		return nil
	}
	if len(path) == 0 {
		path = slashPath
	}
	var buf [MaxHostLen]byte
	h, ok := lowerHost(trimHost(host), &buf)
	if !ok {
		h = nil
	}
	if t := s.tableFor(h); t != nil {
		if r := t.match(path); r != nil {
			return r
		}
	}
	return s.Default
}

// MaxHostLen is the longest host Match looks up in the host tables: a DNS
// name has at most 253 characters, so 256 leaves room to spare.
const MaxHostLen = 256

var slashPath = []byte("/")

func (s *Snapshot) tableFor(h []byte) *HostTable {
	if len(h) > 0 {
		if t, ok := s.exact[string(h)]; ok {
			return t
		}
		if len(s.wildcard) > 0 {
			if i := indexByte(h, '.'); i > 0 && i < len(h)-1 {
				if t, ok := s.wildcard[string(h[i+1:])]; ok {
					return t
				}
			}
		}
	}
	return s.hostless
}

// NormalizeHost lower-cases a Host header value and strips its port
// (including after an IPv6 literal, "[::1]:80") and one trailing dot. When
// no letter needs lower-casing it returns a sub-slice of host and leaves dst
// alone; otherwise it writes the result into dst[:0], growing it when
// cap(dst) is too small, and returns that.
func NormalizeHost(host []byte, dst []byte) []byte { return normalizeHost(host, dst) }

func normalizeHost(host []byte, dst []byte) []byte {
	h := trimHost(host)
	if !hasUpper(h) {
		return h
	}
	dst = dst[:0]
	for _, c := range h {
		dst = append(dst, lower(c))
	}
	return dst
}

// trimHost strips the port and one trailing dot from a Host header value.
func trimHost(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' { // IPv6 literal, "[::1]:8080"
		if i := indexByte(h, ']'); i > 0 {
			h = h[:i+1]
		}
	} else if i := lastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	if len(h) > 0 && h[len(h)-1] == '.' {
		h = h[:len(h)-1]
	}
	return h
}

// lowerHost returns h lower-cased, using buf when a copy is needed. It
// reports false, without allocating, when h is longer than buf.
func lowerHost(h []byte, buf *[MaxHostLen]byte) ([]byte, bool) {
	if len(h) > len(buf) {
		return nil, false
	}
	if !hasUpper(h) {
		return h, true
	}
	for i, c := range h {
		buf[i] = lower(c)
	}
	return buf[:len(h)], true
}

func hasUpper(h []byte) bool {
	for _, c := range h {
		if 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// tableHash hashes the routes of t in order. Each route names its backend
// by ID, not by index, so the hash does not depend on the backends' layout.
func tableHash(t *HostTable, backends []*Backend) uint64 {
	h := newFNV()
	for _, r := range t.Routes {
		h.route(r, backends)
	}
	return uint64(h)
}

func defaultRouteHash(r *Route, backends []*Backend) uint64 {
	h := newFNV()
	h.str("default")
	h.route(r, backends)
	return uint64(h)
}

// fnv64a is FNV-1a over strings, each followed by a 0 byte, without the
// allocations of hash/fnv's io.Writer interface.
type fnv64a uint64

func newFNV() fnv64a { return 14695981039346656037 }

func (h *fnv64a) str(s string) {
	x := uint64(*h)
	for i := 0; i < len(s); i++ {
		x ^= uint64(s[i])
		x *= 1099511628211
	}
	x *= 1099511628211 // the 0 separator: x ^= 0 is a no-op
	*h = fnv64a(x)
}

func (h *fnv64a) route(r *Route, backends []*Backend) {
	h.str(r.Host)
	h.str(r.Path)
	h.str(r.Type.String())
	h.str(r.Ingress.Namespace)
	h.str(r.Ingress.Name)
	if r.RedirectHTTPS {
		h.str("redirect")
	} else {
		h.str("")
	}
	if uint(r.Backend) < uint(len(backends)) && backends[r.Backend] != nil {
		b := backends[r.Backend]
		h.str(b.Namespace)
		h.str(b.Service)
		h.str(b.Port)
	} else {
		h.str("\x01")
	}
}

// combineHash mixes the route, backend and TLS hashes. Every part is a sum
// or a fixed mix, so WithBackends and Patch update it in proportion to what
// they change.
func (s *Snapshot) combineHash() uint64 {
	routes := s.tablesSum + mix64(s.defaultHash^0x2545f4914f6cdd1d)
	return mix64(routes ^ mix64(s.backendsSum+0x9e3779b97f4a7c15) ^ mix64(s.tlsHash+0x632be59bd9b4e019))
}

// mix64 is the splitmix64 finaliser: a cheap bijective bit mixer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
