package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/edgegate/edgegate/route"
)

// selfSigned returns a server certificate for names and a pool trusting it.
func selfSigned(t *testing.T, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tlsHarness is a harness whose proxy also serves TLS on tlsAddr.
type tlsHarness struct {
	*harness
	tlsAddr  string
	roots    *x509.CertPool
	hsErrors atomic.Int64
}

// newTLSHarness starts a proxy with a plain and a TLS listener; mod sees
// the config after the HTTPS port is known.
func newTLSHarness(t *testing.T, mod func(*Config)) *tlsHarness {
	t.Helper()
	cert, roots := selfSigned(t, "secure.example", "*.wild.example")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	th := &tlsHarness{tlsAddr: ln.Addr().String(), roots: roots}
	port := ln.Addr().(*net.TCPAddr).Port
	th.harness = newHarness(t, func(c *Config) {
		c.RedirectHTTPS = true
		c.HTTPSPort = port
		c.HandshakeError = func(error) { th.hsErrors.Add(1) }
		if mod != nil {
			mod(c)
		}
	})
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	done := make(chan error, 1)
	go func() { done <- th.srv.ServeTLS(ln, cfg) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = th.srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	return th
}

func (th *tlsHarness) httpsClient() *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: th.roots, NextProtos: []string{"h2", "http/1.1"}},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", th.tlsAddr)
		},
	}
	th.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// echoBackend answers with the request headers as JSON.
func echoBackend(t *testing.T) string {
	return backend(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(r.Header)
	})
}

func TestTLSListenerForwardsHTTPS(t *testing.T) {
	t.Parallel()
	th := newTLSHarness(t, nil)
	r := rt("secure.example", "/", route.Prefix, "ing", 0)
	r.RedirectHTTPS = true
	th.publish([]route.Route{r}, be("svc", echoBackend(t)))

	resp, err := th.httpsClient().Get("https://secure.example/x?y=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var hdr http.Header
	if err := json.NewDecoder(resp.Body).Decode(&hdr); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	_, port, _ := net.SplitHostPort(th.tlsAddr)
	if got := hdr.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto %q, want https", got)
	}
	if got := hdr.Get("X-Forwarded-Port"); got != port {
		t.Errorf("X-Forwarded-Port %q, want %s", got, port)
	}
	if resp.TLS == nil || resp.TLS.NegotiatedProtocol != "http/1.1" {
		t.Errorf("TLS state %+v", resp.TLS)
	}

	// A client-supplied X-Forwarded-Proto is replaced on the plain
	// listener too (a route without redirect is proxied).
	r2 := rt("plain.example", "/", route.Prefix, "ing", 0)
	th.publish([]route.Route{r, r2}, be("svc", echoBackend(t)))
	req, _ := http.NewRequest("GET", "http://plain.example/", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	resp2, err := th.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	var hdr2 http.Header
	_ = json.NewDecoder(resp2.Body).Decode(&hdr2)
	if got := hdr2.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("plain listener: X-Forwarded-Proto %q, want http", got)
	}
}

func TestRedirectHTTPS(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	addr := backend(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	th := newTLSHarness(t, nil)
	_, port, _ := net.SplitHostPort(th.tlsAddr)
	red := rt("secure.example", "/", route.Prefix, "ing", 0)
	red.RedirectHTTPS = true
	wild := rt("*.wild.example", "/", route.Prefix, "ing", 0)
	wild.RedirectHTTPS = true
	optOut := rt("optout.example", "/", route.Prefix, "ing", 0)
	th.publish([]route.Route{red, wild, optOut}, be("svc", addr))

	for _, tc := range []struct {
		name, req string
		status    int
		location  string
	}{
		{"origin form", "GET /a/b?c=d&e HTTP/1.1\r\nHost: secure.example\r\n\r\n", 308, "https://secure.example:" + port + "/a/b?c=d&e"},
		{"host port dropped, case folded", "GET /x HTTP/1.1\r\nHost: Secure.EXAMPLE:8080\r\n\r\n", 308, "https://secure.example:" + port + "/x"},
		{"raw URI kept", "GET /a/../b//c%2F?q=%20 HTTP/1.1\r\nHost: secure.example\r\n\r\n", 308, "https://secure.example:" + port + "/a/../b//c%2F?q=%20"},
		{"absolute form", "GET http://secure.example/p?q HTTP/1.1\r\nHost: other\r\n\r\n", 308, "https://secure.example:" + port + "/p?q"},
		{"absolute form without path", "GET http://secure.example?q HTTP/1.1\r\nHost: other\r\n\r\n", 308, "https://secure.example:" + port + "/?q"},
		{"wildcard", "POST /w HTTP/1.1\r\nHost: a.wild.example\r\nContent-Length: 0\r\n\r\n", 308, "https://a.wild.example:" + port + "/w"},
		{"opted out", "GET / HTTP/1.1\r\nHost: optout.example\r\n\r\n", 200, ""},
		{"no route", "GET / HTTP/1.1\r\nHost: none.example\r\n\r\n", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			resp, body := th.raw(tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%q)", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("Location"); got != tc.location {
				t.Errorf("Location %q, want %q", got, tc.location)
			}
			if tc.status == 308 {
				if hits.Load() != before {
					t.Errorf("a redirect contacted the endpoint")
				}
				if body != string(bodyRedirect) || resp.Header.Get("Content-Type") != string(textPlain) {
					t.Errorf("body %q, content type %q", body, resp.Header.Get("Content-Type"))
				}
			}
		})
	}

	// HTTPS requests for the same routes are proxied, never redirected.
	resp, err := th.httpsClient().Get("https://a.wild.example/w")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("https: status %d, want 200", resp.StatusCode)
	}
}

