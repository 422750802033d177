package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	netv1 "k8s.io/api/networking/v1"

	"github.com/edgegate/edgegate/internal/gatewayproc"
	"github.com/edgegate/edgegate/internal/pebble"
)

// These tests order real certificates from Pebble for Ingress hosts, and
// Pebble validates the challenges against the gateway process itself:
// pebble-challtestsrv resolves every name to 127.0.0.1, and Pebble's
// http-01 and tls-alpn-01 ports are the gateway's HTTP and HTTPS ports.
//
// How one challenge type is forced: autocert tries tls-alpn-01 first and,
// because the gateway serves its HTTP-01 handler on the HTTP listener, then
// http-01, each on a new order (autocert's verifyRFC).
//   - http-01 only: Pebble's tls-alpn-01 port is a "refuser" instead of the
//     gateway's HTTPS port, so the first order's tls-alpn-01 validation
//     fails and a second order validates http-01 on the gateway's HTTP
//     port. Pebble counts two orders, edgegate_acme_orders_total one
//     success (it counts issued certificates).
//   - tls-alpn-01 only: Pebble's http-01 port is a refuser; tls-alpn-01 on
//     the gateway's HTTPS port validates the first order, and the refuser
//     sees no connection.
//
// A refuser is a listener that closes every connection at once. It fails a
// validation as fast as a closed port would, but keeps the port held, so no
// test running in parallel can pick it up and answer in its place.

// acmeIssueTimeout bounds the handshake that obtains a certificate: it
// waits for a whole order (two with http-01), under -race and a busy
// parallel suite.
const acmeIssueTimeout = 90 * time.Second

// challenge names the one challenge type a test lets validate.
type challenge int

const (
	bothChallenges challenge = iota
	onlyHTTP01
	onlyTLSALPN01
)

// acmeEnv is an env whose gateway has ACME enabled against a Pebble of the
// test's own.
type acmeEnv struct {
	*env
	peb   *pebble.Pebble
	roots *x509.CertPool
	// opts started the gateway; restart reuses them (same ports and
	// cache_dir).
	opts gatewayproc.Options
	// refused is the refuser standing in for the challenge port that must
	// not validate; nil with bothChallenges.
	refused *refuser
}

func newACMEEnv(t *testing.T, ch challenge, opts ...func(*env, *gatewayproc.Options)) *acmeEnv {
	t.Helper()
	// The gateway's ports come first: Pebble validates against them. They
	// stay held while Pebble starts, so that Pebble's own free ports (picked
	// the same way) cannot be the same, and are released just before the
	// gateway binds them.
	holdHTTP, holdHTTPS := holdPort(t), holdPort(t)
	httpAddr, httpsAddr := holdHTTP.Addr().String(), holdHTTPS.Addr().String()
	cfg := pebble.Config{HTTPPort: addrPort(t, httpAddr), TLSPort: addrPort(t, httpsAddr)}
	a := &acmeEnv{}
	switch ch {
	case onlyHTTP01:
		a.refused = newRefuser(t)
		cfg.TLSPort = a.refused.port()
	case onlyTLSALPN01:
		a.refused = newRefuser(t)
		cfg.HTTPPort = a.refused.port()
	}
	a.peb = startPebble(t, cfg)
	roots, err := a.peb.Roots()
	if err != nil {
		t.Fatal(err)
	}
	a.roots = roots
	cacheDir := filepath.Join(t.TempDir(), "acme")

	holdHTTP.Close()
	holdHTTPS.Close()

	var captured *gatewayproc.Options
	opts = append(opts[:len(opts):len(opts)], func(_ *env, o *gatewayproc.Options) {
		o.HTTPListen, o.HTTPSListen = httpAddr, httpsAddr
		o.Extra += fmt.Sprintf("\n[acme]\nenabled = true\nemail = %q\ndirectory = %q\nca_file = %q\ncache_dir = %q\n",
			"ops@example.test", a.peb.DirectoryURL(), a.peb.CAFile(), cacheDir)
		captured = o
	})
	a.env = newEnv(t, opts...)
	a.opts = *captured
	return a
}

