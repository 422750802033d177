package tlsmgr

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/edgegate/edgegate/route"
)

// benchServer serves m.TLSConfig() on loopback for a certificate from a
// Secret and returns the address and a client config trusting it.
func benchServer(b *testing.B) (string, *tls.Config) {
	b.Helper()
	ca := newTestCA(b)
	c := ca.issue(b, time.Now().Add(24*time.Hour), "bench.example.com")
	snap := snapshotWith(map[string]*route.Cert{"bench.example.com": secretCert(c, "bench")})
	m, err := New(Config{Snapshot: func() *route.Snapshot { return snap }})
	if err != nil {
		b.Fatal(err)
	}
	l := listenLoopback(b, 0)
	serveTLS(b, m, l)
	return l.Addr().String(), &tls.Config{ServerName: "bench.example.com", RootCAs: ca.pool,
		NextProtos: []string{"http/1.1"}, MaxVersion: tls.VersionTLS13}
}

// BenchmarkHandshakeFull measures full handshakes (TLS 1.3, ECDSA P-256)
// over loopback, client and server in one process.
func BenchmarkHandshakeFull(b *testing.B) {
	addr, cfg := benchServer(b)
	b.ReportAllocs()
	for b.Loop() {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkHandshakeResumed measures resumed handshakes (TLS 1.3 PSK from a
// session ticket) over loopback.
func BenchmarkHandshakeResumed(b *testing.B) {
	addr, cfg := benchServer(b)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	st, err := dialResume(b, addr, cfg) // obtain a ticket
	if err != nil {
		b.Fatal(err)
	}
	if st.DidResume {
		b.Fatal("first handshake resumed")
	}
	resumed := 0
	b.ReportAllocs()
	for b.Loop() {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if c.ConnectionState().DidResume {
			resumed++
		}
		c.Close()
	}
	b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
}
