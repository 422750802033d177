package tlsmgr

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/route"
)

// FuzzCertificateSelection feeds random SNI names to GetCertificate over a
// small table: it never panics, never returns a nil certificate with a nil
// error, and the wildcard never answers a name with two labels before its
// suffix.
func FuzzCertificateSelection(f *testing.F) {
	for _, s := range []string{"", "a.example.com", "b.example.com", "x.y.example.com", "EXAMPLE.com.",
		".example.com", "*.example.com", "..", "a..example.com", "broken.test", "acme.test", "\x00", "é.example.com"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	ca := newTestCA(f)
	exp := time.Now().Add(24 * time.Hour)
	exact := ca.issue(f, exp, "a.example.com")
	wild := ca.issue(f, exp, "*.example.com")
	snap := snapshotWith(map[string]*route.Cert{
		"a.example.com": secretCert(exact, "a"),
		"*.example.com": secretCert(wild, "wild"),
		"broken.test":   {Error: "bad"},
	}, "acme.test")
	// ACME is off: an ACME order must never start from a fuzzed name.
	m, err := New(Config{Snapshot: func() *route.Snapshot { return snap }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sni string, alpnOnly bool) {
		hello := &tls.ClientHelloInfo{ServerName: sni}
		if alpnOnly {
			hello.SupportedProtos = []string{"acme-tls/1"}
		}
		c, err := m.GetCertificate(hello)
		if c == nil && err == nil {
			t.Fatalf("GetCertificate(%q) = nil, nil", sni)
		}
		if c == wild {
			name := strings.TrimSuffix(strings.ToLower(sni), ".")
			label, ok := strings.CutSuffix(name, ".example.com")
			if !ok || label == "" || strings.Contains(label, ".") {
				t.Fatalf("wildcard *.example.com answered %q", sni)
			}
		}
		if c == exact && strings.TrimSuffix(strings.ToLower(sni), ".") != "a.example.com" {
			t.Fatalf("exact a.example.com answered %q", sni)
		}
	})
}
