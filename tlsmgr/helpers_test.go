package tlsmgr

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/route"
)

// testCA signs test certificates so clients can verify them.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tlsmgr test ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serialCounter atomic.Int64

// issue returns a leaf for names, valid until notAfter.
func (ca *testCA) issue(t testing.TB, notAfter time.Time, names ...string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serialCounter.Add(1) + 1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// secretCert wraps a key pair as the snapshot carries it.
func secretCert(c *tls.Certificate, name string) *route.Cert {
	return &route.Cert{
		Secret:      route.SecretRef{Namespace: "ns", Name: name},
		Ingress:     route.IngressRef{Namespace: "ns", Name: "ing"},
		Certificate: c,
		NotAfter:    c.Leaf.NotAfter,
		Fingerprint: uint64(c.Leaf.SerialNumber.Int64()),
	}
}

func snapshotWith(certs map[string]*route.Cert, acmeHosts ...string) *route.Snapshot {
	s, _ := route.New(nil, nil, nil)
	s.SetTLS(certs, acmeHosts)
	return s
}

// serveTLS accepts connections on l and completes their handshakes until
// the test ends; failed handshakes go to m.HandshakeError like the proxy's.
func serveTLS(t testing.TB, m *Manager, l net.Listener) {
	t.Helper()
	serveTLSConfigErr(t, m.TLSConfig(), l, m.HandshakeError)
}

func serveTLSConfig(t testing.TB, cfg *tls.Config, l net.Listener) {
	t.Helper()
	serveTLSConfigErr(t, cfg, l, func(error) {})
}

func serveTLSConfigErr(t testing.TB, cfg *tls.Config, l net.Listener, onErr func(error)) {
	t.Helper()
	tl := tls.NewListener(l, cfg)
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
				if err := c.(*tls.Conn).Handshake(); err != nil {
					onErr(err)
					return
				}
				// Hold the connection until the client closes it.
				var b [1]byte
				_, _ = c.Read(b[:])
			}()
		}
	}()
}

func listenLoopback(t testing.TB, port int) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// dial performs a client handshake with SNI name against addr.
func dial(t testing.TB, addr string, cfg *tls.Config) (*tls.ConnectionState, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st := c.ConnectionState()
	return &st, nil
}
