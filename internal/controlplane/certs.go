package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/edgegate/edgegate/internal/testca"
)

// credentials are the files the API server needs, written once per control
// plane and reused by restarts.
type credentials struct {
	caPEM      []byte // CA certificate, trusted by clients
	certFile   string // serving certificate for 127.0.0.1
	keyFile    string
	saKeyFile  string // service-account signing key (private, PKCS#8)
	saPubFile  string // its public half
	tokenFile  string // --token-auth-file
	adminToken string
}

// writeCredentials generates a CA, a serving certificate for the loopback
// address, a service-account key and an admin token, and writes them to dir.
func writeCredentials(dir string) (*credentials, error) {
	ca, err := testca.New("edgegate-test-ca", 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	srvCertPEM, srvKeyPEM, err := ca.Serving("kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}

	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("generate token: %w", err)
	}

	c := &credentials{
		caPEM:      ca.PEM,
		certFile:   filepath.Join(dir, "apiserver.crt"),
		keyFile:    filepath.Join(dir, "apiserver.key"),
		saKeyFile:  filepath.Join(dir, "sa.key"),
		saPubFile:  filepath.Join(dir, "sa.pub"),
		tokenFile:  filepath.Join(dir, "tokens.csv"),
		adminToken: hex.EncodeToString(tok),
	}
	saKeyDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return nil, fmt.Errorf("marshal service-account key: %w", err)
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("marshal service-account public key: %w", err)
	}
	files := []struct {
		path string
		data []byte
	}{
		{filepath.Join(dir, "ca.crt"), c.caPEM},
		{c.certFile, append(srvCertPEM, c.caPEM...)},
		{c.keyFile, srvKeyPEM},
		{c.saKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saKeyDER})},
		{c.saPubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
		// token,user,uid,"group1,group2"
		{c.tokenFile, []byte(fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", c.adminToken, AdminUser, AdminUser))},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", filepath.Base(f.path), err)
		}
	}
	return c, nil
}
