package route

import (
	"strings"
	"testing"
)

// fuzzRules is the small table FuzzMatch checks Match against.
var fuzzRules = []rule{
	{"a.example.com", "/", Prefix, "a-root"},
	{"a.example.com", "/foo", Prefix, "a-foo"},
	{"a.example.com", "/foo", Exact, "a-foo-exact"},
	{"a.example.com", "/foo/bar/", Prefix, "a-foobar"},
	{"a.example.com", "/foo/", Exact, "a-foo-slash"},
	{"*.example.com", "/api", Prefix, "w-api"},
	{"*.example.com", "/a", Exact, "w-a"},
	{"*.a.example.com", "/", Prefix, "wa-root"},
	{"b.example.com", "/x/y", Prefix, "b-xy"},
	{"[::1]", "/", Prefix, "v6"},
	{"", "/", Prefix, "hl-root"},
	{"", "/aaa", Prefix, "hl-aaa"},
	{"", "/aaa/bbb", Exact, "hl-aaabbb"},
}

// refNormalize is an independent, string-based statement of the host rules:
// strip the port (after "]" for an IPv6 literal), one trailing dot, and fold
// ASCII letters to lower case.
func refNormalize(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[:i+1]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	// Byte-wise, not strings.Map: a Host header need not be valid UTF-8.
	b := []byte(h)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func refPathMatches(r rule, p string) bool {
	if r.typ == Exact {
		return p == r.path
	}
	k := strings.TrimRight(r.path, "/")
	return k == "" || p == k || strings.HasPrefix(p, k+"/")
}

func refMatchLen(r rule) int {
	if r.typ == Exact {
		return len(r.path)
	}
	return len(strings.TrimRight(r.path, "/"))
}

// refMatch is the reference matcher: choose the host table (exact, then a
// wildcard covering exactly one label, then hostless), then the longest
// matching path, Exact first at equal length; "default" when none does.
func refMatch(host, path string) string {
	if path == "" {
		path = "/"
	}
	h := refNormalize(host)
	if len(h) > MaxHostLen {
		h = ""
	}
	hosts := map[string]bool{}
	for _, r := range fuzzRules {
		hosts[r.host] = true
	}
	chosen := ""
	if h != "" {
		if hosts[h] && !strings.HasPrefix(h, "*.") {
			chosen = h
		} else if i := strings.IndexByte(h, '.'); i > 0 && i < len(h)-1 && hosts["*."+h[i+1:]] {
			chosen = "*." + h[i+1:]
		}
	}
	best, bestLen, bestExact := "", -1, false
	for _, r := range fuzzRules {
		if r.host != chosen || !refPathMatches(r, path) {
			continue
		}
		l, ex := refMatchLen(r), r.typ == Exact
		if l > bestLen || l == bestLen && ex && !bestExact {
			best, bestLen, bestExact = r.id, l, ex
		}
	}
	if best == "" {
		return "default"
	}
	return best
}

func FuzzMatch(f *testing.F) {
	for _, seed := range []struct{ host, path string }{
		{"a.example.com", "/foo"},
		{"A.EXAMPLE.COM:443", "/foo/"},
		{"a.example.com.", "/foo/bar"},
		{"x.example.com", "/api/v1"},
		{"x.a.example.com", "/"},
		{"example.com", "/aaa/bbb"},
		{"[::1]:80", "/x"},
		{"", ""},
		{"*.example.com", "/a"},
		{":", "/foo//bar"},
		{"b.example.com", "/x/yz"},
		{strings.Repeat("A", 260) + ".example.com", "/aaa"},
	} {
		f.Add(seed.host, seed.path)
	}
	s, conflicts := build(f, fuzzRules, true)
	if len(conflicts) != 0 {
		f.Fatalf("conflicts: %v", conflicts)
	}
	f.Fuzz(func(t *testing.T, host, path string) {
		r := s.Match([]byte(host), []byte(path))
		if r == nil {
			t.Fatalf("Match(%q, %q) = nil with a default backend", host, path)
		}
		if got, want := idOf(r), refMatch(host, path); got != want {
			t.Fatalf("Match(%q, %q) = %q, reference says %q", host, path, got, want)
		}
		p := path
		if p == "" {
			p = "/"
		}
		if r != s.Default {
			if !r.Matches([]byte(p)) {
				t.Fatalf("Match(%q, %q) returned %q which does not match the path", host, path, r.Path)
			}
			// No route of the chosen host with a longer matchLen (or an
			// Exact one of equal length) matches.
			for _, t2 := range s.Hosts() {
				if t2.Host != r.Host {
					continue
				}
				for _, o := range t2.Routes {
					if o == r || !o.Matches([]byte(p)) {
						continue
					}
					if o.matchLen() > r.matchLen() || o.matchLen() == r.matchLen() && o.Type == Exact && r.Type != Exact {
						t.Fatalf("Match(%q, %q) = %q %q but %q %q is more precise", host, path, r.Type, r.Path, o.Type, o.Path)
					}
				}
			}
		}
		// Letter case, a port and a trailing dot do not change the result
		// (when the host has no port or bracket of its own to confuse).
		if n := refNormalize(host); !strings.ContainsAny(n, ":[]") && !strings.HasSuffix(n, ".") {
			for _, v := range []string{asciiUpper(n), n + ":8080", asciiUpper(n) + ".:1", n + "."} {
				if got := s.Match([]byte(v), []byte(path)); got != r {
					t.Fatalf("Match(%q, %q) = %q but variant %q gives %q", host, path, idOf(r), v, idOf(got))
				}
			}
		}
	})
}

func FuzzNormalizeHost(f *testing.F) {
	for _, seed := range []string{
		"", "example.com", "Example.COM:8080", "example.com.", "example.com.:80", "[::1]:80", "[FD00::1]",
		"[::1", "::1", "a:b:c", ".", "..", "ÄÖ.example", strings.Repeat("X", 300),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, host string) {
		got := string(NormalizeHost([]byte(host), nil))
		if want := refNormalize(host); got != want {
			t.Fatalf("NormalizeHost(%q) = %q, want %q", host, got, want)
		}
		for _, c := range []byte(got) {
			if 'A' <= c && c <= 'Z' {
				t.Fatalf("NormalizeHost(%q) = %q keeps an upper-case letter", host, got)
			}
		}
		if len(got) > len(host) {
			t.Fatalf("NormalizeHost(%q) = %q grew", host, got)
		}
		var small [4]byte
		if s := string(NormalizeHost([]byte(host), small[:0])); s != got {
			t.Fatalf("NormalizeHost with small dst = %q, want %q", s, got)
		}
		if l := string(NormalizeHost([]byte(asciiUpper(host)), nil)); l != got && refNormalize(asciiUpper(host)) == got {
			t.Fatalf("upper-case variant %q normalises to %q, want %q", asciiUpper(host), l, got)
		}
		// The allocation-free path Match uses agrees within its limit.
		var buf [MaxHostLen]byte
		h, ok := lowerHost(trimHost([]byte(host)), &buf)
		if ok != (len(got) <= MaxHostLen) || ok && string(h) != got {
			t.Fatalf("lowerHost(%q) = %q, %v; NormalizeHost = %q", host, h, ok, got)
		}
	})
}
