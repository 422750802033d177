package pebble

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"
)

func TestCheckBinariesMissing(t *testing.T) {
	t.Parallel()
	if err := CheckBinaries(t.TempDir()); !errors.Is(err, ErrBinariesMissing) {
		t.Fatalf("CheckBinaries(empty dir) = %v, want ErrBinariesMissing", err)
	}
}

func TestStart(t *testing.T) {
	t.Parallel()
	p := ForTest(t)
	if p.HTTPPort() == 0 || p.TLSPort() == 0 || p.HTTPPort() == p.TLSPort() {
		t.Fatalf("ports: http %d tls %d", p.HTTPPort(), p.TLSPort())
	}
	// The directory is served over TLS from the CA in CAFile.
	pool, err := loadPool(p.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	resp, err := c.Get(p.DirectoryURL())
	if err != nil {
		t.Fatalf("get directory: %v", err)
	}
	defer resp.Body.Close()
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		t.Fatalf("decode directory: %v", err)
	}
	for _, k := range []string{"newAccount", "newNonce", "newOrder"} {
		if _, ok := dir[k]; !ok {
			t.Errorf("directory lacks %q: %v", k, dir)
		}
	}
	if _, err := p.Roots(); err != nil {
		t.Errorf("Roots: %v", err)
	}
	if n := p.Orders(); n != 0 {
		t.Errorf("Orders() = %d on a fresh Pebble", n)
	}
	d := p.Dir()
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(d); !os.IsNotExist(err) {
		t.Errorf("work dir %s still exists after Stop: %v", d, err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}
