package discovery

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"

	"github.com/edgegate/edgegate/route"
)

// TLSConfig is the TLS part of Config and Input.
type TLSConfig struct {
	// Redirect is the global switch for HTTP to HTTPS redirects: when set,
	// the rules of hosts with TLS (a Secret, or ACME) answer plain HTTP with
	// a 308, unless their Ingress opts out with edgegate.io/ssl-redirect:
	// "false". Default false here; the config file defaults it to true.
	Redirect bool
	// ACME enables ACME for the hosts that may use it (see ACMEAllHosts).
	// Default false.
	ACME bool
	// ACMEAllHosts ([acme] hosts = "all-ingress-hosts") lets every exact
	// rule host without a Secret use ACME; otherwise only the hosts of
	// Ingresses annotated edgegate.io/acme: "true" may. Default false.
	ACMEAllHosts bool
}

const (
	// annACME opts an Ingress's exact rule hosts into ACME.
	annACME = "edgegate.io/acme"
	// annSSLRedirect: "false" keeps an Ingress's rules reachable over plain
	// HTTP although its host has TLS.
	annSSLRedirect = "edgegate.io/ssl-redirect"
)

// tlsResult is the TLS part of a build.
type tlsResult struct {
	certs map[string]*route.Cert // host -> certificate
	acme  map[string]bool        // ACME hosts
}

// covered reports whether host (exact or "*.suffix") has a certificate
// configured, exactly or by a wildcard matching one label, as
// Snapshot.Certificate looks it up.
func (t *tlsResult) covered(host string) bool {
	if _, ok := t.certs[host]; ok {
		return true
	}
	if i := strings.IndexByte(host, '.'); i > 0 && i < len(host)-1 && !strings.HasPrefix(host, "*.") {
		_, ok := t.certs["*"+host[i:]]
		return ok
	}
	return false
}

// redirect reports whether a rule of ing for host redirects plain HTTP.
func (t *tlsResult) redirect(cfg TLSConfig, ing *netv1.Ingress, host string) bool {
	if !cfg.Redirect || host == "" || ing.Annotations[annSSLRedirect] == "false" {
		return false
	}
	return t.covered(host) || t.acme[host]
}

// parsedSecret is the outcome of reading one Secret, shared by every
// Ingress that names it.
type parsedSecret struct {
	cert        *tls.Certificate
	notAfter    time.Time
	fingerprint uint64
	err         string
}

// tls resolves the spec.tls entries of ings (in claim order) against the
// Secrets, and the ACME hosts.
func (b *builder) tls(in *Input, ings []*netv1.Ingress) *tlsResult {
	res := &tlsResult{certs: make(map[string]*route.Cert), acme: make(map[string]bool)}
	secrets := make(map[nsName]*corev1.Secret, len(in.Secrets))
	for _, s := range in.Secrets {
		if s == nil {
			continue
		}
		k := nsName{s.Namespace, s.Name}
		if o, ok := secrets[k]; ok && o.ResourceVersion >= s.ResourceVersion {
			continue
		}
		secrets[k] = s
	}
	parsed := make(map[nsName]*parsedSecret)

	for _, ing := range ings {
		ref := route.IngressRef{Namespace: ing.Namespace, Name: ing.Name}
		for ti := range ing.Spec.TLS {
			entry := &ing.Spec.TLS[ti]
			hosts := b.tlsHosts(ing, entry)
			if entry.SecretName == "" {
				b.ingressProblem(ing, fmt.Sprintf("tls entry for hosts [%s] skipped: no secretName", strings.Join(hosts, " ")))
				continue
			}
			if len(hosts) == 0 {
				continue
			}
			key := nsName{ing.Namespace, entry.SecretName}
			sref := route.SecretRef{Namespace: key.ns, Name: key.name}
			var cert *route.Cert // shared by the hosts of this entry
			for _, h := range hosts {
				if old, ok := res.certs[h]; ok {
					if old.Secret != sref {
						b.ingressProblem(ing, fmt.Sprintf("tls for host %s ignored: secret %s conflicts with secret %s of ingress %s (oldest first, then by namespace/name)",
							h, sref, old.Secret, old.Ingress))
					}
					continue
				}
				if cert == nil {
					p := parsed[key]
					if p == nil {
						p = parseSecret(secrets[key], in.Now)
						parsed[key] = p
					}
					cert = &route.Cert{Secret: sref, Ingress: ref, NotAfter: p.notAfter, Fingerprint: p.fingerprint}
					if p.err != "" {
						msg := p.err
						if secrets[key] == nil && strings.Contains(entry.SecretName, "/") {
							msg = fmt.Sprintf("not found: secretName %q names a Secret in the ingress's own namespace, never another", entry.SecretName)
						}
						cert.Error = msg
						b.ingressProblem(ing, "tls secret "+sref.String()+": "+msg)
					} else {
						cert.Certificate = p.cert
					}
				}
				res.certs[h] = cert
				if cert.Certificate != nil {
					if err := cert.Certificate.Leaf.VerifyHostname(h); err != nil {
						b.ingressProblem(ing, fmt.Sprintf("tls secret %s: warning: certificate does not cover host %s (served anyway)", sref, h))
					}
				}
			}
		}
	}

	if in.TLS.ACME {
		for _, ing := range ings {
			optIn := ing.Annotations[annACME] == "true"
			if !optIn && !in.TLS.ACMEAllHosts {
				continue
			}
			for ri := range ing.Spec.Rules {
				r := &ing.Spec.Rules[ri]
				h := strings.ToLower(r.Host)
				if h == "" || r.HTTP == nil || validHost(h) != "" {
					continue
				}
				if strings.HasPrefix(h, "*.") {
					if optIn && !res.covered(h) {
						b.ingressProblem(ing, "acme: host "+h+" needs a Secret: ACME HTTP-01/TLS-ALPN-01 cannot validate wildcards")
					}
					continue
				}
				if !res.covered(h) {
					res.acme[h] = true
				}
			}
		}
	}
	return res
}

