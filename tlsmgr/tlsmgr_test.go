package tlsmgr

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/route"
)

func TestGetCertificateSelection(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	now := time.Now()
	exact := ca.issue(t, now.Add(24*time.Hour), "a.example.com")
	wild := ca.issue(t, now.Add(24*time.Hour), "*.example.com")
	soon := ca.issue(t, now.Add(time.Hour), "soon.example.com")
	broken := &route.Cert{Secret: route.SecretRef{Namespace: "ns", Name: "broken"}, Error: "secret not found"}
	snap := snapshotWith(map[string]*route.Cert{
		"a.example.com":    secretCert(exact, "exact"),
		"*.example.com":    secretCert(wild, "wild"),
		"soon.example.com": secretCert(soon, "soon"),
		"broken.test":      broken,
	}, "acme.test")

	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	m, err := New(Config{
		Snapshot: func() *route.Snapshot { return snap },
		Now:      func() time.Time { return *clock.Load() },
	})
	if err != nil {
		t.Fatal(err)
	}
	def, _ := m.GetCertificate(&tls.ClientHelloInfo{})

	cases := []struct {
		name     string
		sni      string
		later    time.Duration // handshake this long after now
		want     *tls.Certificate
		fallback string // reason counted, "" for none
	}{
		{name: "exact", sni: "a.example.com", want: exact},
		{name: "exact any case and trailing dot", sni: "A.Example.COM.", want: exact},
		{name: "wildcard one label", sni: "b.example.com", want: wild},
		{name: "wildcard not two labels", sni: "x.b.example.com", want: def},
		{name: "wildcard not apex", sni: "example.com", want: def},
		{name: "unusable secret", sni: "broken.test", want: def, fallback: ReasonInvalid},
		{name: "valid before expiry", sni: "soon.example.com", later: 59 * time.Minute, want: soon},
		{name: "expired at handshake time", sni: "soon.example.com", later: 2 * time.Hour, want: def, fallback: ReasonExpired},
		{name: "no SNI", sni: "", want: def},
		{name: "unknown SNI", sni: "unknown.test", want: def},
		{name: "ACME host with ACME off", sni: "acme.test", want: def},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			at := now.Add(c.later)
			clock.Store(&at)
			defer clock.Store(&now)
			var before float64
			if c.fallback != "" {
				before = testutil.ToFloat64(m.metrics.fallback.WithLabelValues(c.fallback))
			}
			got, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: c.sni, SupportedProtos: []string{"http/1.1"}})
			if err != nil || got == nil {
				t.Fatalf("GetCertificate(%q) = %v, %v", c.sni, got, err)
			}
			if got != c.want {
				t.Errorf("GetCertificate(%q) = %q, want %q", c.sni, got.Leaf.Subject.CommonName, c.want.Leaf.Subject.CommonName)
			}
			if c.fallback != "" {
				if d := testutil.ToFloat64(m.metrics.fallback.WithLabelValues(c.fallback)) - before; d != 1 {
					t.Errorf("fallback{%s} grew by %v, want 1", c.fallback, d)
				}
			}
		})
	}
	if def.Leaf.Subject.CommonName != DefaultCommonName {
		t.Errorf("default CN = %q", def.Leaf.Subject.CommonName)
	}
	if _, ok := def.PrivateKey.(*ecdsa.PrivateKey); !ok || def.Leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("default key algorithm %v, want ECDSA", def.Leaf.PublicKeyAlgorithm)
	}
	if d := def.Leaf.NotAfter.Sub(def.Leaf.NotBefore); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("default validity %v, want about a year", d)
	}
}

func TestNilSnapshot(t *testing.T) {
	t.Parallel()
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sni := range []string{"", "a.test"} {
		c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
		if err != nil || c != m.def {
			t.Errorf("GetCertificate(%q) before the first snapshot = %v, %v; want the default", sni, c, err)
		}
	}
	if m.HTTPHandler() != nil {
		t.Error("HTTPHandler must be nil with ACME off")
	}
	if p := m.TLSConfig().NextProtos; len(p) != 1 || p[0] != "http/1.1" {
		t.Errorf("NextProtos = %v with ACME off", p)
	}
}

