package tlsmgr

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/internal/pebble"
	"github.com/edgegate/edgegate/route"
)

// These tests order real certificates from Pebble over loopback. Pebble's
// validation authority resolves every name to 127.0.0.1 and connects to
// p.HTTPPort() (http-01) and p.TLSPort() (tls-alpn-01).
//
// How each challenge type is forced: autocert tries "tls-alpn-01" first and
// "http-01" only if Manager.HTTPHandler was called; when a challenge fails it
// starts a new order with the next type (verifyRFC in autocert.go).
//   - tls-alpn-01: HTTPHandler is never called and the TLS listener is on
//     TLSPort, so exactly one order, validated by tls-alpn-01.
//   - http-01: HTTPHandler is served on HTTPPort and nothing listens on
//     TLSPort, so the first order's tls-alpn-01 validation is refused and
//     autocert places a second order that http-01 validates. Pebble counts
//     two orders; our orders metric counts one success (it counts issued
//     certificates).

func newACMEManager(t *testing.T, p *pebble.Pebble, cacheDir string, acmeHosts ...string) *Manager {
	t.Helper()
	snap := snapshotWith(nil, acmeHosts...)
	m, err := New(Config{
		Snapshot: func() *route.Snapshot { return snap },
		ACME: &ACMEConfig{
			Email:        "ops@example.test",
			DirectoryURL: p.DirectoryURL(),
			CAFile:       p.CAFile(),
			CacheDir:     cacheDir,
		},
		Logger: newTextLogger(testWriter{t}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func orders(m *Manager, result string) float64 {
	return testutil.ToFloat64(m.metrics.orders.WithLabelValues(result))
}

// verifyIssued checks that the chain served for host verifies against
// Pebble's roots and names exactly host.
func verifyIssued(t *testing.T, p *pebble.Pebble, st *tls.ConnectionState, host string) *x509.Certificate {
	t.Helper()
	roots, err := p.Roots()
	if err != nil {
		t.Fatal(err)
	}
	leaf := st.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter}); err != nil {
		t.Errorf("issued chain does not verify against Pebble's roots: %v", err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != host {
		t.Errorf("SAN = %v, want [%s]", leaf.DNSNames, host)
	}
	return leaf
}

func acmeDial(t *testing.T, addr, host string) *tls.ConnectionState {
	t.Helper()
	// Verification happens in verifyIssued, against Pebble's roots.
	st, err := dialTimeout(addr, &tls.Config{ServerName: host, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}, 90*time.Second)
	if err != nil {
		t.Fatalf("handshake %s: %v", host, err)
	}
	return st
}

func dialTimeout(addr string, cfg *tls.Config, d time.Duration) (*tls.ConnectionState, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	st := c.ConnectionState()
	return &st, nil
}

func TestACMEHTTP01(t *testing.T) {
	t.Parallel()
	p := pebble.ForTest(t)
	const host = "http01.edgegate.test"
	m := newACMEManager(t, p, filepath.Join(t.TempDir(), "acme"), host)

	var challenges atomic.Int32
	h := m.HTTPHandler()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			challenges.Add(1)
		}
		h.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	hl := listenLoopback(t, p.HTTPPort())
	go srv.Serve(hl)
	t.Cleanup(func() { srv.Close() })
	// The client's listener is not on TLSPort: tls-alpn-01 cannot validate.
	l := listenLoopback(t, 0)
	serveTLS(t, m, l)

	st := acmeDial(t, l.Addr().String(), host)
	verifyIssued(t, p, st, host)
	if challenges.Load() == 0 {
		t.Error("Pebble never fetched an http-01 response")
	}
	if got := orders(m, "success"); got != 1 {
		t.Errorf("orders{success} = %v, want 1", got)
	}
	if got := p.Orders(); got != 2 {
		t.Errorf("Pebble saw %d orders, want 2 (tls-alpn-01 refused, then http-01)", got)
	}
}

func TestACMETLSALPN01(t *testing.T) {
	t.Parallel()
	p := pebble.ForTest(t)
	const host = "alpn.edgegate.test"
	m := newACMEManager(t, p, filepath.Join(t.TempDir(), "acme"), host)
	// No HTTPHandler: autocert only tries tls-alpn-01, on the listener
	// Pebble validates against.
	l := listenLoopback(t, p.TLSPort())
	serveTLS(t, m, l)

	st := acmeDial(t, l.Addr().String(), host)
	verifyIssued(t, p, st, host)
	if st.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", st.NegotiatedProtocol)
	}
	if got := orders(m, "success"); got != 1 {
		t.Errorf("orders{success} = %v, want 1", got)
	}
	if got := p.Orders(); got != 1 {
		t.Errorf("Pebble saw %d orders, want 1", got)
	}
}

func TestACMENotAllowed(t *testing.T) {
	t.Parallel()
	p := pebble.ForTest(t)
	m := newACMEManager(t, p, filepath.Join(t.TempDir(), "acme"), "allowed.edgegate.test")
	l := listenLoopback(t, p.TLSPort())
	serveTLS(t, m, l)
	for _, host := range []string{"other.edgegate.test", "x.allowed.edgegate.test", "127.0.0.1"} {
		st := acmeDial(t, l.Addr().String(), host)
		if cn := st.PeerCertificates[0].Subject.CommonName; cn != DefaultCommonName {
			t.Errorf("%s served %q, want the default certificate", host, cn)
		}
	}
	if got := orders(m, "success") + orders(m, "failure"); got != 0 {
		t.Errorf("orders = %v, want 0", got)
	}
	if got := p.Orders(); got != 0 {
		t.Errorf("Pebble saw %d orders, want 0", got)
	}
}

func TestACMERestartUsesCache(t *testing.T) {
	t.Parallel()
	p := pebble.ForTest(t)
	const host = "restart.edgegate.test"
	cacheDir := filepath.Join(t.TempDir(), "acme")
	l := listenLoopback(t, p.TLSPort())
	var current atomic.Pointer[Manager]
	// One listener whose GetCertificate follows the current Manager, as
	// the proxy would after a restart on the same port.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1", "acme-tls/1"},
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return current.Load().GetCertificate(h) }}
	serveTLSConfig(t, cfg, l)

	first := newACMEManager(t, p, cacheDir, host)
	current.Store(first)
	leaf1 := verifyIssued(t, p, acmeDial(t, l.Addr().String(), host), host)
	if got := orders(first, "success"); got != 1 {
		t.Fatalf("first manager orders{success} = %v, want 1", got)
	}
	n := p.Orders()

	second := newACMEManager(t, p, cacheDir, host)
	current.Store(second)
	leaf2 := verifyIssued(t, p, acmeDial(t, l.Addr().String(), host), host)
	if leaf1.SerialNumber.Cmp(leaf2.SerialNumber) != 0 {
		t.Errorf("restarted manager served a new certificate (serial %v, cached %v)", leaf2.SerialNumber, leaf1.SerialNumber)
	}
	if got := orders(second, "success") + orders(second, "failure"); got != 0 {
		t.Errorf("restarted manager orders = %v, want 0", got)
	}
	if got := p.Orders(); got != n {
		t.Errorf("Pebble orders %d -> %d after restart, want no new order", n, got)
	}

	// The expiry metric reads the cache.
	if got := testutil.CollectAndCount(second.metrics.expiry); got != 2 {
		t.Errorf("expiry series = %d, want 2 (default and %s)", got, host)
	}

	st, err := os.Stat(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("cache dir mode %v, want 0700", st.Mode().Perm())
	}
	entries, err := os.ReadDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Name())
		if info.Mode().Perm() != 0o600 {
			t.Errorf("cache file %s mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	if !contains(names, host) || !contains(names, "acme_account+key") {
		t.Errorf("cache files %v, want %s and acme_account+key", names, host)
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
