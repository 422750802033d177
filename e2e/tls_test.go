package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"
)

// testCA is the certificate authority every certificate of these tests
// chains to; clients trust only it.
var testCA struct {
	once sync.Once
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var certSerial atomic.Int64

func init() { certSerial.Store(time.Now().UnixNano() % 1e9 * 1000) }

func ca(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, *x509.CertPool) {
	t.Helper()
	testCA.once.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "edgegate e2e test CA"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
			IsCA:                  true,
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		testCA.cert, _ = x509.ParseCertificate(der)
		testCA.key = key
		testCA.pool = x509.NewCertPool()
		testCA.pool.AddCert(testCA.cert)
	})
	return testCA.cert, testCA.key, testCA.pool
}

// issued is a leaf certificate signed by the test CA, PEM-encoded.
type issued struct {
	certPEM, keyPEM []byte
	serial          *big.Int
}

// issue signs a serving certificate for names with a fresh serial.
func issue(t *testing.T, names ...string) issued {
	t.Helper()
	caCert, caKey, _ := ca(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial := big.NewInt(certSerial.Add(1))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(12 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return issued{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		serial:  serial,
	}
}

// withDefaultCert configures the gateway's default certificate (files
// signed by the test CA, for the name "default.invalid") and returns its
// serial.
func withDefaultCert(t *testing.T) (func(*env, *gatewayproc.Options), *big.Int) {
	c := issue(t, "default.invalid")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "default.crt"), filepath.Join(dir, "default.key")
	if err := os.WriteFile(certFile, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return func(_ *env, o *gatewayproc.Options) {
		o.HTTPSExtra += fmt.Sprintf("default_cert = %q\ndefault_key = %q\n", certFile, keyFile)
	}, c.serial
}

// tlsSecret creates or updates a kubernetes.io/tls Secret in namespace ns.
func (e *env) tlsSecret(ns, name string, certPEM, keyPEM []byte) {
	e.t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	cur, err := e.client.CoreV1().Secrets(ns).Get(e.ctx, name, metav1.GetOptions{})
	if err == nil {
		s.ResourceVersion = cur.ResourceVersion
		_, err = e.client.CoreV1().Secrets(ns).Update(e.ctx, s, metav1.UpdateOptions{})
	} else {
		_, err = e.client.CoreV1().Secrets(ns).Create(e.ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		e.t.Fatalf("write secret %s/%s: %v", ns, name, err)
	}
}

// withTLS adds spec.tls entries to an Ingress: each is a secret name and
// its hosts.
func withTLS(ing *netv1.Ingress, secret string, hosts ...string) *netv1.Ingress {
	ing.Spec.TLS = append(ing.Spec.TLS, netv1.IngressTLS{Hosts: hosts, SecretName: secret})
	return ing
}

// tlsResponse is a response over HTTPS with the certificate presented.
type tlsResponse struct {
	response
	leaf *x509.Certificate
}

// getTLS sends GET path over a new TLS connection to the gateway's HTTPS
// listener with SNI and Host host, verifying the certificate against the
// test CA for host.
func (e *env) getTLS(host, path string) (tlsResponse, error) {
	_, _, pool := ca(e.t)
	return e.doTLS(host, path, &tls.Config{ServerName: host, RootCAs: pool})
}

func (e *env) doTLS(host, path string, cfg *tls.Config) (tlsResponse, error) {
	tr := &http.Transport{
		TLSClientConfig:   cfg,
		DisableKeepAlives: true, // a new handshake for every request
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.gw.HTTPSAddr)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, "https://"+host+path, nil)
	if err != nil {
		return tlsResponse{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return tlsResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return tlsResponse{}, err
	}
	r := tlsResponse{response: response{status: resp.StatusCode, pod: resp.Header.Get("X-Pod"), body: string(b), header: resp.Header}}
	if r.pod != "" {
		_ = json.Unmarshal(b, &r.echo)
	}
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		r.leaf = resp.TLS.PeerCertificates[0]
	}
	return r, nil
}

// peerCert completes a handshake with SNI sni (none when "") and returns
// the certificate the gateway presented, without checking that it covers
// the name (the default certificate does not).
func (e *env) peerCert(sni string) (*x509.Certificate, error) {
	cfg := &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 3 * time.Second}}
	c, err := d.DialContext(e.ctx, "tcp", e.gw.HTTPSAddr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st := c.(*tls.Conn).ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return nil, errors.New("no certificate presented")
	}
	return st.PeerCertificates[0], nil
}

