package tlsmgr

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACMEConfig enables certificates from an ACME CA (RFC 8555) for the hosts a
// snapshot allows (route.Snapshot.ACMEAllowed).
type ACMEConfig struct {
	// Email is the account's contact address, for the CA's expiry and
	// problem notices. Default: none.
	Email string
	// DirectoryURL is the CA's ACME directory.
	// Default: Let's Encrypt production (autocert.DefaultACMEDirectory).
	DirectoryURL string
	// CAFile is a PEM file of extra roots trusted for the TLS connection to
	// the ACME directory (a private CA or Pebble), added to the system
	// roots. It does not affect the certificates served. Default: none.
	CAFile string
	// CacheDir holds the account key, the certificates and in-flight
	// challenge tokens when Cache is nil. It is created with mode 0700 (and
	// tightened to 0700 if it exists with wider permissions); files are
	// written 0600. Required when Cache is nil.
	CacheDir string
	// RenewBefore is how long before expiry a certificate is renewed
	// (autocert caps it at 30 days). Default: 30 days.
	RenewBefore time.Duration
	// Cache stores ACME state. Default: autocert.DirCache(CacheDir).
	Cache Cache
}

// DefaultRenewBefore is ACMEConfig.RenewBefore's default.
const DefaultRenewBefore = 30 * 24 * time.Hour

// Cache is the ACME state store; it is autocert.Cache, so autocert.DirCache
// implements it, and cluster can replace it with a replicated one.
//
// Keys are "acme_account+key" (account key), "<host>" and "<host>+rsa"
// (private key PEM followed by the certificate chain PEM), "<host>+token"
// (tls-alpn-01 challenge certificate) and "<token>+http-01" (http-01
// response): small values, rarely written.
//
// Contract: methods are called concurrently from handshake goroutines and
// autocert's renewal timers, so an implementation must be safe for
// concurrent use. Get must return autocert.ErrCacheMiss (exactly, not
// wrapped) for a missing key. Calls happen inside TLS handshakes: honour ctx
// and do not block for long (a replicated cache answers Get from local
// state and replicates Put/Delete asynchronously). The data passed to Put
// must not be modified or retained after Put returns without copying, and
// the slice returned by Get may be kept by the caller. Key material is in
// the values: never log them.
type Cache interface {
	// Get returns the data for key, or autocert.ErrCacheMiss.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put stores data under key, replacing any previous value.
	Put(ctx context.Context, key string, data []byte) error
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

var _ Cache = autocert.DirCache("")

// errHostNotAllowed is returned by the host policy for names the current
// snapshot does not allow for ACME.
var errHostNotAllowed = errors.New("tlsmgr: host not allowed for ACME")

// acmeRetryAfter is how long autocert keeps a failed order before it tries
// again (its createCertRetryAfter); failures are counted and logged once per
// host in that window.
const acmeRetryAfter = time.Minute

func (m *Manager) setupACME(cfg ACMEConfig) error {
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = autocert.DefaultACMEDirectory
	}
	if cfg.RenewBefore <= 0 {
		cfg.RenewBefore = DefaultRenewBefore
	}
	inner := cfg.Cache
	if inner == nil {
		if cfg.CacheDir == "" {
			return errors.New("tlsmgr: acme: a cache directory is required")
		}
		if err := ensurePrivateDir(cfg.CacheDir); err != nil {
			return err
		}
		inner = autocert.DirCache(cfg.CacheDir)
	}
	httpClient, err := acmeHTTPClient(cfg.CAFile)
	if err != nil {
		return err
	}
	m.cache = &orderCache{inner: inner, m: m}
	m.acme = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       m.cache,
		HostPolicy:  m.hostPolicy,
		RenewBefore: cfg.RenewBefore,
		Email:       cfg.Email,
		Client: &acme.Client{
			DirectoryURL: cfg.DirectoryURL,
			HTTPClient:   httpClient,
			UserAgent:    "edgegate",
		},
	}
	return nil
}

// ensurePrivateDir creates dir with mode 0700, or tightens an existing one.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tlsmgr: acme cache dir: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("tlsmgr: acme cache dir: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("tlsmgr: acme cache dir %s is not a directory", dir)
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("tlsmgr: acme cache dir: %w", err)
		}
	}
	return nil
}

