package route

import (
	"crypto/tls"
	"encoding/binary"
	"hash/fnv"
	"slices"
	"strings"
	"time"
)

// SecretRef names a Secret.
type SecretRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r SecretRef) String() string { return r.Namespace + "/" + r.Name }

// Cert is the certificate configured for a host by an Ingress's spec.tls
// entry. It travels in the snapshot so that routes and certificates change
// together.
type Cert struct {
	// Secret is the kubernetes.io/tls Secret the certificate comes from, in
	// the Ingress's own namespace.
	Secret SecretRef
	// Ingress is the Ingress whose spec.tls names the Secret.
	Ingress IngressRef
	// Certificate is the parsed key pair with Leaf set; nil when Error is
	// set. Shared, never modified.
	Certificate *tls.Certificate
	// NotAfter is the leaf's expiry (zero when Error is set and the leaf
	// could not be parsed).
	NotAfter time.Time
	// Error says why the Secret cannot be served (missing, bad PEM, key
	// does not match, expired). The default certificate answers instead.
	Error string
	// Fingerprint identifies the certificate content (for example a hash
	// of the leaf's DER); it feeds the snapshot hash so a rotated Secret is
	// published.
	Fingerprint uint64
}

// SetTLS attaches the TLS configuration to a snapshot that has not been
// published yet: certs maps a lower-case host ("a.example.com" or
// "*.example.com") to its certificate, acmeHosts are the exact hosts that may
// obtain a certificate from ACME. It updates the hash. Calling it on a
// published snapshot is a data race.
func (s *Snapshot) SetTLS(certs map[string]*Cert, acmeHosts []string) {
	s.certs = certs
	s.acme = make(map[string]bool, len(acmeHosts))
	for _, h := range acmeHosts {
		s.acme[strings.ToLower(h)] = true
	}
	s.tlsHash = s.computeTLSHash()
	s.hash = s.combineHash()
}

// Certificate returns the certificate configured for a TLS server name: an
// exact host first, then a wildcard matching exactly one label. The name is
// matched case-insensitively, without a trailing dot. It returns nil when
// no Ingress configures TLS for the name.
func (s *Snapshot) Certificate(serverName string) *Cert {
	if s == nil || len(s.certs) == 0 || serverName == "" {
		return nil
	}
	name := strings.TrimSuffix(strings.ToLower(serverName), ".")
	if c, ok := s.certs[name]; ok {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 && i < len(name)-1 {
		if c, ok := s.certs["*"+name[i:]]; ok {
			return c
		}
	}
	return nil
}

// HasTLS reports whether an Ingress configures TLS for host (exactly or by a
// wildcard), whether or not its Secret is usable.
func (s *Snapshot) HasTLS(host string) bool { return s.Certificate(host) != nil }

// ACMEAllowed reports whether host may obtain a certificate from ACME: it
// is an exact (not wildcard) host of a rule of our Ingresses that opted in,
// with no Secret configured for it.
func (s *Snapshot) ACMEAllowed(host string) bool {
	if s == nil {
		return false
	}
	return s.acme[strings.TrimSuffix(strings.ToLower(host), ".")]
}

// TLSHosts returns the hosts with a configured certificate, sorted.
func (s *Snapshot) TLSHosts() []string {
	hosts := make([]string, 0, len(s.certs))
	for h := range s.certs {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	return hosts
}

// ACMEHosts returns the hosts that may obtain an ACME certificate, sorted.
func (s *Snapshot) ACMEHosts() []string {
	hosts := make([]string, 0, len(s.acme))
	for h := range s.acme {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	return hosts
}

func (s *Snapshot) computeTLSHash() uint64 {
	h := fnv.New64a()
	var n [8]byte
	for _, host := range s.TLSHosts() {
		c := s.certs[host]
		for _, x := range []string{host, c.Secret.Namespace, c.Secret.Name, c.Ingress.Namespace, c.Ingress.Name, c.Error} {
			h.Write([]byte(x))
			h.Write([]byte{0})
		}
		binary.LittleEndian.PutUint64(n[:], c.Fingerprint)
		h.Write(n[:])
	}
	h.Write([]byte("acme\x00"))
	for _, host := range s.ACMEHosts() {
		h.Write([]byte(host))
		h.Write([]byte{0})
	}
	return h.Sum64()
}
