package discovery

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// isDNSSubdomain is validHost's fast path: it must agree exactly with the
// validation package's DNS-1123 subdomain check (within its length limit).
func TestIsDNSSubdomain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"example.com", true},
		{"a", true},
		{"0", true},
		{"ing-00001.scale.test", true},
		{"a-b.c-d", true},
		{"1.2.3.4", true}, // a DNS name by pattern; validHost rejects IPs first
		{"", false},
		{".", false},
		{"a.", false},
		{".a", false},
		{"a..b", false},
		{"-a.b", false},
		{"a-.b", false},
		{"a.-b", false},
		{"A.example.com", false},
		{"a_b.example.com", false},
		{"*.example.com", false},
		{"exa mple.com", false},
		{"ex\u00e4mple.com", false},
	} {
		if got := isDNSSubdomain(tc.host); got != tc.want {
			t.Errorf("isDNSSubdomain(%q) = %v, want %v", tc.host, got, tc.want)
		}
		if lib := len(validation.IsDNS1123Subdomain(tc.host)) == 0; lib != tc.want {
			t.Errorf("table wrong for %q: validation says %v", tc.host, lib)
		}
	}
}

func FuzzIsDNSSubdomain(f *testing.F) {
	for _, s := range []string{"example.com", "a..b", "-a", "a-", "A", "*.a.b", "1.2.3.4", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > validation.DNS1123SubdomainMaxLength {
			return
		}
		got, want := isDNSSubdomain(s), len(validation.IsDNS1123Subdomain(s)) == 0
		if got != want {
			t.Fatalf("isDNSSubdomain(%q) = %v, validation.IsDNS1123Subdomain says %v", s, got, want)
		}
	})
}