func acmeHTTPClient(caFile string) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("tlsmgr: acme ca file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("tlsmgr: acme ca file %s: no PEM certificate", caFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, Timeout: time.Minute}, nil
}

// hostPolicy is autocert's HostPolicy: only names the current snapshot
// allows. autocert's HTTP-01 handler passes the Host header, which may carry
// a port; it is stripped.
func (m *Manager) hostPolicy(_ context.Context, host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if m.snapshot().ACMEAllowed(host) {
		return nil
	}
	return errHostNotAllowed
}

// acmeCertificate asks autocert for an ACME-allowed name. A failure answers
// with the default certificate instead of failing the handshake.
func (m *Manager) acmeCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := m.acme.GetCertificate(hello)
	if err == nil {
		return cert, nil
	}
	host := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	m.metrics.fallback.WithLabelValues(ReasonACMEError).Inc()
	now := m.now()
	m.logMu.Lock()
	last, seen := m.acmeFails[host]
	first := !seen || now.Sub(last) >= acmeRetryAfter
	if first {
		m.acmeFails[host] = now
	}
	m.logMu.Unlock()
	if first {
		// One failed order per host per autocert retry window: handshakes
		// that waited for the same order, or arrive while autocert holds
		// the failure, report the same error.
		m.metrics.orders.WithLabelValues("failure").Inc()
		m.log.Warn("acme: no certificate, serving the default certificate", "host", host, "error", err)
	}
	return m.def, nil
}

// HTTPHandler returns the ACME http-01 challenge responder for
// /.well-known/acme-challenge/ (any other path is 404, never a redirect), or
// nil when ACME is off. Calling it also enables the http-01 challenge type:
// autocert tries tls-alpn-01 first and then http-01 (on a new order) only
// once HTTPHandler has been called. Serve it on the plain-HTTP port 80
// listener before any redirect to HTTPS.
func (m *Manager) HTTPHandler() http.Handler {
	if m.acme == nil {
		return nil
	}
	m.httpOnce.Do(func() {
		m.httpHandler = m.acme.HTTPHandler(http.NotFoundHandler())
	})
	return m.httpHandler
}

// orderCache wraps the ACME Cache to count issued certificates: autocert
// writes a certificate key ("<host>" or "<host>+rsa") exactly when an order
// (first issuance or renewal) succeeded. Handshakes that waited for the same
// order write the same bytes again, so only a Put whose data differs from
// the stored value counts.
type orderCache struct {
	inner Cache
	m     *Manager
	mu    sync.Mutex // serialises Puts of certificate keys (rare)
}

func isCertKey(key string) bool {
	i := strings.IndexByte(key, '+')
	return i < 0 || key[i:] == "+rsa"
}

func (c *orderCache) Get(ctx context.Context, key string) ([]byte, error) {
	return c.inner.Get(ctx, key)
}

func (c *orderCache) Delete(ctx context.Context, key string) error {
	return c.inner.Delete(ctx, key)
}

func (c *orderCache) Put(ctx context.Context, key string, data []byte) error {
	if !isCertKey(key) {
		return c.inner.Put(ctx, key, data)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old, err := c.inner.Get(ctx, key)
	same := err == nil && bytes.Equal(old, data)
	if err := c.inner.Put(ctx, key, data); err != nil {
		return err
	}
	if !same {
		c.m.metrics.orders.WithLabelValues("success").Inc()
		attrs := []any{"host", strings.TrimSuffix(key, "+rsa")}
		if leaf := leafFromCacheData(data); leaf != nil {
			attrs = append(attrs, "not_after", leaf.NotAfter, "issuer", leaf.Issuer.CommonName)
		}
		c.m.log.Info("acme: certificate obtained", attrs...)
	}
	return nil
}

// leafFromCacheData returns the first certificate of an autocert cache
// value (a private key PEM block followed by the chain), or nil.
func leafFromCacheData(data []byte) *x509.Certificate {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil
		}
		if b.Type == "CERTIFICATE" {
			leaf, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil
			}
			return leaf
		}
	}
}
