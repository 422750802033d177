package route

import "testing"

func TestCertificateLookup(t *testing.T) {
	t.Parallel()
	exact := &Cert{Secret: SecretRef{"ns", "exact"}, Fingerprint: 1}
	wild := &Cert{Secret: SecretRef{"ns", "wild"}, Fingerprint: 2}
	s, _ := New(nil, nil, nil)
	s.SetTLS(map[string]*Cert{"a.example.com": exact, "*.example.com": wild}, []string{"acme.example.com"})
	cases := []struct {
		sni  string
		want *Cert
	}{
		{"a.example.com", exact},
		{"A.Example.COM.", exact},
		{"b.example.com", wild},
		{"x.y.example.com", nil}, // wildcard covers one label only
		{"example.com", nil},
		{"", nil},
		{"other.test", nil},
	}
	for _, c := range cases {
		if got := s.Certificate(c.sni); got != c.want {
			t.Errorf("Certificate(%q) = %v, want %v", c.sni, got, c.want)
		}
	}
	if !s.ACMEAllowed("ACME.example.com") || s.ACMEAllowed("a.example.com") {
		t.Error("ACMEAllowed: want only acme.example.com")
	}
}

func TestTLSChangesHash(t *testing.T) {
	t.Parallel()
	a, _ := New(nil, nil, nil)
	b, _ := New(nil, nil, nil)
	if a.Hash() != b.Hash() {
		t.Fatal("equal snapshots, different hashes")
	}
	a.SetTLS(map[string]*Cert{"a.test": {Secret: SecretRef{"ns", "s"}, Fingerprint: 1}}, nil)
	b.SetTLS(map[string]*Cert{"a.test": {Secret: SecretRef{"ns", "s"}, Fingerprint: 2}}, nil)
	if a.Hash() == b.Hash() {
		t.Error("a rotated certificate (new fingerprint) must change the hash")
	}
	c, _ := New(nil, nil, nil)
	c.SetTLS(nil, []string{"a.test"})
	if c.Hash() == a.Hash() {
		t.Error("ACME hosts must change the hash")
	}
	// WithBackends keeps the TLS part.
	if got := a.WithBackends(nil); got.Certificate("a.test") == nil || got.Hash() != a.Hash() {
		t.Error("WithBackends must keep certificates and hash")
	}
}