func TestFallbackLoggedOncePerHostAndReason(t *testing.T) {
	t.Parallel()
	broken := &route.Cert{Secret: route.SecretRef{Namespace: "ns", Name: "broken"}, Error: "bad PEM"}
	snap := snapshotWith(map[string]*route.Cert{"*.broken.test": broken, "x.test": broken})
	var logs strings.Builder
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	w := writerFunc(func(p []byte) (int, error) { <-mu; defer func() { mu <- struct{}{} }(); return logs.Write(p) })
	m, err := New(Config{Snapshot: func() *route.Snapshot { return snap }, Logger: newTextLogger(w)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		m.GetCertificate(&tls.ClientHelloInfo{ServerName: "h" + itoa(i) + ".broken.test"})
		m.GetCertificate(&tls.ClientHelloInfo{ServerName: "x.test"})
	}
	if got := testutil.ToFloat64(m.metrics.fallback.WithLabelValues(ReasonInvalid)); got != 100 {
		t.Errorf("fallback{invalid} = %v, want 100 (every handshake counts)", got)
	}
	<-mu
	out := logs.String()
	mu <- struct{}{}
	if n := strings.Count(out, "serving the default certificate"); n != 2 {
		t.Errorf("logged %d times, want 2 (once for *.broken.test, once for x.test):\n%s", n, out)
	}
	if !strings.Contains(out, "host=*.broken.test") {
		t.Errorf("wildcard fallback should be logged under its configured host:\n%s", out)
	}
}

func TestDefaultCertificateFiles(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{DefaultCertFile: "x.pem"}); err == nil {
		t.Error("only a certificate file: want an error")
	}
	if _, err := New(Config{DefaultCertFile: "/nonexistent.pem", DefaultKeyFile: "/nonexistent.key"}); err == nil {
		t.Error("missing files: want an error")
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	ca := newTestCA(t)
	writeKeyPair(t, ca.issue(t, time.Now().Add(time.Hour), "default.test"), certFile, keyFile)
	m, err := New(Config{DefaultCertFile: certFile, DefaultKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := m.GetCertificate(&tls.ClientHelloInfo{})
	if c.Leaf == nil || c.Leaf.Subject.CommonName != "default.test" {
		t.Errorf("default certificate not loaded from files: %v", c.Leaf)
	}
}

func TestACMEConfigErrors(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{ACME: &ACMEConfig{}}); err == nil {
		t.Error("ACME without a cache dir: want an error")
	}
	if _, err := New(Config{ACME: &ACMEConfig{CacheDir: t.TempDir(), CAFile: "/nonexistent.pem"}}); err == nil {
		t.Error("missing CA file: want an error")
	}
	// An existing cache dir with loose permissions is tightened.
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{ACME: &ACMEConfig{CacheDir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("cache dir mode %v, want 0700", st.Mode().Perm())
	}
	if p := m.TLSConfig().NextProtos; len(p) != 2 || p[0] != "http/1.1" || p[1] != "acme-tls/1" {
		t.Errorf("NextProtos = %v with ACME on", p)
	}
}

func TestHTTPHandler(t *testing.T) {
	t.Parallel()
	snap := snapshotWith(nil, "acme.test")
	m, err := New(Config{
		Snapshot: func() *route.Snapshot { return snap },
		ACME:     &ACMEConfig{CacheDir: t.TempDir()},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := m.HTTPHandler()
	if h == nil || m.HTTPHandler() == nil {
		t.Fatal("HTTPHandler must be non-nil with ACME on")
	}
	cases := []struct {
		host, path string
		want       int
	}{
		{"acme.test", "/", http.StatusNotFound},    // never a redirect
		{"acme.test", "/foo", http.StatusNotFound}, // never a redirect
		{"other.test", "/", http.StatusNotFound},   // not a challenge path
		{"other.test", "/.well-known/acme-challenge/tok", http.StatusForbidden},
		{"acme.test", "/.well-known/acme-challenge/tok", http.StatusNotFound}, // no such token
		{"acme.test:5002", "/.well-known/acme-challenge/tok", http.StatusNotFound},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodGet, "http://"+c.host+c.path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("GET %s%s = %d, want %d", c.host, c.path, w.Code, c.want)
		}
		if loc := w.Header().Get("Location"); loc != "" {
			t.Errorf("GET %s%s redirected to %s", c.host, c.path, loc)
		}
	}
}

func TestHostPolicy(t *testing.T) {
	t.Parallel()
	snap := snapshotWith(map[string]*route.Cert{"*.example.com": {Error: "x"}}, "acme.test")
	m, err := New(Config{Snapshot: func() *route.Snapshot { return snap }, ACME: &ACMEConfig{CacheDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if m.acme.HostPolicy == nil {
		t.Fatal("autocert HostPolicy must never be nil")
	}
	for host, ok := range map[string]bool{
		"acme.test": true, "ACME.test.": true, "acme.test:80": true,
		"other.test": false, "*.example.com": false, "a.example.com": false, "": false, "127.0.0.1": false,
	} {
		if err := m.acme.HostPolicy(t.Context(), host); (err == nil) != ok {
			t.Errorf("HostPolicy(%q) = %v, want allowed=%v", host, err, ok)
		}
	}
}

// TestHandshakes runs real TLS handshakes over loopback against
// m.TLSConfig(): the right certificate per SNI, ALPN http/1.1, resumption.
func TestHandshakes(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	exp := time.Now().Add(24 * time.Hour)
	a := ca.issue(t, exp, "a.example.com")
	wild := ca.issue(t, exp, "*.example.com")
	snap := snapshotWith(map[string]*route.Cert{
		"a.example.com": secretCert(a, "a"),
		"*.example.com": secretCert(wild, "wild"),
	})
	m, err := New(Config{Snapshot: func() *route.Snapshot { return snap }})
	if err != nil {
		t.Fatal(err)
	}
	l := listenLoopback(t, 0)
	serveTLS(t, m, l)
	addr := l.Addr().String()

	for sni, want := range map[string]*tls.Certificate{"a.example.com": a, "b.example.com": wild} {
		st, err := dial(t, addr, &tls.Config{ServerName: sni, RootCAs: ca.pool, NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatalf("handshake %s: %v", sni, err)
		}
		if got := st.PeerCertificates[0].SerialNumber; got.Cmp(want.Leaf.SerialNumber) != 0 {
			t.Errorf("%s: served serial %v, want %v", sni, got, want.Leaf.SerialNumber)
		}
		if st.NegotiatedProtocol != "http/1.1" {
			t.Errorf("%s: ALPN %q, want http/1.1", sni, st.NegotiatedProtocol)
		}
	}

	// Unknown names get the default certificate, which no client trusts.
	if _, err := dial(t, addr, &tls.Config{ServerName: "unknown.test", RootCAs: ca.pool}); err == nil {
		t.Error("unknown SNI verified against the test CA")
	}
	st, err := dial(t, addr, &tls.Config{ServerName: "unknown.test", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if cn := st.PeerCertificates[0].Subject.CommonName; cn != DefaultCommonName {
		t.Errorf("unknown SNI served %q, want the default certificate", cn)
	}
	// TLS 1.1 is refused (and counted as a handshake error).
	if _, err := dial(t, addr, &tls.Config{ServerName: "a.example.com", RootCAs: ca.pool, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("TLS 1.1 handshake succeeded")
	}
	waitFor(t, "handshake error counted", func() bool { return testutil.ToFloat64(m.metrics.handshakeErrors) >= 1 })

	// Resumption for both TLS versions: the second handshake resumes.
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := &tls.Config{ServerName: "a.example.com", RootCAs: ca.pool, ClientSessionCache: tls.NewLRUClientSessionCache(4),
			MinVersion: v, MaxVersion: v}
		first, err := dialResume(t, addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		second, err := dialResume(t, addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if first.DidResume || !second.DidResume {
			t.Errorf("TLS %x: DidResume first=%v second=%v, want false, true", v, first.DidResume, second.DidResume)
		}
	}
}

// dialResume handshakes and, for TLS 1.3, reads so the client receives the
// server's NewSessionTicket (sent after the handshake).
func dialResume(t testing.TB, addr string, cfg *tls.Config) (*tls.ConnectionState, error) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var b [1]byte
	_, _ = c.Read(b[:]) // times out; processes the ticket
	st := c.ConnectionState()
	return &st, nil
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
