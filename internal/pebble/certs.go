package pebble

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/edgegate/edgegate/internal/testca"
)

// credentials are the files for the ACME API's own TLS: a throw-away CA and
// a serving certificate for 127.0.0.1 and localhost signed by it.
type credentials struct {
	caFile   string
	certFile string
	keyFile  string
	pool     *x509.CertPool
}

func writeCredentials(dir string) (*credentials, error) {
	ca, err := testca.New("edgegate pebble api ca", 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	certPEM, keyPEM, err := ca.Serving("pebble", []string{"localhost", "pebble"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	c := &credentials{
		caFile:   filepath.Join(dir, "api-ca.pem"),
		certFile: filepath.Join(dir, "api-cert.pem"),
		keyFile:  filepath.Join(dir, "api-key.pem"),
		pool:     ca.Pool(),
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{c.caFile, ca.PEM}, {c.certFile, certPEM}, {c.keyFile, keyPEM}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return nil, fmt.Errorf("pebble: %w", err)
		}
	}
	return c, nil
}