// expectCert waits until a handshake with SNI sni presents the certificate
// with serial.
func (e *env) expectCert(sni string, serial *big.Int) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("certificate %s for SNI %q", serial, sni), func() error {
		leaf, err := e.peerCert(sni)
		if err != nil {
			return err
		}
		if leaf.SerialNumber.Cmp(serial) != 0 {
			return fmt.Errorf("got serial %s (CN %q)", leaf.SerialNumber, leaf.Subject.CommonName)
		}
		return nil
	})
}

// expectTLS waits until GET path over HTTPS for host is answered by pod,
// with a certificate of serial that verifies for host.
func (e *env) expectTLS(host, path, pod string, serial *big.Int) tlsResponse {
	e.t.Helper()
	var last tlsResponse
	e.eventually(fmt.Sprintf("https://%s%s -> pod %s with certificate %s", host, path, pod, serial), func() error {
		r, err := e.getTLS(host, path)
		if err != nil {
			return err
		}
		if err := (want{pod: pod}).check(r.response); err != nil {
			return err
		}
		if r.leaf.SerialNumber.Cmp(serial) != 0 {
			return fmt.Errorf("certificate serial %s, want %s", r.leaf.SerialNumber, serial)
		}
		last = r
		return nil
	})
	return last
}

func TestTLSSecretsBySNI(t *testing.T) {
	t.Parallel()
	def, defSerial := withDefaultCert(t)
	e := newEnv(t, def)
	alpha := e.app("alpha")
	e.app("beta")
	wild := e.app("wild")
	e.app("plain")
	a, b := "a."+e.ns+".test", "b."+e.ns+".test"
	wildHosts := "*.w." + e.ns + ".test"
	optOut := "optout." + e.ns + ".test"
	ca1, cb := issue(t, a), issue(t, b)
	cw := issue(t, wildHosts)
	co := issue(t, optOut)
	e.tlsSecret(e.ns, "a-tls", ca1.certPEM, ca1.keyPEM)
	e.tlsSecret(e.ns, "b-tls", cb.certPEM, cb.keyPEM)
	e.tlsSecret(e.ns, "w-tls", cw.certPEM, cw.keyPEM)
	e.tlsSecret(e.ns, "o-tls", co.certPEM, co.keyPEM)

	e.ingress(withTLS(withTLS(e.ing("sites",
		rule(a, prefix("/", "alpha", 80)),
		rule(b, prefix("/", "beta", 80)),
	), "a-tls", a), "b-tls", b))
	e.ingress(withTLS(e.ing("wild", rule(wildHosts, prefix("/", "wild", 80))), "w-tls", wildHosts))
	opt := withTLS(e.ing("optout", rule(optOut, prefix("/", "plain", 80))), "o-tls", optOut)
	opt.Annotations = map[string]string{"edgegate.io/ssl-redirect": "false"}
	e.ingress(opt)

	// Each host gets its own certificate by SNI.
	ra := e.expectTLS(a, "/x?y=1", "alpha", ca1.serial)
	e.expectTLS(b, "/", "beta", cb.serial)
	rw := e.expectTLS("one.w."+e.ns+".test", "/", "wild", cw.serial)
	e.expectTLS("two.w."+e.ns+".test", "/", "wild", cw.serial)
	e.expectTLS(optOut, "/", "plain", co.serial)
	if got := rw.leaf.DNSNames; len(got) != 1 || got[0] != wildHosts {
		t.Errorf("wildcard leaf SANs %v", got)
	}

	// The pod learns the request came over HTTPS, on which port.
	_, httpsPort, _ := net.SplitHostPort(e.gw.HTTPSAddr)
	if h := ra.echo.Headers; first(h["X-Forwarded-Proto"]) != "https" || first(h["X-Forwarded-Port"]) != httpsPort {
		t.Errorf("forwarded headers at the pod: proto %q port %q, want https %s", h["X-Forwarded-Proto"], h["X-Forwarded-Port"], httpsPort)
	}
	if ra.echo.Host != a || ra.echo.URI != "/x?y=1" {
		t.Errorf("pod saw host %q uri %q", ra.echo.Host, ra.echo.URI)
	}

	// Unknown names, names one label too deep for the wildcard and no
	// SNI at all get the default certificate.
	for _, sni := range []string{"unknown." + e.ns + ".test", "a.b.w." + e.ns + ".test", ""} {
		leaf, err := e.peerCert(sni)
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		if leaf.SerialNumber.Cmp(defSerial) != 0 {
			t.Errorf("SNI %q: serial %s (CN %q), want the default certificate %s", sni, leaf.SerialNumber, leaf.Subject.CommonName, defSerial)
		}
	}

	// Plain HTTP to a host with TLS: 308 to the same URI on https, the
	// gateway's HTTPS port, and no request reaches the pod.
	before := alpha.hits.Load() + wild.hits.Load()
	for _, c := range []struct{ host, path, location string }{
		{a, "/some/path?q=1&r=%20", "https://" + a + ":" + httpsPort + "/some/path?q=1&r=%20"},
		{a + ":" + portOf(e.gw.HTTPAddr), "/", "https://" + a + ":" + httpsPort + "/"},
		{"x.w." + e.ns + ".test", "/p", "https://x.w." + e.ns + ".test:" + httpsPort + "/p"},
	} {
		r, err := e.get(c.host, c.path)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusPermanentRedirect || r.pod != "" || r.header.Get("Location") != c.location {
			t.Errorf("http://%s%s: status %d pod %q Location %q, want 308 to %q", c.host, c.path, r.status, r.pod, r.header.Get("Location"), c.location)
		}
	}
	if n := alpha.hits.Load() + wild.hits.Load(); n != before {
		t.Errorf("redirects reached the pods: %d requests", n-before)
	}
	// The opt-out keeps plain HTTP served, and says so to the pod.
	r, err := e.get(optOut, "/")
	if err != nil {
		t.Fatal(err)
	}
	if err := (want{pod: "plain"}).check(r); err != nil {
		t.Errorf("opted-out host over http: %v", err)
	} else if p := first(r.echo.Headers["X-Forwarded-Proto"]); p != "http" {
		t.Errorf("opted-out host over http: X-Forwarded-Proto %q", p)
	}
	// A host without TLS is not redirected.
	e.ingress(e.ing("notls", rule("notls."+e.ns+".test", prefix("/", "plain", 80))))
	e.expect("notls."+e.ns+".test", "/", want{pod: "plain"})
}

