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
	"encoding/binary"
	"hash/fnv"
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
	// Backends are indexed by Route.Backend.
	Backends []*Backend
	// Default answers requests no rule matches (spec.defaultBackend of the
	// oldest Ingress that sets one); nil means 404.
	Default *Route

	exact       map[string]*HostTable
	wildcard    map[string]*HostTable // keyed by the suffix after "*."
	hostless    *HostTable
	hosts       []*HostTable // every table, sorted by host, for listing
	routeHash   uint64
	backendsSum uint64 // sum of mixBackend(i, Backends[i].hash)
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

// New builds a snapshot. routes must be given in claim order (oldest Ingress
// first); a later route with the same host, type and match key as an earlier
// one is dropped and reported as a Conflict. def may be nil.
func New(routes []Route, backends []*Backend, def *Route) (*Snapshot, []Conflict) {
	s := &Snapshot{
		Backends:  backends,
		exact:     make(map[string]*HostTable),
		wildcard:  make(map[string]*HostTable),
		backendIx: make(map[string][]int),
	}
	for i, b := range backends {
		b.hash = b.computeHash()
		k := b.Namespace + "/" + b.Service
		s.backendIx[k] = append(s.backendIx[k], i)
	}
	if def != nil {
		d := *def
		d.Host, d.key = "", ""
		s.Default = &d
	}

	type claimKey struct {
		host string
		typ  PathType
		key  string
	}
	claimed := make(map[claimKey]IngressRef, len(routes))
	var conflicts []Conflict
	tables := make(map[string]*HostTable)
	for i := range routes {
		r := routes[i] // copy: the snapshot owns its routes
		r.Host = strings.TrimSuffix(strings.ToLower(r.Host), ".")
		if r.Type == Prefix {
			r.key = PrefixKey(r.Path)
		} else {
			r.key = r.Path
		}
		ck := claimKey{r.Host, r.Type, r.key}
		if w, ok := claimed[ck]; ok {
			conflicts = append(conflicts, Conflict{Route: r, Winner: w})
			continue
		}
		claimed[ck] = r.Ingress
		t := tables[r.Host]
		if t == nil {
			t = &HostTable{Host: r.Host}
			tables[r.Host] = t
		}
		t.Routes = append(t.Routes, &r)
	}
	for host, t := range tables {
		slices.SortStableFunc(t.Routes, func(a, b *Route) int {
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
		switch {
		case host == "":
			s.hostless = t
		case strings.HasPrefix(host, "*."):
			s.wildcard[host[2:]] = t
		default:
			s.exact[host] = t
		}
		s.hosts = append(s.hosts, t)
	}
	slices.SortFunc(s.hosts, func(a, b *HostTable) int { return strings.Compare(a.Host, b.Host) })
	s.routeHash = s.computeRouteHash()
	s.backendsSum = s.sumBackends()
	s.hash = s.combineHash()
	return s, conflicts
}

// WithBackends returns a copy of s that shares its route tables and uses
// backends instead of s.Backends. backends must have the same length and
// order (same Namespace/Service/Port at each index); only their endpoints
// and errors may differ. Version and Built are left for the caller to set.
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
		if i < len(s.Backends) && s.Backends[i] == b {
			continue
		}
		b.hash = b.computeHash()
		if i < len(s.Backends) {
			sum -= mixBackend(i, s.Backends[i].hash)
		}
		sum += mixBackend(i, b.hash)
	}
	n.backendsSum = sum
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

func (s *Snapshot) computeRouteHash() uint64 {
	h := fnv.New64a()
	var n [8]byte
	writeRoute := func(r *Route) {
		redirect := ""
		if r.RedirectHTTPS {
			redirect = "redirect"
		}
		for _, x := range []string{r.Host, r.Path, r.Type.String(), r.Ingress.Namespace, r.Ingress.Name, redirect} {
			h.Write([]byte(x))
			h.Write([]byte{0})
		}
		binary.LittleEndian.PutUint64(n[:], uint64(r.Backend))
		h.Write(n[:])
	}
	for _, t := range s.hosts {
		for _, r := range t.Routes {
			writeRoute(r)
		}
	}
	if s.Default != nil {
		h.Write([]byte("default\x00"))
		writeRoute(s.Default)
	}
	return h.Sum64()
}

// combineHash mixes the route, backend and TLS hashes. The backend part is a
// sum of per-index mixes, so WithBackends updates it in O(changed backends)
// and an endpoint change costs the same however large the table is.
func (s *Snapshot) combineHash() uint64 {
	return mix64(s.routeHash ^ mix64(s.backendsSum+0x9e3779b97f4a7c15) ^ mix64(s.tlsHash+0x632be59bd9b4e019))
}

func (s *Snapshot) sumBackends() uint64 {
	var sum uint64
	for i, b := range s.Backends {
		sum += mixBackend(i, b.hash)
	}
	return sum
}

func mixBackend(i int, h uint64) uint64 { return mix64(h ^ mix64(uint64(i)+1)) }

// mix64 is the splitmix64 finaliser: a cheap bijective bit mixer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
