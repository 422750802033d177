package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Validate checks c as Parse does after decoding, and returns an *Error
// listing every problem (without line numbers: c has no file), or nil. Use it
// for a Config built in code rather than read from a file.
func (c *Config) Validate() error {
	return errorOf(c.validate())
}

// validate returns the problems with Key set and Line 0; Parse fills in lines.
func (c *Config) validate() []Problem {
	var v validator
	c.Kubernetes.validate(&v)

	httpOK := v.listen("http.listen", c.HTTP.Listen)
	v.nonNegative("http.read_timeout", c.HTTP.ReadTimeout)
	v.nonNegative("http.write_timeout", c.HTTP.WriteTimeout)
	v.nonNegative("http.park_idle_after", c.HTTP.ParkIdleAfter)
	v.intRange("http.event_loops", c.HTTP.EventLoops, EventLoopsOff, MaxEventLoops)
	v.positive("http.idle_timeout", c.HTTP.IdleTimeout)
	v.positiveInt("http.max_header_bytes", c.HTTP.MaxHeaderBytes)
	v.positive("http.shutdown_timeout", c.HTTP.ShutdownTimeout)

	v.positive("upstream.connect_timeout", c.Upstream.ConnectTimeout)
	v.positive("upstream.response_timeout", c.Upstream.ResponseTimeout)
	v.positive("upstream.idle_timeout", c.Upstream.IdleTimeout)
	v.positiveInt("upstream.max_conns_per_endpoint", c.Upstream.MaxConnsPerEndpoint)

	adminOK := v.listen("admin.listen", c.Admin.Listen)
	if httpOK && adminOK && sameListener(c.HTTP.Listen, c.Admin.Listen) {
		v.add("admin.listen", "%q conflicts with http.listen %q", c.Admin.Listen, c.HTTP.Listen)
	}
	c.validateTLS(&v, httpOK, adminOK)

	if c.Balancer.Policy != PolicyRoundRobin {
		v.add("balancer.policy", "unknown policy %q (want %q)", c.Balancer.Policy, PolicyRoundRobin)
	}
	v.nonNegative("balancer.drain_grace", c.Balancer.DrainGrace)

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "unknown level %q (want debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.add("log.format", "unknown format %q (want text or json)", c.Log.Format)
	}
	return v.problems
}

// validateTLS checks [https] and [acme]; httpOK and adminOK say whether
// http.listen and admin.listen are valid addresses.
func (c *Config) validateTLS(v *validator, httpOK, adminOK bool) {
	h := &c.HTTPS
	if h.Listen != "" && v.listen("https.listen", h.Listen) {
		if httpOK && sameListener(h.Listen, c.HTTP.Listen) {
			v.add("https.listen", "%q conflicts with http.listen %q", h.Listen, c.HTTP.Listen)
		}
		if adminOK && sameListener(h.Listen, c.Admin.Listen) {
			v.add("https.listen", "%q conflicts with admin.listen %q", h.Listen, c.Admin.Listen)
		}
	}
	switch {
	case h.DefaultCert != "" && h.DefaultKey == "":
		v.add("https.default_key", "required with https.default_cert (set both or neither)")
	case h.DefaultCert == "" && h.DefaultKey != "":
		v.add("https.default_cert", "required with https.default_key (set both or neither)")
	}

	a := &c.ACME
	if a.Enabled && h.Listen == "" {
		v.add("acme.enabled", "requires https.listen (TLS-ALPN-01 challenges and serving the certificates)")
	}
	if a.Directory != "" || a.Enabled {
		if err := acmeDirectory(a.Directory); err != nil {
			v.add("acme.directory", "%q %v", a.Directory, err)
		}
	}
	if a.Enabled && a.CacheDir == "" {
		v.add("acme.cache_dir", "required with acme.enabled (account key and certificates survive restarts)")
	}
	v.positive("acme.renew_before", a.RenewBefore)
	switch a.Hosts {
	case ACMEHostsOptIn, ACMEHostsAll:
	default:
		v.add("acme.hosts", "unknown policy %q (want %q or %q)", a.Hosts, ACMEHostsOptIn, ACMEHostsAll)
	}
}