func TestRedirectPortAndSwitch(t *testing.T) {
	t.Parallel()
	addr := backend(t, func(http.ResponseWriter, *http.Request) {})
	for _, tc := range []struct {
		name     string
		mod      func(*Config)
		status   int
		location string
	}{
		{"port 443 left out", func(c *Config) { c.HTTPSPort = 443 }, 308, "https://secure.example/p"},
		{"port 0 left out", func(c *Config) { c.HTTPSPort = 0 }, 308, "https://secure.example/p"},
		{"other port kept", func(c *Config) { c.HTTPSPort = 8443 }, 308, "https://secure.example:8443/p"},
		{"switched off", func(c *Config) { c.RedirectHTTPS = false }, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) { c.RedirectHTTPS = true; tc.mod(c) })
			r := rt("secure.example", "/", route.Prefix, "ing", 0)
			r.RedirectHTTPS = true
			h.publish([]route.Route{r}, be("svc", addr))
			resp, body := h.raw("GET /p HTTP/1.1\r\nHost: secure.example\r\n\r\n")
			if resp.StatusCode != tc.status || resp.Header.Get("Location") != tc.location {
				t.Errorf("got %d %q (%q), want %d %q", resp.StatusCode, resp.Header.Get("Location"), body, tc.status, tc.location)
			}
		})
	}
}

func TestOriginForm(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/a?b":            "/a?b",
		"http://h/a?b":    "/a?b",
		"HTTPS://h:1/x":   "/x",
		"http://h?q":      "?q",
		"http://h":        "",
		"*":               "",
		"":                "",
		"http://h/a://b/": "/a://b/",
	} {
		if got := string(originForm([]byte(in))); got != want {
			t.Errorf("originForm(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHandshakeFailure(t *testing.T) {
	t.Parallel()
	th := newTLSHarness(t, nil)
	th.publish([]route.Route{rt("secure.example", "/", route.Prefix, "ing", 0)}, be("svc", echoBackend(t)))

	// Plain HTTP on the TLS port: the handshake fails, the connection is
	// closed without an HTTP answer and without counting a bad request.
	c, err := net.Dial("tcp", th.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: secure.example\r\n\r\n")
	b, _ := io.ReadAll(c)
	c.Close()
	if strings.Contains(string(b), "HTTP/1.1") {
		t.Errorf("got an HTTP answer on a failed handshake: %q", b)
	}
	// An untrusted client aborts the handshake.
	tc, err := tls.Dial("tcp", th.tlsAddr, &tls.Config{ServerName: "secure.example"})
	if err == nil {
		tc.Close()
		t.Fatal("handshake with an unknown CA succeeded")
	}
	waitFor(t, "two handshake errors", func() bool { return th.hsErrors.Load() == 2 })
	if n := testutil.ToFloat64(th.srv.m.badRequests); n != 0 {
		t.Errorf("bad requests counted: %v", n)
	}

	// The listener still serves.
	resp, err := th.httpsClient().Get("https://secure.example/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
	if n := th.hsErrors.Load(); n != 2 {
		t.Errorf("%d handshake errors, want 2", n)
	}
}

func TestACMEChallengeOnPlainListener(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	th := newTLSHarness(t, func(c *Config) {
		c.ACMEChallenge = func(ctx *fasthttp.RequestCtx) {
			calls.Add(1)
			ctx.SetStatusCode(200)
			ctx.SetBodyString("token:" + string(ctx.Path()))
		}
	})
	r := rt("secure.example", "/", route.Prefix, "ing", 0)
	r.RedirectHTTPS = true
	th.publish([]route.Route{r}, be("svc", echoBackend(t)))

	for _, host := range []string{"secure.example", "unknown.example"} {
		resp, body := th.raw("GET /.well-known/acme-challenge/abc HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
		if resp.StatusCode != 200 || body != "token:/.well-known/acme-challenge/abc" {
			t.Errorf("%s: got %d %q", host, resp.StatusCode, body)
		}
	}
	// Other paths still redirect; the prefix needs its trailing slash.
	resp, _ := th.raw("GET /.well-known/acme-challenge HTTP/1.1\r\nHost: secure.example\r\n\r\n")
	if resp.StatusCode != 308 {
		t.Errorf("challenge prefix without slash: %d, want 308", resp.StatusCode)
	}
	// HTTPS requests are routed as usual.
	resp2, err := th.httpsClient().Get("https://secure.example/.well-known/acme-challenge/abc")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 200 || calls.Load() != 2 {
		t.Errorf("https: status %d, %d challenge calls (want 2)", resp2.StatusCode, calls.Load())
	}
}