// startPebble is pebble.ForTest with the challenge ports of cfg.
func startPebble(t *testing.T, cfg pebble.Config) *pebble.Pebble {
	t.Helper()
	if pebble.SkipE2E() {
		t.Skip("Pebble test skipped (EDGEGATE_SKIP_E2E=1 or -short)")
	}
	if err := pebble.CheckBinaries(pebble.DefaultBinDir()); err != nil {
		t.Fatalf("%v\nthe ACME tests need Pebble: run `make pebble` (or hack/pebble.sh; set "+
			"EDGEGATE_PEBBLE_DIR if the binaries live elsewhere), or set EDGEGATE_SKIP_E2E=1 to skip these tests", err)
	}
	var done atomic.Bool // t.Logf panics after the test ends
	cfg.Logf = func(format string, args ...any) {
		if !done.Load() {
			t.Logf(format, args...)
		}
	}
	p, err := pebble.Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	t.Cleanup(func() {
		done.Store(true)
		if t.Failed() {
			t.Logf("pebble log:%s", p.LogTail())
		}
		if err := p.Stop(); err != nil {
			t.Errorf("stop pebble: %v", err)
		}
	})
	return p
}

// holdPort listens on a free loopback port until closed (at the latest
// when the test ends).
func holdPort(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// refuser holds a loopback port and closes every connection to it at once.
type refuser struct {
	ln    net.Listener
	conns atomic.Int64
}

func newRefuser(t *testing.T) *refuser {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &refuser{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return r
}

func (r *refuser) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// optIn annotates an Ingress edgegate.io/acme: "true".
func optIn(ing *netv1.Ingress) *netv1.Ingress {
	if ing.Annotations == nil {
		ing.Annotations = map[string]string{}
	}
	ing.Annotations["edgegate.io/acme"] = "true"
	return ing
}

// awaitACMEHost waits until the gateway's snapshot has host as an ACME
// host: plain HTTP to it is then redirected to HTTPS. A handshake before
// that would get the default certificate and order nothing.
func (a *acmeEnv) awaitACMEHost(host string) {
	a.t.Helper()
	a.expect(host, "/", want{status: 308})
}

// handshake completes one TLS handshake with SNI host on the gateway's
// HTTPS port, offering http/1.1 like a browser, within timeout, and returns
// the connection state without verifying it.
func (a *acmeEnv) handshake(host string, timeout time.Duration) (*tls.ConnectionState, error) {
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config:    &tls.Config{ServerName: host, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}},
	}
	ctx, cancel := context.WithTimeout(a.ctx, timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", a.gw.HTTPSAddr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st := c.(*tls.Conn).ConnectionState()
	return &st, nil
}

// obtain makes the first handshake for host, during which the gateway
// orders its certificate, and checks the certificate served: it chains to
// Pebble's roots and names exactly host.
func (a *acmeEnv) obtain(host string) *x509.Certificate {
	a.t.Helper()
	start := time.Now()
	st, err := a.handshake(host, acmeIssueTimeout)
	if err != nil {
		a.t.Fatalf("first handshake for %s: %v", host, err)
	}
	leaf := a.verifyIssued(st, host)
	a.t.Logf("certificate for %s obtained during the first handshake in %s", host, time.Since(start).Round(time.Millisecond))
	return leaf
}

// verifyIssued checks that the chain of st verifies against Pebble's roots
// for host and that its only SAN is host.
func (a *acmeEnv) verifyIssued(st *tls.ConnectionState, host string) *x509.Certificate {
	a.t.Helper()
	leaf := st.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: a.roots, Intermediates: inter}); err != nil {
		a.t.Fatalf("certificate served for %s (CN %q, issuer %q) does not verify against Pebble's roots: %v",
			host, leaf.Subject.CommonName, leaf.Issuer.CommonName, err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != host {
		a.t.Errorf("SAN = %v, want [%s]", leaf.DNSNames, host)
	}
	return leaf
}

// expectServedTLS checks that an HTTPS request for host, verified by a
// client that trusts only Pebble's roots, reaches pod with the certificate
// leaf.
func (a *acmeEnv) expectServedTLS(host, pod string, leaf *x509.Certificate) {
	a.t.Helper()
	r, err := a.doTLS(host, "/acme?x=1", &tls.Config{ServerName: host, RootCAs: a.roots})
	if err != nil {
		a.t.Fatalf("https://%s/ with Pebble's roots: %v", host, err)
	}
	if err := (want{pod: pod}).check(r.response); err != nil {
		a.t.Fatalf("https://%s/: %v", host, err)
	}
	if r.leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		a.t.Errorf("https://%s/ served serial %s, want %s", host, r.leaf.SerialNumber, leaf.SerialNumber)
	}
	if p := first(r.echo.Headers["X-Forwarded-Proto"]); p != "https" || r.echo.Host != host || r.echo.URI != "/acme?x=1" {
		a.t.Errorf("pod saw proto %q host %q uri %q", p, r.echo.Host, r.echo.URI)
	}
}