func TestTLSRotation(t *testing.T) {
	t.Parallel()
	def, _ := withDefaultCert(t)
	e := newEnv(t, def)
	e.app("site")
	host := "rot." + e.ns + ".test"
	old := issue(t, host)
	e.tlsSecret(e.ns, "rot-tls", old.certPEM, old.keyPEM)
	e.ingress(withTLS(e.ing("rot", rule(host, prefix("/", "site", 80))), "rot-tls", host))
	e.expectTLS(host, "/", "site", old.serial)

	// A client keeps making requests, each on a new TLS connection, while
	// the Secret is replaced: every one succeeds, and the new certificate
	// soon answers.
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		failures []string
		n        int
		oldN     int // answered with the old certificate
		newN     int // answered with the rotated one
		sawNew   = make(chan struct{})
		newOnce  sync.Once
		rotated  = issue(t, host)
		loopDone = make(chan struct{})
	)
	go func() {
		defer close(loopDone)
		for ctx.Err() == nil {
			r, err := e.getTLS(host, "/")
			mu.Lock()
			n++
			switch {
			case err != nil:
				if ctx.Err() == nil {
					failures = append(failures, err.Error())
				}
			case r.status != 200 || r.pod != "site":
				failures = append(failures, fmt.Sprintf("status %d pod %q", r.status, r.pod))
			case r.leaf.SerialNumber.Cmp(rotated.serial) == 0:
				newN++
				newOnce.Do(func() { close(sawNew) })
			case r.leaf.SerialNumber.Cmp(old.serial) == 0:
				oldN++
			default:
				failures = append(failures, "unexpected serial "+r.leaf.SerialNumber.String())
			}
			mu.Unlock()
		}
	}()
	counted := func(what string, c *int) {
		e.eventually(what, func() error {
			mu.Lock()
			defer mu.Unlock()
			if *c < 5 {
				return fmt.Errorf("%d so far", *c)
			}
			return nil
		})
	}
	counted("5 requests served with the old certificate", &oldN)
	start := time.Now()
	e.tlsSecret(e.ns, "rot-tls", rotated.certPEM, rotated.keyPEM)
	select {
	case <-sawNew:
		t.Logf("new certificate served %s after the Secret update", time.Since(start).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Error("the rotated certificate was not served within 15s")
	}
	counted("5 requests served with the rotated certificate", &newN)
	cancel()
	<-loopDone
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during rotation, first: %s", len(failures), n, failures[0])
	}
	if n < 5 {
		t.Errorf("only %d requests during rotation", n)
	}
	// Once rotated, it stays rotated.
	e.expectTLS(host, "/", "site", rotated.serial)
}

