//go:build !race

package route

import (
	"strings"
	"testing"
)

// TestMatchAllocs locks in the promise of Match's doc comment: looking up a
// route never allocates, whatever the host looks like.
func TestMatchAllocs(t *testing.T) {
	s, _ := build(t, []rule{
		{"a.example.com", "/", Prefix, "a"},
		{"a.example.com", "/api", Prefix, "api"},
		{"a.example.com", "/api/v1", Exact, "v1"},
		{"*.example.com", "/", Prefix, "wild"},
		{"", "/static", Prefix, "hostless"},
	}, true)
	tests := []struct {
		name, host, path, want string
	}{
		{"exact host", "a.example.com", "/api/v1", "v1"},
		{"wildcard host", "b.example.com", "/x", "wild"},
		{"uppercase host with port", "A.EXAMPLE.COM:8443", "/api/x", "api"},
		{"uppercase wildcard with dot and port", "B.Example.Com.:80", "/", "wild"},
		{"ipv6 literal", "[FD00::1]:80", "/static/x", "hostless"},
		{"hostless", "other.test", "/static/app.js", "hostless"},
		{"default", "other.test", "/nothing", "default"},
		{"empty host and path", "", "", "default"},
		{"overlong uppercase host", strings.Repeat("A", 400), "/static", "hostless"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, path := []byte(tt.host), []byte(tt.path)
			if got := idOf(s.Match(host, path)); got != tt.want {
				t.Fatalf("Match = %q, want %q", got, tt.want)
			}
			if n := testing.AllocsPerRun(200, func() { s.Match(host, path) }); n != 0 {
				t.Errorf("Match(%q, %q) allocates %v times per call, want 0", tt.host, tt.path, n)
			}
		})
	}
}