// metric returns the value of one series (name with its labels, as
// exposed) from the gateway's /metrics.
func (a *acmeEnv) metric(series string) float64 {
	a.t.Helper()
	code, body := a.admin("/metrics")
	if code != 200 {
		a.t.Fatalf("/metrics: status %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				a.t.Fatalf("/metrics: %q: %v", line, err)
			}
			return f
		}
	}
	a.t.Fatalf("/metrics has no series %s", series)
	return 0
}

// expectOrders checks edgegate_acme_orders_total of the current gateway
// process.
func (a *acmeEnv) expectOrders(success, failure float64) {
	a.t.Helper()
	s := a.metric(`edgegate_acme_orders_total{result="success"}`)
	f := a.metric(`edgegate_acme_orders_total{result="failure"}`)
	if s != success || f != failure {
		a.t.Errorf("edgegate_acme_orders_total success %v failure %v, want %v and %v", s, f, success, failure)
	}
}

// expectPebbleOrders checks how many orders Pebble has seen.
func (a *acmeEnv) expectPebbleOrders(n int, why string) {
	a.t.Helper()
	if got := a.peb.Orders(); got != n {
		a.t.Errorf("Pebble saw %d orders, want %d (%s)", got, n, why)
	}
}

// pebbleLog is Pebble's log so far.
func (a *acmeEnv) pebbleLog() string {
	b, err := os.ReadFile(filepath.Join(a.peb.Dir(), "pebble.log"))
	if err != nil {
		a.t.Fatalf("pebble log: %v", err)
	}
	return string(b)
}

// restart stops the gateway and starts a new process with the same ports,
// ACME settings and cache directory.
func (a *acmeEnv) restart() {
	a.t.Helper()
	if err := a.gw.Stop(15 * time.Second); err != nil {
		a.t.Fatalf("gateway did not stop cleanly: %v\n%s", err, a.gw.LogTail(30))
	}
	o := a.opts
	o.Dir = a.t.TempDir()
	gw, err := gatewayproc.Start(a.ctx, o)
	if err != nil {
		a.t.Fatalf("restart gateway: %v", err)
	}
	a.t.Cleanup(func() {
		if err := gw.Stop(15 * time.Second); err != nil {
			a.t.Errorf("restarted gateway did not stop cleanly: %v\n%s", err, gw.LogTail(30))
		}
		if a.t.Failed() {
			a.t.Logf("restarted gateway log tail:\n%s", gw.LogTail(60))
		}
	})
	a.gw = gw
}

func TestACMEHTTP01(t *testing.T) {
	t.Parallel()
	a := newACMEEnv(t, onlyHTTP01)
	a.app("site")
	host := "acme1." + a.ns + ".test"
	a.ingress(optIn(a.ing("site", rule(host, prefix("/", "site", 80)))))
	a.awaitACMEHost(host)

	leaf := a.obtain(host)
	a.expectServedTLS(host, "site", leaf)

	if a.refused.conns.Load() == 0 {
		t.Error("Pebble never tried tls-alpn-01 (its port saw no connection)")
	}
	_, httpPort, _ := net.SplitHostPort(a.gw.HTTPAddr)
	if want := "Attempting to validate w/ HTTP: http://" + host + ":" + httpPort + "/.well-known/acme-challenge/"; !strings.Contains(a.pebbleLog(), want) {
		t.Errorf("Pebble's log has no line %q", want)
	}
	a.expectPebbleOrders(2, "tls-alpn-01 refused, then http-01 on the gateway's HTTP port")
	a.expectOrders(1, 0)

	// The challenge path is answered by the ACME responder on plain HTTP,
	// before the HTTPS redirect: an unknown token is a 404 of the gateway.
	r, err := a.get(host, "/.well-known/acme-challenge/no-such-token")
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 404 || r.pod != "" {
		t.Errorf("unknown challenge token: status %d pod %q, want 404 from the gateway", r.status, r.pod)
	}
}