func TestTLSSecretProblems(t *testing.T) {
	t.Parallel()
	def, defSerial := withDefaultCert(t)
	e := newEnv(t, def)
	e.app("good")
	e.app("broken")
	e.app("foreign")
	good, broken, foreign := "good."+e.ns+".test", "broken."+e.ns+".test", "foreign."+e.ns+".test"

	// A Secret in another namespace is not usable: spec.tls.secretName
	// names a Secret of the Ingress's own namespace.
	other := e.ns + "-other"
	if _, err := e.client.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cf := issue(t, foreign)
	e.tlsSecret(other, "shared-tls", cf.certPEM, cf.keyPEM)

	cg := issue(t, good)
	e.tlsSecret(e.ns, "good-tls", cg.certPEM, cg.keyPEM)
	cb := issue(t, broken)
	e.tlsSecret(e.ns, "broken-tls", []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"), cb.keyPEM)

	e.ingress(withTLS(e.ing("good", rule(good, prefix("/", "good", 80))), "good-tls", good))
	e.ingress(withTLS(e.ing("broken", rule(broken, prefix("/", "broken", 80))), "broken-tls", broken))
	e.ingress(withTLS(e.ing("foreign", rule(foreign, prefix("/", "foreign", 80))), "shared-tls", foreign))

	e.expectTLS(good, "/", "good", cg.serial)
	e.expectCert(broken, defSerial)
	e.expectCert(foreign, defSerial)
	e.logContains("ingress="+e.ns+"/broken", e.ns+"/broken-tls")
	e.logContains("ingress="+e.ns+"/foreign", e.ns+"/shared-tls")

	// The hosts with an unusable Secret still route over HTTPS with the
	// default certificate (a client that accepts it gets its pod).
	_, _, pool := ca(t)
	r, err := e.doTLS(broken, "/", &tls.Config{ServerName: "default.invalid", RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	if err := (want{pod: "broken"}).check(r.response); err != nil || r.leaf.SerialNumber.Cmp(defSerial) != 0 {
		t.Errorf("broken host over https: %v, serial %s", err, r.leaf.SerialNumber)
	}

	// Fixing the Secret fixes the host; the good host never changed.
	e.tlsSecret(e.ns, "broken-tls", cb.certPEM, cb.keyPEM)
	e.expectTLS(broken, "/", "broken", cb.serial)
	e.expectTLS(good, "/", "good", cg.serial)
}

func TestTLSSelfSignedDefault(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // no default_cert: generated at start
	e.app("site")
	host := "site." + e.ns + ".test"
	e.ingress(e.ing("site", rule(host, prefix("/", "site", 80))))
	e.expect(host, "/", want{pod: "site"}) // no TLS for it: no redirect

	leaf, err := e.peerCert(host)
	if err != nil {
		t.Fatalf("handshake with the generated default certificate: %v", err)
	}
	_, _, pool := ca(t)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
		t.Errorf("the generated default certificate chains to the test CA")
	}
	// A handshake that fails (plain HTTP on the HTTPS port) is not fatal.
	c, err := net.DialTimeout("tcp", e.gw.HTTPSAddr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	io.Copy(io.Discard, c)
	c.Close()
	if _, err := e.peerCert(host); err != nil {
		t.Errorf("after a failed handshake: %v", err)
	}
}

func TestTLSPortClashFailsFast(t *testing.T) {
	t.Parallel()
	cp := controlplane.ForTest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	gw, err := gatewayproc.Start(t.Context(), gatewayproc.Options{
		Bin: gatewayBin, Dir: t.TempDir(), Kubeconfig: cp.Kubeconfig(),
		HTTPSListen: ln.Addr().String(), NoWait: true, EventLoops: testEventLoops(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-gw.Done():
	case <-time.After(15 * time.Second):
		gw.Kill()
		t.Fatal("gateway kept running with its HTTPS port taken")
	}
	if gw.Err() == nil || !strings.Contains(gw.Log(), "https listener") {
		t.Errorf("exit %v, want an error naming the https listener:\n%s", gw.Err(), gw.LogTail(10))
	}
}

func TestTLSGracefulShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	def, _ := withDefaultCert(t)
	e := newEnv(t, def)
	slow := e.app("slow")
	host := "drain." + e.ns + ".test"
	c := issue(t, host)
	e.tlsSecret(e.ns, "drain-tls", c.certPEM, c.keyPEM)
	e.ingress(withTLS(e.ing("drain", rule(host, prefix("/", "slow", 80))), "drain-tls", host))
	e.expectTLS(host, "/", "slow", c.serial)

	before := slow.hits.Load()
	done := make(chan tlsResponse, 1)
	go func() {
		r, err := e.getTLS(host, "/?sleep=1500ms")
		if err != nil {
			r.body = err.Error()
		}
		done <- r
	}()
	e.eventually("the slow request reaches the pod", func() error {
		if slow.hits.Load() == before {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if err := e.gw.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if err := (want{pod: "slow"}).check(r.response); err != nil {
		t.Fatalf("in-flight https request during shutdown: %v", err)
	}
	e.waitCleanExit()
	if c, err := net.DialTimeout("tcp", e.gw.HTTPSAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("the HTTPS listener still accepts after exit")
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