// tlsHosts returns the lower-case, valid hosts of a spec.tls entry; an
// entry without hosts covers the Ingress's own rule hosts.
func (b *builder) tlsHosts(ing *netv1.Ingress, entry *netv1.IngressTLS) []string {
	var hosts []string
	if len(entry.Hosts) == 0 {
		for ri := range ing.Spec.Rules {
			h := strings.ToLower(ing.Spec.Rules[ri].Host)
			if h != "" && validHost(h) == "" {
				hosts = append(hosts, h)
			}
		}
	} else {
		for _, raw := range entry.Hosts {
			h := strings.ToLower(raw)
			msg := validHost(h)
			if h == "" {
				msg = "empty host"
			}
			if msg != "" {
				b.ingressProblem(ing, fmt.Sprintf("tls host %q skipped: %s", raw, msg))
				continue
			}
			hosts = append(hosts, h)
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// parseSecret reads a kubernetes.io/tls Secret (nil when missing). now,
// when not zero, is checked against the leaf's validity period.
func parseSecret(s *corev1.Secret, now time.Time) *parsedSecret {
	if s == nil {
		// The Watcher caches only kubernetes.io/tls Secrets.
		return &parsedSecret{err: "not found (or not of type " + string(corev1.SecretTypeTLS) + ")"}
	}
	if s.Type != corev1.SecretTypeTLS {
		return &parsedSecret{err: fmt.Sprintf("type is %q, not %q", s.Type, corev1.SecretTypeTLS)}
	}
	crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return &parsedSecret{err: "needs both " + corev1.TLSCertKey + " and " + corev1.TLSPrivateKeyKey}
	}
	p := &parsedSecret{fingerprint: fingerprint(crt, key)}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		// The errors of X509KeyPair never quote key material.
		msg := strings.TrimPrefix(err.Error(), "tls: ")
		if strings.Contains(msg, "does not match") {
			msg = "key does not match certificate"
		}
		p.err = msg
		return p
	}
	if pair.Leaf == nil {
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			p.err = "certificate: " + err.Error()
			return p
		}
		pair.Leaf = leaf
	}
	p.notAfter = pair.Leaf.NotAfter
	switch {
	case now.IsZero():
	case now.After(pair.Leaf.NotAfter):
		p.err = "certificate expired at " + pair.Leaf.NotAfter.UTC().Format(time.RFC3339)
		return p
	case now.Before(pair.Leaf.NotBefore):
		p.err = "certificate not valid before " + pair.Leaf.NotBefore.UTC().Format(time.RFC3339)
		return p
	}
	p.cert = &pair
	return p
}

// fingerprint is FNV-64a over the certificate and key bytes.
func fingerprint(crt, key []byte) uint64 {
	h := fnv.New64a()
	h.Write(crt)
	h.Write([]byte{0})
	h.Write(key)
	return h.Sum64()
}
