package route

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/balancer"
)

// rule is a compact route for tables: the Ingress name doubles as the id the
// tests check.
type rule struct {
	host, path string
	typ        PathType
	id         string
}

// build makes a snapshot with one backend per rule (backend i is svc<i>)
// and the default backend (id "default") when withDefault is set.
func build(t testing.TB, rules []rule, withDefault bool) (*Snapshot, []Conflict) {
	t.Helper()
	routes := make([]Route, len(rules))
	backends := make([]*Backend, 0, len(rules)+1)
	for i, r := range rules {
		routes[i] = Route{Host: r.host, Path: r.path, Type: r.typ, Ingress: IngressRef{"ns", r.id}, Backend: i}
		backends = append(backends, &Backend{Namespace: "ns", Service: fmt.Sprintf("svc%d", i), Port: "80",
			Addrs: []string{fmt.Sprintf("10.0.0.%d:8080", i%250)}})
	}
	var def *Route
	if withDefault {
		backends = append(backends, &Backend{Namespace: "ns", Service: "default", Port: "80"})
		def = &Route{Ingress: IngressRef{"ns", "default"}, Backend: len(backends) - 1}
	}
	return New(routes, backends, def)
}

// idOf names a match result: the rule id, "" for nil.
func idOf(r *Route) string {
	if r == nil {
		return ""
	}
	return r.Ingress.Name
}

func P(path, id string) rule { return rule{"", path, Prefix, id} }
func E(path, id string) rule { return rule{"", path, Exact, id} }

// TestDocsExamples is every row of the Examples table of
// https://kubernetes.io/docs/concepts/services-networking/ingress/#examples,
// with rows listing several request paths split into one case each. "No"
// means the default backend answers.
func TestDocsExamples(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		rules []rule
		req   string
		want  string
	}{
		{"prefix / all paths: /", []rule{P("/", "a")}, "/", "a"},
		{"prefix / all paths: /x/y", []rule{P("/", "a")}, "/x/y", "a"},
		{"prefix / all paths: /foo/", []rule{P("/", "a")}, "/foo/", "a"},
		{"exact /foo /foo", []rule{E("/foo", "a")}, "/foo", "a"},
		{"exact /foo /bar", []rule{E("/foo", "a")}, "/bar", "default"},
		{"exact /foo /foo/", []rule{E("/foo", "a")}, "/foo/", "default"},
		{"exact /foo/ /foo", []rule{E("/foo/", "a")}, "/foo", "default"},
		{"prefix /foo /foo", []rule{P("/foo", "a")}, "/foo", "a"},
		{"prefix /foo /foo/", []rule{P("/foo", "a")}, "/foo/", "a"},
		{"prefix /foo/ /foo", []rule{P("/foo/", "a")}, "/foo", "a"},
		{"prefix /foo/ /foo/", []rule{P("/foo/", "a")}, "/foo/", "a"},
		{"prefix /aaa/bb /aaa/bbb", []rule{P("/aaa/bb", "a")}, "/aaa/bbb", "default"},
		{"prefix /aaa/bbb /aaa/bbb", []rule{P("/aaa/bbb", "a")}, "/aaa/bbb", "a"},
		{"prefix /aaa/bbb/ /aaa/bbb ignores trailing slash", []rule{P("/aaa/bbb/", "a")}, "/aaa/bbb", "a"},
		{"prefix /aaa/bbb /aaa/bbb/ matches trailing slash", []rule{P("/aaa/bbb", "a")}, "/aaa/bbb/", "a"},
		{"prefix /aaa/bbb /aaa/bbb/ccc matches subpath", []rule{P("/aaa/bbb", "a")}, "/aaa/bbb/ccc", "a"},
		{"prefix /aaa/bbb /aaa/bbbxyz not a string prefix", []rule{P("/aaa/bbb", "a")}, "/aaa/bbbxyz", "default"},
		{"prefix / /aaa -> /aaa/ccc", []rule{P("/", "root"), P("/aaa", "aaa")}, "/aaa/ccc", "aaa"},
		{"prefix / /aaa /aaa/bbb -> /aaa/bbb", []rule{P("/", "root"), P("/aaa", "aaa"), P("/aaa/bbb", "bbb")}, "/aaa/bbb", "bbb"},
		{"prefix / /aaa /aaa/bbb -> /ccc", []rule{P("/", "root"), P("/aaa", "aaa"), P("/aaa/bbb", "bbb")}, "/ccc", "root"},
		{"prefix /aaa /ccc uses default", []rule{P("/aaa", "a")}, "/ccc", "default"},
		{"mixed prefers exact", []rule{P("/foo", "prefix"), E("/foo", "exact")}, "/foo", "exact"},
		{"mixed prefers exact, exact given first", []rule{E("/foo", "exact"), P("/foo", "prefix")}, "/foo", "exact"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, conflicts := build(t, tt.rules, true)
			if len(conflicts) != 0 {
				t.Fatalf("unexpected conflicts %v", conflicts)
			}
			if got := idOf(s.Match([]byte("any.example.com"), []byte(tt.req))); got != tt.want {
				t.Errorf("Match(%q) = %q, want %q", tt.req, got, tt.want)
			}
			// Without a default backend a "No" row is a 404.
			s, _ = build(t, tt.rules, false)
			want := tt.want
			if want == "default" {
				want = ""
			}
			if got := idOf(s.Match([]byte("any.example.com"), []byte(tt.req))); got != want {
				t.Errorf("no default: Match(%q) = %q, want %q", tt.req, got, want)
			}
		})
	}
}

func TestRouteMatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		typ  PathType
		rule string
		req  string
		want bool
	}{
		{"exact equal", Exact, "/foo", "/foo", true},
		{"exact case-sensitive", Exact, "/foo", "/Foo", false},
		{"exact trailing slash in request", Exact, "/foo", "/foo/", false},
		{"exact trailing slash in rule", Exact, "/foo/", "/foo", false},
		{"exact both trailing", Exact, "/foo/", "/foo/", true},
		{"exact longer", Exact, "/foo", "/foo/bar", false},
		{"exact root", Exact, "/", "/", true},
		{"exact root vs other", Exact, "/", "/a", false},
		{"prefix root everything", Prefix, "/", "/anything/at/all", true},
		{"prefix root root", Prefix, "/", "/", true},
		{"prefix empty path everything", Prefix, "", "/x", true},
		{"prefix equal", Prefix, "/foo", "/foo", true},
		{"prefix slash", Prefix, "/foo", "/foo/", true},
		{"prefix subpath", Prefix, "/foo", "/foo/bar", true},
		{"prefix deep subpath", Prefix, "/foo", "/foo/bar/baz/", true},
		{"prefix string prefix only", Prefix, "/foo", "/foobar", false},
		{"prefix shorter request", Prefix, "/foo/bar", "/foo", false},
		{"prefix case-sensitive", Prefix, "/foo", "/FOO", false},
		{"prefix rule trailing slash ignored", Prefix, "/foo/", "/foo", true},
		{"prefix rule trailing slash subpath", Prefix, "/foo/", "/foo/x", true},
		{"prefix rule trailing slash not string prefix", Prefix, "/foo/", "/foox", false},
		{"prefix rule several trailing slashes", Prefix, "/foo//", "/foo", true},
		{"prefix two elements", Prefix, "/aaa/bbb", "/aaa/bbb/ccc", true},
		{"prefix element substring", Prefix, "/aaa/bb", "/aaa/bbb", false},
		{"prefix request double slash", Prefix, "/foo", "/foo//bar", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := New([]Route{{Path: tt.rule, Type: tt.typ}}, nil, nil)
			r := s.Hosts()[0].Routes[0]
			if got := r.Matches([]byte(tt.req)); got != tt.want {
				t.Errorf("%s %q Matches(%q) = %v, want %v", tt.typ, tt.rule, tt.req, got, tt.want)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	rules := []rule{
		P("/", "root"),
		P("/a", "a"),
		P("/a/b/", "ab"),
		E("/a/b", "ab-exact"),
		E("/a/b/", "ab-slash-exact"),
		P("/a/b/c", "abc"),
		E("/a/bc", "abc-exact"),
	}
	tests := []struct{ req, want string }{
		{"/", "root"},
		{"/x", "root"},
		{"/a", "a"},
		{"/a/", "a"},
		{"/ab", "root"},
		{"/a/b", "ab-exact"},        // Exact beats Prefix "/a/b/" at equal length 4
		{"/a/b/", "ab-slash-exact"}, // longer Exact (5) beats Prefix key "/a/b" (4)
		{"/a/b/x", "ab"},
		{"/a/b/c", "abc"},
		{"/a/b/c/d", "abc"},
		{"/a/b/cd", "ab"},
		{"/a/bc", "abc-exact"},
		{"/a/bc/", "a"},
	}
	s, conflicts := build(t, rules, false)
	if len(conflicts) != 0 {
		t.Fatalf("conflicts: %v", conflicts)
	}
	// The input order must not matter.
	rev := slices.Clone(rules)
	slices.Reverse(rev)
	s2, _ := build(t, rev, false)
	for _, tt := range tests {
		t.Run(tt.req, func(t *testing.T) {
			t.Parallel()
			for i, s := range []*Snapshot{s, s2} {
				if got := idOf(s.Match(nil, []byte(tt.req))); got != tt.want {
					t.Errorf("snapshot %d: Match(%q) = %q, want %q", i, tt.req, got, tt.want)
				}
			}
		})
	}
}

func TestHostMatch(t *testing.T) {
	t.Parallel()
	rules := []rule{
		{"a.example.com", "/", Prefix, "a"},
		{"a.example.com", "/only", Exact, "a-only"},
		{"*.example.com", "/", Prefix, "wild"},
		{"*.example.com", "/long/path/here", Prefix, "wild-long"},
		{"Mixed.Example.ORG", "/", Prefix, "mixed"},
		{"exact-only.example.net", "/api", Prefix, "api"},
		{"*.wild-only.net", "/api", Prefix, "wild-api"},
		{"dotted.example.io.", "/", Prefix, "dotted"},
		{"", "/", Prefix, "hostless"},
		{"", "/long/path/here/and/more", Prefix, "hostless-long"},
		{"[fd00::1]", "/", Prefix, "v6"},
		{"10.1.2.3", "/", Prefix, "v4"},
	}
	tests := []struct {
		name, host, path, want string
	}{
		{"exact", "a.example.com", "/x", "a"},
		{"exact exact path", "a.example.com", "/only", "a-only"},
		{"exact beats wildcard even with longer wildcard path", "a.example.com", "/long/path/here", "a"},
		{"wildcard one label", "b.example.com", "/x", "wild"},
		{"wildcard longer path", "b.example.com", "/long/path/here/x", "wild-long"},
		{"wildcard does not match bare domain", "example.com", "/x", "hostless"},
		{"wildcard does not match two labels", "b.a.example.com", "/x", "hostless"},
		{"wildcard empty label", ".example.com", "/x", "hostless"},
		{"host rule beats hostless with longer path", "b.example.com", "/long/path/here/and/more", "wild-long"},
		{"unknown host hostless", "other.test", "/x", "hostless"},
		{"unknown host hostless longest", "other.test", "/long/path/here/and/more/x", "hostless-long"},
		{"empty host hostless", "", "/x", "hostless"},
		{"port only hostless", ":80", "/x", "hostless"},
		{"port ignored", "a.example.com:8443", "/x", "a"},
		{"uppercase", "A.EXAMPLE.COM", "/x", "a"},
		{"uppercase with port", "A.Example.Com:80", "/only", "a-only"},
		{"uppercase wildcard", "B.EXAMPLE.COM:1", "/x", "wild"},
		{"rule host lower-cased", "mixed.example.org", "/x", "mixed"},
		{"rule host lower-cased, request upper", "MIXED.EXAMPLE.ORG", "/x", "mixed"},
		{"trailing dot", "a.example.com.", "/x", "a"},
		{"trailing dot and port", "a.example.com.:80", "/x", "a"},
		{"trailing dot wildcard", "b.example.com.", "/x", "wild"},
		{"two trailing dots are not ignored", "a.example.com..", "/x", "hostless"},
		{"rule host trailing dot", "dotted.example.io", "/x", "dotted"},
		{"ipv6 literal with port", "[fd00::1]:80", "/x", "v6"},
		{"ipv6 literal without port", "[fd00::1]", "/x", "v6"},
		{"ipv6 literal uppercase", "[FD00::1]:8080", "/x", "v6"},
		{"ipv4 with port", "10.1.2.3:80", "/x", "v4"},
		{"exact host no path match: default, not hostless", "exact-only.example.net", "/other", "default"},
		{"exact host path match", "exact-only.example.net", "/api/v1", "api"},
		{"wildcard host no path match: default, not hostless", "x.wild-only.net", "/other", "default"},
		{"wildcard host path match", "x.wild-only.net", "/api", "wild-api"},
		{"empty path is /", "a.example.com", "", "a"},
		{"overlong host only hostless", strings.Repeat("a", 300) + ".example.com", "/x", "hostless"},
		{"overlong uppercase host only hostless", strings.Repeat("A", 300) + ".example.com", "/x", "hostless"},
	}
	s, conflicts := build(t, rules, true)
	if len(conflicts) != 0 {
		t.Fatalf("conflicts: %v", conflicts)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := idOf(s.Match([]byte(tt.host), []byte(tt.path))); got != tt.want {
				t.Errorf("Match(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.want)
			}
		})
	}
}

func TestMatchNoDefault(t *testing.T) {
	t.Parallel()
	s, _ := build(t, []rule{{"a.example.com", "/api", Prefix, "api"}}, false)
	for _, host := range []string{"a.example.com", "b.example.com", ""} {
		if r := s.Match([]byte(host), []byte("/other")); r != nil {
			t.Errorf("Match(%q, /other) = %q, want nil (404)", host, idOf(r))
		}
	}
	var nilSnap *Snapshot
	if r := nilSnap.Match([]byte("a"), []byte("/")); r != nil {
		t.Errorf("nil snapshot matched %v", r)
	}
	empty, _ := New(nil, nil, nil)
	if r := empty.Match([]byte("a"), []byte("/")); r != nil {
		t.Errorf("empty snapshot matched %v", r)
	}
}

func TestDefaultRoute(t *testing.T) {
	t.Parallel()
	def := &Route{Host: "ignored.example.com", Path: "/ignored", Type: Prefix, Ingress: IngressRef{"ns", "d"}, Backend: 0}
	s, _ := New(nil, []*Backend{{Namespace: "ns", Service: "d", Port: "80"}}, def)
	if s.Default == def {
		t.Fatal("Default aliases the caller's route")
	}
	if s.Default.Host != "" || s.Default.Key() != "" {
		t.Errorf("Default host/key = %q/%q, want empty", s.Default.Host, s.Default.Key())
	}
	if got := s.Match([]byte("x"), []byte("/y")); got != s.Default {
		t.Errorf("Match = %v, want Default", got)
	}
}

func TestConflicts(t *testing.T) {
	t.Parallel()
	routes := []Route{
		{Host: "a.example.com", Path: "/foo", Type: Prefix, Ingress: IngressRef{"ns", "first"}},
		{Host: "A.EXAMPLE.COM", Path: "/foo/", Type: Prefix, Ingress: IngressRef{"ns", "second"}}, // same host, same key
		{Host: "a.example.com", Path: "/foo", Type: Exact, Ingress: IngressRef{"ns", "exact"}},    // other type: no conflict
		{Host: "b.example.com", Path: "/foo", Type: Prefix, Ingress: IngressRef{"ns", "other-host"}},
		{Host: "a.example.com", Path: "/foo", Type: Exact, Ingress: IngressRef{"ns", "third"}},
		{Host: "a.example.com", Path: "/foo/", Type: Exact, Ingress: IngressRef{"ns", "exact-slash"}}, // Exact keeps the slash
		{Host: "", Path: "/", Type: Prefix, Ingress: IngressRef{"ns", "root"}},
		{Host: "", Path: "", Type: Prefix, Ingress: IngressRef{"ns", "empty"}}, // key "" like "/"
	}
	s, conflicts := New(routes, nil, nil)
	type c struct{ loser, winner string }
	var got []c
	for _, x := range conflicts {
		got = append(got, c{x.Route.Ingress.Name, x.Winner.Name})
	}
	want := []c{{"second", "first"}, {"third", "exact"}, {"empty", "root"}}
	if !slices.Equal(got, want) {
		t.Errorf("conflicts = %v, want %v", got, want)
	}
	if got := idOf(s.Match([]byte("a.example.com"), []byte("/foo/x"))); got != "first" {
		t.Errorf("winner of /foo = %q, want first", got)
	}
	if got := idOf(s.Match([]byte("a.example.com"), []byte("/foo"))); got != "exact" {
		t.Errorf("winner of exact /foo = %q, want exact", got)
	}
	// The conflict report carries the normalised route.
	if conflicts[0].Route.Host != "a.example.com" || conflicts[0].Route.Key() != "/foo" {
		t.Errorf("conflict route = %+v", conflicts[0].Route)
	}
}

func TestNewCopiesRoutes(t *testing.T) {
	t.Parallel()
	routes := []Route{{Host: "A.example.com", Path: "/x", Ingress: IngressRef{"ns", "a"}}}
	s, _ := New(routes, nil, nil)
	routes[0].Path = "/changed"
	if routes[0].Host != "A.example.com" {
		t.Error("New modified the caller's slice")
	}
	if got := s.Match([]byte("a.example.com"), []byte("/x")); got == nil || got.Path != "/x" {
		t.Errorf("snapshot changed with the caller's slice: %v", got)
	}
}

func TestHostsSorted(t *testing.T) {
	t.Parallel()
	s, _ := build(t, []rule{
		{"b.example.com", "/", Prefix, "b"},
		{"", "/", Prefix, "hl"},
		{"*.example.com", "/", Prefix, "w"},
		{"a.example.com", "/", Prefix, "a"},
	}, false)
	var hosts []string
	for _, h := range s.Hosts() {
		hosts = append(hosts, h.Host)
	}
	want := []string{"", "*.example.com", "a.example.com", "b.example.com"}
	if !slices.Equal(hosts, want) {
		t.Errorf("Hosts = %q, want %q", hosts, want)
	}
}

func TestNormalizeHost(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", ""},
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com:80", "example.com"},
		{"EXAMPLE.com:8080", "example.com"},
		{"example.com.", "example.com"},
		{"example.com.:443", "example.com"},
		{"example.com..", "example.com."},
		{"[::1]:80", "[::1]"},
		{"[::1]", "[::1]"},
		{"[FD00::AB]:443", "[fd00::ab]"},
		{"[::1", "[::1"},
		{"10.0.0.1:80", "10.0.0.1"},
		{":80", ""},
		{".", ""},
		{"ÄB", "Äb"}, // only ASCII is folded
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			var buf [8]byte // small on purpose: NormalizeHost must grow it
			if got := string(NormalizeHost([]byte(tt.in), buf[:0])); got != tt.want {
				t.Errorf("NormalizeHost(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestHashStable(t *testing.T) {
	t.Parallel()
	rules := []rule{
		{"a.example.com", "/", Prefix, "a"},
		{"a.example.com", "/x", Exact, "ax"},
		{"*.example.com", "/w", Prefix, "w"},
		{"", "/", Prefix, "hl"},
		{"b.example.com", "/b", Prefix, "b"},
	}
	s1, _ := build(t, rules, true)
	s2, _ := build(t, rules, true)
	if s1.Hash() != s2.Hash() {
		t.Errorf("same input, hashes %x != %x", s1.Hash(), s2.Hash())
	}
	// Reordering routes that do not conflict (keeping each route's backend)
	// gives the same tables and the same hash.
	mk := func(order []int) *Snapshot {
		var routes []Route
		backends := make([]*Backend, len(rules))
		for i, r := range rules {
			backends[i] = &Backend{Namespace: "ns", Service: r.id, Port: "80", Addrs: []string{"10.0.0.1:80"}}
		}
		for _, i := range order {
			r := rules[i]
			routes = append(routes, Route{Host: r.host, Path: r.path, Type: r.typ, Ingress: IngressRef{"ns", r.id}, Backend: i})
		}
		s, _ := New(routes, backends, nil)
		return s
	}
	a, b := mk([]int{0, 1, 2, 3, 4}), mk([]int{4, 2, 3, 1, 0})
	if a.Hash() != b.Hash() {
		t.Errorf("reordered input, hashes %x != %x", a.Hash(), b.Hash())
	}
	if av, bv := a.View(), b.View(); fmt.Sprint(av.Hosts) != fmt.Sprint(bv.Hosts) {
		t.Errorf("reordered input, tables differ:\n%v\n%v", av.Hosts, bv.Hosts)
	}
	// Version and Built do not enter the hash.
	c := mk([]int{0, 1, 2, 3, 4})
	c.Version = 99
	if c.Hash() != a.Hash() {
		t.Error("Version changed the hash")
	}
	// Any change to the routed content changes the hash.
	changes := map[string]func(rs []rule) []rule{
		"path":  func(rs []rule) []rule { rs[0].path = "/other"; return rs },
		"type":  func(rs []rule) []rule { rs[1].typ = Prefix; return rs },
		"host":  func(rs []rule) []rule { rs[2].host = "*.example.org"; return rs },
		"owner": func(rs []rule) []rule { rs[3].id = "other"; return rs },
		"drop":  func(rs []rule) []rule { return rs[:4] },
	}
	for name, f := range changes {
		s, _ := build(t, f(slices.Clone(rules)), true)
		if s.Hash() == s1.Hash() {
			t.Errorf("%s change kept hash %x", name, s.Hash())
		}
	}
	noDef, _ := build(t, rules, false)
	if noDef.Hash() == s1.Hash() {
		t.Error("default backend does not enter the hash")
	}
}

func TestWithBackends(t *testing.T) {
	t.Parallel()
	mkBackends := func(addrs0 ...string) []*Backend {
		return []*Backend{
			{Namespace: "ns", Service: "a", Port: "80", Addrs: addrs0},
			{Namespace: "ns", Service: "b", Port: "http", Addrs: []string{"10.0.1.1:80"}},
		}
	}
	routes := []Route{
		{Host: "a.example.com", Path: "/", Ingress: IngressRef{"ns", "a"}, Backend: 0},
		{Host: "b.example.com", Path: "/", Ingress: IngressRef{"ns", "b"}, Backend: 1},
	}
	old := mkBackends("10.0.0.1:80")
	s, _ := New(routes, old, nil)
	s.Version = 7

	same := s.WithBackends(mkBackends("10.0.0.1:80"))
	if same.Hash() != s.Hash() {
		t.Errorf("equal addresses changed the hash: %x -> %x", s.Hash(), same.Hash())
	}
	if same.Version != 7 {
		t.Errorf("Version = %d, want it copied (7)", same.Version)
	}

	nb := mkBackends("10.0.0.1:80", "10.0.0.2:80")
	n := s.WithBackends(nb)
	if n.Hash() == s.Hash() {
		t.Error("new address kept the hash")
	}
	if &n.Backends[0] == &s.Backends[0] || n.Backends[0] != nb[0] || s.Backends[0] != old[0] {
		t.Error("backends not replaced copy-on-write")
	}
	// Route tables are shared, not copied.
	if &n.Hosts()[0] != &s.Hosts()[0] || n.Hosts()[0] != s.Hosts()[0] {
		t.Error("host tables not shared")
	}
	if n.Match([]byte("a.example.com"), []byte("/")) != s.Match([]byte("a.example.com"), []byte("/")) {
		t.Error("routes not shared")
	}
	if n.exact["a.example.com"] != s.exact["a.example.com"] {
		t.Error("exact map not shared")
	}

	// An error appearing changes the hash too.
	eb := mkBackends()
	eb[0].Error = "service not found"
	if s.WithBackends(eb).Hash() == s.WithBackends(mkBackends()).Hash() {
		t.Error("Error does not enter the hash")
	}

	// Reusing the parent's Backend pointers keeps the hash.
	if got := s.WithBackends(slices.Clone(s.Backends)).Hash(); got != s.Hash() {
		t.Errorf("shared backends changed the hash: %x -> %x", s.Hash(), got)
	}

	// Going back to the original addresses gives back the original hash.
	if got := n.WithBackends(mkBackends("10.0.0.1:80")).Hash(); got != s.Hash() {
		t.Errorf("hash not a function of content: %x, want %x", got, s.Hash())
	}
}

// TestWithBackendsStaleHash guards the copy-on-write path: a Backend that
// carries a hash computed for other addresses (for example one built by
// copying an older Backend) must be hashed afresh.
func TestWithBackendsStaleHash(t *testing.T) {
	t.Parallel()
	b0 := &Backend{Namespace: "ns", Service: "a", Port: "80", Addrs: []string{"10.0.0.1:80"}}
	s, _ := New([]Route{{Path: "/", Backend: 0}}, []*Backend{b0}, nil)
	nb := &Backend{Namespace: "ns", Service: "a", Port: "80", Addrs: []string{"10.0.0.2:80"}, hash: b0.hash}
	if s.WithBackends([]*Backend{nb}).Hash() == s.Hash() {
		t.Error("stale backend hash reused")
	}
}

func TestBackendsOf(t *testing.T) {
	t.Parallel()
	backends := []*Backend{
		{Namespace: "ns", Service: "a", Port: "80"},
		{Namespace: "ns", Service: "b", Port: "80"},
		{Namespace: "ns", Service: "a", Port: "https"},
		{Namespace: "other", Service: "a", Port: "80"},
	}
	s, _ := New(nil, backends, nil)
	tests := []struct {
		ns, name string
		want     []int
	}{
		{"ns", "a", []int{0, 2}},
		{"ns", "b", []int{1}},
		{"other", "a", []int{3}},
		{"ns", "missing", nil},
		{"n", "s/a", nil}, // the separator cannot be forged
	}
	for _, tt := range tests {
		t.Run(tt.ns+"/"+tt.name, func(t *testing.T) {
			t.Parallel()
			if got := s.BackendsOf(tt.ns, tt.name); !slices.Equal(got, tt.want) {
				t.Errorf("BackendsOf(%q, %q) = %v, want %v", tt.ns, tt.name, got, tt.want)
			}
		})
	}
	// WithBackends keeps the index (same order by contract).
	n := s.WithBackends(backends)
	if got := n.BackendsOf("ns", "a"); !slices.Equal(got, []int{0, 2}) {
		t.Errorf("after WithBackends: %v", got)
	}
}

func TestBackendIDAndBind(t *testing.T) {
	t.Parallel()
	b := &Backend{Namespace: "ns", Service: "svc", Port: "http", Addrs: []string{"10.0.0.1:80", "10.0.0.2:80"}}
	if b.ID() != "ns/svc:http" {
		t.Errorf("ID = %q", b.ID())
	}
	reg := balancer.NewRegistry(balancer.RegistryConfig{})
	b.Bind(reg)
	if len(b.Endpoints) != 2 || b.Endpoints[0].Addr != "10.0.0.1:80" || b.Endpoints[1] != reg.Acquire("10.0.0.2:80") {
		t.Errorf("Bind: %v", b.Endpoints)
	}
	if (IngressRef{"ns", "ing"}).String() != "ns/ing" {
		t.Error("IngressRef.String")
	}
	if Exact.String() != "Exact" || Prefix.String() != "Prefix" {
		t.Error("PathType.String")
	}
	if PrefixKey("/foo//") != "/foo" || PrefixKey("/") != "" {
		t.Error("PrefixKey")
	}
}

func TestSharesRoutes(t *testing.T) {
	t.Parallel()
	routes := []Route{
		{Host: "a.example.com", Path: "/", Ingress: IngressRef{"ns", "a"}, Backend: 0},
		{Host: "", Path: "/x", Ingress: IngressRef{"ns", "a"}, Backend: 0},
	}
	be := func() []*Backend {
		return []*Backend{{Namespace: "ns", Service: "a", Port: "80", Addrs: []string{"10.0.0.1:80"}}}
	}
	s, _ := New(routes, be(), nil)
	rebuilt, _ := New(routes, be(), nil) // same content, new *Route values
	empty1, _ := New(nil, be(), nil)
	empty2, _ := New(nil, be(), nil)
	for _, tc := range []struct {
		name string
		a, b *Snapshot
		want bool
	}{
		{"itself", s, s, true},
		{"WithBackends copy", s, s.WithBackends(be()), true},
		{"copy of a copy", s.WithBackends(be()).WithBackends(be()), s, true},
		{"rebuilt with equal routes", s, rebuilt, false},
		{"one empty", s, empty1, false},
		{"both without routes", empty1, empty2, true},
		{"nil and a snapshot", nil, s, false},
		{"both nil", nil, nil, true},
	} {
		if got := tc.a.SharesRoutes(tc.b); got != tc.want {
			t.Errorf("%s: SharesRoutes = %v, want %v", tc.name, got, tc.want)
		}
	}
}
