package route

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// View is a JSON-friendly, deterministic description of a Snapshot for
// operators (the admin /routes endpoint). It copies what it shows, so it may
// be kept, encoded and modified freely.
type View struct {
	Version uint64 `json:"version"`
	// Hash is Snapshot.Hash as 16 lower-case hex digits.
	Hash string `json:"hash"`
	// Built is Snapshot.Built in UTC, RFC 3339 with nanoseconds.
	Built string `json:"built"`
	// Hosts are sorted by host; hostless rules are under host "".
	Hosts []HostView `json:"hosts"`
	// Default is the default backend route, nil when there is none.
	Default *RouteView `json:"default"`
	// Backends are sorted by ID.
	Backends []BackendView `json:"backends"`
	// TLS is the configured certificates, sorted by host; never null.
	TLS []CertView `json:"tls"`
	// ACMEHosts are the hosts that may obtain an ACME certificate, sorted;
	// never null.
	ACMEHosts []string `json:"acme_hosts"`
}

// CertView is the certificate configured for one host. It never shows key
// material.
type CertView struct {
	// Host is the lower-case host, "*.example.com" for a wildcard.
	Host string `json:"host"`
	// Source is where the certificate comes from: "secret".
	Source string `json:"source"`
	// Secret is "namespace/name".
	Secret string `json:"secret"`
	// Ingress is the "namespace/name" of the Ingress whose spec.tls names
	// the Secret.
	Ingress string `json:"ingress"`
	// NotAfter is the leaf's expiry in UTC, RFC 3339; "" when unknown.
	NotAfter string `json:"not_after"`
	// Error says why the Secret cannot be served; "" when it is.
	Error string `json:"error"`
}

// HostView is the rules of one host in precedence order (the order Match
// tries them).
type HostView struct {
	Host   string      `json:"host"`
	Routes []RouteView `json:"routes"`
}

// RouteView is one rule.
type RouteView struct {
	Path string `json:"path"`
	// Type is "Exact" or "Prefix".
	Type string `json:"type"`
	// Ingress is "namespace/name".
	Ingress string `json:"ingress"`
	// Backend is the BackendView.ID the rule routes to ("" if the index is
	// out of range, which New's callers must not produce).
	Backend string `json:"backend"`
	// RedirectHTTPS is Route.RedirectHTTPS: plain HTTP gets a 308 to https.
	RedirectHTTPS bool `json:"redirect_https"`
}

// BackendView is one backend with its endpoint addresses at build (or
// WithBackends) time.
type BackendView struct {
	// ID is "namespace/service:port".
	ID string `json:"id"`
	// Service is "namespace/service".
	Service string `json:"service"`
	Port    string `json:"port"`
	Error   string `json:"error"`
	// Endpoints are the ready addresses, sorted; never null.
	Endpoints []string `json:"endpoints"`
}

// View describes s for operators. It walks the whole snapshot and allocates:
// call it on the admin path only, never per proxied request.
func (s *Snapshot) View() View {
	v := View{
		Version:   s.Version,
		Hash:      fmt.Sprintf("%016x", s.hash),
		Built:     s.Built.UTC().Format(time.RFC3339Nano),
		Hosts:     make([]HostView, 0, len(s.hosts)),
		Backends:  make([]BackendView, 0, len(s.Backends)),
		TLS:       make([]CertView, 0, len(s.certs)),
		ACMEHosts: s.ACMEHosts(),
	}
	for _, t := range s.hosts {
		hv := HostView{Host: t.Host, Routes: make([]RouteView, 0, len(t.Routes))}
		for _, r := range t.Routes {
			hv.Routes = append(hv.Routes, s.routeView(r))
		}
		v.Hosts = append(v.Hosts, hv)
	}
	if s.Default != nil {
		d := s.routeView(s.Default)
		v.Default = &d
	}
	for _, b := range s.Backends {
		if b == nil {
			continue
		}
		eps := slices.Clone(b.Addrs)
		if eps == nil {
			eps = []string{}
		}
		slices.Sort(eps)
		v.Backends = append(v.Backends, BackendView{
			ID:        b.ID(),
			Service:   b.Namespace + "/" + b.Service,
			Port:      b.Port,
			Error:     b.Error,
			Endpoints: eps,
		})
	}
	slices.SortStableFunc(v.Backends, func(a, b BackendView) int { return cmp.Compare(a.ID, b.ID) })
	for _, h := range s.TLSHosts() {
		c := s.certs[h]
		if c == nil {
			continue
		}
		cv := CertView{Host: h, Source: "secret", Secret: c.Secret.String(), Ingress: c.Ingress.String(), Error: c.Error}
		if !c.NotAfter.IsZero() {
			cv.NotAfter = c.NotAfter.UTC().Format(time.RFC3339)
		}
		v.TLS = append(v.TLS, cv)
	}
	return v
}

// ForHost narrows v to one host, as an operator asks of a large table:
// the rules of the table named host (case-insensitive: "*.example.com" for
// a wildcard table, "" for the hostless rules), the backends those rules
// and the default route use, and host's certificate and ACME entries.
// Version, hash, build time and the default route stay.
func (v View) ForHost(host string) View {
	host = strings.ToLower(host)
	out := v
	out.Hosts = []HostView{}
	used := make(map[string]bool)
	if v.Default != nil {
		used[v.Default.Backend] = true
	}
	for _, h := range v.Hosts {
		if h.Host != host {
			continue
		}
		out.Hosts = append(out.Hosts, h)
		for _, r := range h.Routes {
			used[r.Backend] = true
		}
	}
	out.Backends = []BackendView{}
	for _, b := range v.Backends {
		if used[b.ID] {
			out.Backends = append(out.Backends, b)
		}
	}
	out.TLS = []CertView{}
	for _, c := range v.TLS {
		if c.Host == host {
			out.TLS = append(out.TLS, c)
		}
	}
	out.ACMEHosts = []string{}
	if slices.Contains(v.ACMEHosts, host) {
		out.ACMEHosts = append(out.ACMEHosts, host)
	}
	return out
}

func (s *Snapshot) routeView(r *Route) RouteView {
	rv := RouteView{Path: r.Path, Type: r.Type.String(), Ingress: r.Ingress.String(), RedirectHTTPS: r.RedirectHTTPS}
	if r.Backend >= 0 && r.Backend < len(s.Backends) && s.Backends[r.Backend] != nil {
		rv.Backend = s.Backends[r.Backend].ID()
	}
	return rv
}
