package discovery

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

var genCerts = flag.Bool("gencerts", false, "regenerate the test certificates in testdata/tls")

// testCerts are the self-signed certificates in testdata/tls, written once
// by TestGenerateTLSTestdata -gencerts (the golden files depend on them).
// Valid ones run from 2024 for 100 years.
var testCerts = []struct {
	name      string
	dnsNames  []string
	notBefore time.Time
	notAfter  time.Time
}{
	{"shop", []string{"shop.example.com"}, date(2024), date(2124)},
	{"api", []string{"api.example.com"}, date(2024), date(2124)},
	{"wildcard", []string{"*.example.com"}, date(2024), date(2124)},
	{"expired", []string{"old.example.com"}, date(2020), date(2021)},
	{"future", []string{"future.example.com"}, date(2100), date(2200)},
}

func date(year int) time.Time { return time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC) }

// goldenNow is Input.Now for the golden cases unless a BuildConfig says
// otherwise.
var goldenNow = date(2026)

func TestGenerateTLSTestdata(t *testing.T) {
	if !*genCerts {
		t.Skip("run with -gencerts to regenerate testdata/tls")
	}
	for i, c := range testCerts {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(int64(i + 1)),
			Subject:               pkix.Name{CommonName: c.dnsNames[0], Organization: []string{"edgegate test"}},
			DNSNames:              c.dnsNames,
			NotBefore:             c.notBefore,
			NotAfter:              c.notAfter,
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write := func(ext, typ string, b []byte) {
			p := filepath.Join("testdata", "tls", c.name+ext)
			if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write(".crt", "CERTIFICATE", der)
		write(".key", "PRIVATE KEY", kder)
	}
}

// readTestdata reads a file under testdata.
func readTestdata(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tlsSecret is a kubernetes.io/tls Secret holding the test certificate
// certName (and the key of keyName, for mismatches).
func tlsSecret(t testing.TB, ns, name, certName, keyName string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       readTestdata(t, "tls/"+certName+".crt"),
			corev1.TLSPrivateKeyKey: readTestdata(t, "tls/"+keyName+".key"),
		},
	}
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		secret  *corev1.Secret
		now     time.Time
		wantErr string
	}{
		{"valid", tlsSecret(t, "ns", "s", "shop", "shop"), goldenNow, ""},
		{"valid without a clock", tlsSecret(t, "ns", "s", "expired", "expired"), time.Time{}, ""},
		{"missing", nil, goldenNow, "not found"},
		{"opaque", &corev1.Secret{Type: corev1.SecretTypeOpaque}, goldenNow, `type is "Opaque"`},
		{"no key", &corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: []byte("x")}}, goldenNow, "needs both"},
		{"bad pem", &corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: []byte("x"), corev1.TLSPrivateKeyKey: []byte("y")}}, goldenNow, "PEM"},
		{"mismatch", tlsSecret(t, "ns", "s", "shop", "api"), goldenNow, "key does not match certificate"},
		{"expired", tlsSecret(t, "ns", "s", "expired", "expired"), goldenNow, "certificate expired at 2021-01-01T00:00:00Z"},
		{"not yet valid", tlsSecret(t, "ns", "s", "future", "future"), goldenNow, "certificate not valid before 2100-01-01T00:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := parseSecret(tc.secret, tc.now)
			if tc.wantErr == "" {
				if p.err != "" || p.cert == nil || p.cert.Leaf == nil || p.notAfter.IsZero() || p.fingerprint == 0 {
					t.Fatalf("parseSecret = %+v, want a certificate", p)
				}
				return
			}
			if !strings.Contains(p.err, tc.wantErr) || p.cert != nil {
				t.Fatalf("parseSecret error %q, want it to contain %q and no certificate", p.err, tc.wantErr)
			}
			if strings.Contains(p.err, "BEGIN") {
				t.Fatalf("error may quote key material: %q", p.err)
			}
		})
	}
}

func tlsIngress(ns, name, host, secret string) *netv1.Ingress {
	ing := testIngress(ns, name, host, "web")
	ing.Spec.TLS = []netv1.IngressTLS{{Hosts: []string{host}, SecretName: secret}}
	return ing
}