// acmeDirectory checks an ACME directory URL: https, or http to a loopback
// host (a local test CA).
func acmeDirectory(dir string) error {
	u, err := url.Parse(dir)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("is not an ACME directory URL like %q", DefaultACMEDirectory)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		return fmt.Errorf("must be https (http only to a loopback address)")
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (k *KubernetesConfig) validate(v *validator) {
	switch {
	case k.Kubeconfig == "" && k.Server == "":
		v.problems = append(v.problems, Problem{Key: "kubernetes", Msg: "set kubernetes.kubeconfig or kubernetes.server"})
	case k.Kubeconfig != "" && k.Server != "":
		v.add("kubernetes.server", "set kubernetes.kubeconfig or kubernetes.server, not both")
	case k.Kubeconfig != "":
		if k.TokenFile != "" {
			v.add("kubernetes.token_file", "only with kubernetes.server (a kubeconfig carries its own credentials)")
		}
		if k.CAFile != "" {
			v.add("kubernetes.ca_file", "only with kubernetes.server (a kubeconfig carries its own CA)")
		}
	default: // Server
		if k.Context != "" {
			v.add("kubernetes.context", "only with kubernetes.kubeconfig")
		}
		u, err := url.Parse(k.Server)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			v.add("kubernetes.server", "%q is not an API server URL like \"https://host:6443\"", k.Server)
		case u.Scheme == "https" && k.CAFile == "":
			v.add("kubernetes.ca_file", "required with an https kubernetes.server (certificate verification cannot be skipped)")
		case u.Scheme == "http" && k.TokenFile != "":
			v.add("kubernetes.token_file", "would send the token in clear text to the http:// kubernetes.server")
		}
	}

	if errs := validation.IsDNS1123Subdomain(k.IngressClass); len(errs) > 0 {
		v.add("kubernetes.ingress_class", "%q is not a valid IngressClass name: %s", k.IngressClass, strings.Join(errs, "; "))
	}
	seen := make(map[string]bool, len(k.WatchNamespaces))
	for _, ns := range k.WatchNamespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			v.add("kubernetes.watch_namespaces", "%q is not a valid namespace name: %s", ns, strings.Join(errs, "; "))
		} else if seen[ns] {
			v.add("kubernetes.watch_namespaces", "%q is listed twice", ns)
		}
		seen[ns] = true
	}

	v.positive("kubernetes.coalesce_idle", k.CoalesceIdle)
	if k.CoalesceIdle > 0 && k.CoalesceMax < k.CoalesceIdle {
		v.add("kubernetes.coalesce_max", "%s is shorter than kubernetes.coalesce_idle %s", k.CoalesceMax, k.CoalesceIdle)
	}
	if !(k.QPS > 0) { // also catches NaN
		v.add("kubernetes.qps", "must be positive, got %v", k.QPS)
	}
	v.positiveInt("kubernetes.burst", k.Burst)
}

type validator struct {
	problems []Problem
}

func (v *validator) add(key, format string, args ...any) {
	v.problems = append(v.problems, Problem{Key: key, Msg: key + ": " + fmt.Sprintf(format, args...)})
}

func (v *validator) positive(key string, d Duration) {
	if d <= 0 {
		v.add(key, "must be positive, got %s", d)
	}
}

func (v *validator) nonNegative(key string, d Duration) {
	if d < 0 {
		v.add(key, "must not be negative, got %s", d)
	}
}

func (v *validator) positiveInt(key string, n int) {
	if n <= 0 {
		v.add(key, "must be positive, got %d", n)
	}
}

func (v *validator) intRange(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(key, "must be from %d to %d, got %d", lo, hi, n)
	}
}

// listen checks a host:port listen address and reports whether it is valid.
func (v *validator) listen(key, addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(key, "%q is not a host:port address: %v", addr, splitErr(err))
		return false
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.add(key, "%q: port %q is not a number from 0 to 65535", addr, port)
		return false
	}
	return true
}

// splitErr drops the address that net.AddrError repeats.
func splitErr(err error) string {
	if ae, ok := err.(*net.AddrError); ok {
		return ae.Err
	}
	return err.Error()
}

// sameListener reports whether two valid listen addresses would bind the
// same port: equal ports where the hosts are equal or either is a wildcard.
func sameListener(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	na, _ := strconv.Atoi(pa)
	nb, _ := strconv.Atoi(pb)
	if na != nb || na == 0 { // port 0 picks a free port each time
		return false
	}
	return ha == hb || wildcard(ha) || wildcard(hb)
}

func wildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