func TestACMETLSALPN01(t *testing.T) {
	t.Parallel()
	a := newACMEEnv(t, onlyTLSALPN01)
	a.app("site")
	host := "acme1." + a.ns + ".test"
	a.ingress(optIn(a.ing("site", rule(host, prefix("/", "site", 80)))))
	a.awaitACMEHost(host)

	start := time.Now()
	st, err := a.handshake(host, acmeIssueTimeout)
	if err != nil {
		t.Fatalf("first handshake for %s: %v", host, err)
	}
	t.Logf("certificate for %s obtained during the first handshake in %s", host, time.Since(start).Round(time.Millisecond))
	leaf := a.verifyIssued(st, host)
	// The gateway offers acme-tls/1 for the validation only: a client
	// offering http/1.1 gets http/1.1.
	if st.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", st.NegotiatedProtocol)
	}
	a.expectServedTLS(host, "site", leaf)

	if n := a.refused.conns.Load(); n != 0 {
		t.Errorf("Pebble tried http-01 (%d connections to its port), want tls-alpn-01 only", n)
	}
	a.expectPebbleOrders(1, "validated by tls-alpn-01 on the gateway's HTTPS port")
	a.expectOrders(1, 0)
}

func TestACMENoOrderForUnknownHost(t *testing.T) {
	t.Parallel()
	def, defSerial := withDefaultCert(t)
	a := newACMEEnv(t, bothChallenges, def)
	a.app("site")
	a.app("plain")
	a.app("wild")
	acmeHost := "acme." + a.ns + ".test"
	plain := "plain." + a.ns + ".test"
	off := "off." + a.ns + ".test"
	wild := "*.w." + a.ns + ".test"
	a.ingress(optIn(a.ing("optin", rule(acmeHost, prefix("/", "site", 80)))))
	a.ingress(a.ing("plain", rule(plain, prefix("/", "plain", 80))))
	offIng := a.ing("off", rule(off, prefix("/", "plain", 80)))
	offIng.Annotations = map[string]string{"edgegate.io/acme": "false"}
	a.ingress(offIng)
	// Wildcards cannot be validated by http-01 or tls-alpn-01: opting one
	// in gives it no ACME certificate (and so no redirect).
	a.ingress(optIn(a.ing("wild", rule(wild, prefix("/", "wild", 80)))))

	a.awaitACMEHost(acmeHost)
	a.expect(plain, "/", want{pod: "plain"})
	a.expect(off, "/", want{pod: "plain"})
	a.expect("x.w."+a.ns+".test", "/", want{pod: "wild"})

	// An order happens inside the handshake that needs it: once these
	// handshakes are done, any order they caused is visible.
	for _, sni := range []string{"unknown." + a.ns + ".test", plain, off, "x.w." + a.ns + ".test", "", "127.0.0.1"} {
		st, err := a.handshake(sni, 10*time.Second)
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		if leaf := st.PeerCertificates[0]; leaf.SerialNumber.Cmp(defSerial) != 0 {
			t.Errorf("SNI %q: serial %s (CN %q, issuer %q), want the default certificate", sni, leaf.SerialNumber, leaf.Subject.CommonName, leaf.Issuer.CommonName)
		}
	}
	a.expectPebbleOrders(0, "no handshake was for an ACME host")
	a.expectOrders(0, 0)

	// The same gateway and Pebble do order for the opted-in host.
	leaf := a.obtain(acmeHost)
	a.expectServedTLS(acmeHost, "site", leaf)
	a.expectPebbleOrders(1, "the opted-in host only")
	a.expectOrders(1, 0)
}

func TestACMECertificateSurvivesRestart(t *testing.T) {
	t.Parallel()
	a := newACMEEnv(t, bothChallenges)
	a.app("site")
	host := "acme1." + a.ns + ".test"
	a.ingress(optIn(a.ing("site", rule(host, prefix("/", "site", 80)))))
	a.awaitACMEHost(host)
	leaf := a.obtain(host)
	a.expectServedTLS(host, "site", leaf)
	a.expectOrders(1, 0)
	n := a.peb.Orders()
	if n == 0 {
		t.Fatal("Pebble saw no order for the first certificate")
	}

	a.restart()
	a.awaitACMEHost(host)
	st, err := a.handshake(host, 10*time.Second)
	if err != nil {
		t.Fatalf("handshake after restart: %v", err)
	}
	again := a.verifyIssued(st, host)
	if again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("after restart: serial %s, want the cached %s", again.SerialNumber, leaf.SerialNumber)
	}
	a.expectServedTLS(host, "site", leaf)
	a.expectPebbleOrders(n, "the restarted gateway uses its cache_dir")
	a.expectOrders(0, 0)
	// Its expiry metric reads the certificate from the cache too.
	series := fmt.Sprintf(`edgegate_tls_certificate_expiry_timestamp_seconds{host=%q,source="acme"}`, host)
	if got := a.metric(series); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("%s = %v, want %d", series, got, leaf.NotAfter.Unix())
	}
}