func TestWatcherSecrets(t *testing.T) {
	t.Parallel()
	h := start(t, Config{TLS: TLSConfig{Redirect: true}}, ourClass(),
		tlsIngress("shop", "web", "shop.example.com", "shop-tls"),
		tlsIngress("shop", "late", "late.example.com", "late-tls"), // missing for now
		testService("shop", "web"),
		tlsSecret(t, "shop", "shop-tls", "shop", "shop"),
		tlsSecret(t, "shop", "unused-tls", "api", "api"),
	)
	ctx := t.Context()
	secrets := h.client.CoreV1().Secrets("shop")
	s1 := h.w.Snapshot()
	c1 := s1.Certificate("shop.example.com")
	if c1 == nil || c1.Certificate == nil || c1.Fingerprint == 0 || !match(s1, "shop.example.com").RedirectHTTPS {
		t.Fatalf("initial certificate %+v", c1)
	}
	if c := s1.Certificate("late.example.com"); c == nil || c.Error == "" {
		t.Fatalf("missing secret: certificate %+v, want an Error", c)
	}

	// An unreferenced Secret changes: no build at all.
	full := h.builds("full")
	u := tlsSecret(t, "shop", "unused-tls", "wildcard", "wildcard")
	u.ResourceVersion = "5"
	if _, err := secrets.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ignored Secret event", func() bool { return h.secretEvents("ignored") == 1 })
	if got := h.builds("full"); got != full || h.secretEvents("rebuild") != 0 {
		t.Fatalf("an unreferenced Secret update: %v full builds (was %v)", got, full)
	}
	// A referenced one rotates: a new snapshot with the new certificate.
	rot := tlsSecret(t, "shop", "shop-tls", "wildcard", "wildcard")
	rot.ResourceVersion = "6"
	if _, err := secrets.Update(ctx, rot, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rotated certificate", func() bool {
		c := h.w.Snapshot().Certificate("shop.example.com")
		return c != nil && c.Fingerprint != c1.Fingerprint
	})
	s2 := h.w.Snapshot()
	if c := s2.Certificate("shop.example.com"); c.Certificate == nil || c.Certificate.Leaf.DNSNames[0] != "*.example.com" || s2.Version != s1.Version+1 {
		t.Fatalf("rotated certificate %+v, version %d", c, s2.Version)
	}
	if got := h.builds("full"); got != full+1 {
		t.Fatalf("%v full builds after a referenced Secret update, want %v", got, full+1)
	}

	// A referenced Secret that was missing is created.
	if _, err := secrets.Create(ctx, tlsSecret(t, "shop", "late-tls", "api", "api"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the created Secret", func() bool {
		c := h.w.Snapshot().Certificate("late.example.com")
		return c != nil && c.Certificate != nil
	})

	// Deleting a referenced Secret leaves an Error.
	if err := secrets.Delete(ctx, "shop-tls", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted Secret", func() bool {
		c := h.w.Snapshot().Certificate("shop.example.com")
		return c != nil && c.Certificate == nil && c.Error != ""
	})

	// Creating and deleting unreferenced Secrets builds nothing.
	full = h.builds("full")
	if _, err := secrets.Create(ctx, tlsSecret(t, "shop", "other-tls", "api", "api"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := secrets.Delete(ctx, "unused-tls", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ignored Secret events", func() bool { return h.secretEvents("ignored") == 3 })
	if got := h.builds("full"); got != full {
		t.Fatalf("unreferenced Secret create and delete: %v full builds (was %v)", got, full)
	}
	// A referenced Secret re-created.
	if _, err := secrets.Create(ctx, tlsSecret(t, "shop", "shop-tls", "shop", "shop"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the re-created Secret", func() bool {
		c := h.w.Snapshot().Certificate("shop.example.com")
		return c != nil && c.Fingerprint == c1.Fingerprint
	})
	if got := h.builds("full"); got != full+1 {
		t.Fatalf("%v full builds, want %v", got, full+1)
	}
}

func (h *harness) secretEvents(action string) float64 {
	return testutil.ToFloat64(h.w.m.secretEvents.WithLabelValues(action))
}

func TestStripSecret(t *testing.T) {
	t.Parallel()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: []byte("c"), corev1.TLSPrivateKeyKey: []byte("k"), "ca.crt": []byte("ca")},
	}
	orig := s.Data
	out, err := stripSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Secret)
	if got.ManagedFields != nil || len(got.Data) != 2 || string(got.Data[corev1.TLSPrivateKeyKey]) != "k" {
		t.Fatalf("not stripped: %+v", got)
	}
	if len(orig) != 3 {
		t.Fatal("the original data map was modified")
	}
}

func TestTLSSecretsOnly(t *testing.T) {
	t.Parallel()
	var o metav1.ListOptions
	tlsSecretsOnly(&o)
	if o.FieldSelector != "type=kubernetes.io/tls" {
		t.Fatalf("field selector %q", o.FieldSelector)
	}
}

// A referenced Secret that changes while a build is reading the caches is
// not lost: the reverse index it would have matched is only set after the
// build.
func TestSecretChangedDuringBuild(t *testing.T) {
	t.Parallel()
	w, err := New(Config{Client: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := Build(Input{
		Ingresses: []*netv1.Ingress{tlsIngress("shop", "web", "shop.example.com", "shop-tls")},
		Classes:   []*netv1.IngressClass{ourClass()},
		Services:  []*corev1.Service{testService("shop", "web")},
	})
	w.mu.Lock()
	w.building = true
	w.mu.Unlock()
	w.onSecret(tlsSecret(t, "shop", "shop-tls", "shop", "shop")) // not yet referenced
	w.onSecret(tlsSecret(t, "shop", "other", "shop", "shop"))
	w.mu.Lock()
	dirty := w.dirtyAll
	w.mu.Unlock()
	if dirty {
		t.Fatal("dirty before the reverse index has the Secret")
	}
	w.setSecretRefs(snap)
	w.mu.Lock()
	dirty, refs := w.dirtyAll, len(w.secretRefs)
	w.mu.Unlock()
	if !dirty || refs != 1 {
		t.Fatalf("after the build: dirty %v, %d refs; want a rebuild and 1 ref", dirty, refs)
	}
	select {
	case <-w.signal:
	default:
		t.Fatal("builder not woken")
	}
}

func TestScheduleExpiry(t *testing.T) {
	t.Parallel()
	w, err := New(Config{Client: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	in := Input{
		Ingresses: []*netv1.Ingress{tlsIngress("shop", "web", "shop.example.com", "shop-tls")},
		Classes:   []*netv1.IngressClass{ourClass()},
		Secrets:   []*corev1.Secret{tlsSecret(t, "shop", "shop-tls", "shop", "shop")},
	}
	snap, _ := Build(in)
	w.scheduleExpiry(snap, date(2123)) // more than a day before the 2124 expiry
	if w.expiry == nil {
		t.Fatal("no expiry timer")
	}
	w.expiry.Stop()
	w.scheduleExpiry(snap, date(2125)) // already expired: nothing to wait for
	if w.expiry != nil {
		t.Fatal("timer for an expired certificate")
	}
}
