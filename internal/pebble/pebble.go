package pebble

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/edgegate/edgegate/internal/childproc"
)

// Version is the Pebble release that hack/pebble.sh builds (keep in step
// with tools/pebble/go.mod and the script).
const Version = "v2.10.1"

// ErrBinariesMissing is returned by Start when pebble or pebble-challtestsrv
// is not in the bin directory.
var ErrBinariesMissing = errors.New("pebble: binaries missing (run `make pebble`)")

const (
	// defaultStartTimeout bounds Start when ctx has no deadline. A start
	// takes well under a second.
	defaultStartTimeout = 30 * time.Second
	// stopTimeout is how long a child gets between SIGTERM and SIGKILL.
	stopTimeout = 5 * time.Second
	// pollInterval is the readiness polling period.
	pollInterval = 20 * time.Millisecond
	// bindAttempts is how often a start is retried when a port picked as
	// free was taken before the child bound it.
	bindAttempts = 5
)

// Config configures Start. The zero value is ready to use.
type Config struct {
	// HTTPPort is the port on 127.0.0.1 where Pebble's validation authority
	// fetches http-01 responses (/.well-known/acme-challenge/...).
	// Default: a free loopback port, see Pebble.HTTPPort.
	HTTPPort int
	// TLSPort is the port on 127.0.0.1 where it performs tls-alpn-01
	// handshakes. Default: a free loopback port, see Pebble.TLSPort.
	TLSPort int
	// BinDir holds the pebble and pebble-challtestsrv binaries.
	// Default: DefaultBinDir().
	BinDir string
	// Logf receives a few progress lines (ports, timings).
	// Default: discard.
	Logf func(format string, args ...any)
}

// DefaultBinDir is where hack/pebble.sh puts the binaries:
// $EDGEGATE_PEBBLE_DIR, else $XDG_CACHE_HOME/edgegate/pebble-<Version>, else
// $HOME/.cache/edgegate/pebble-<Version>.
func DefaultBinDir() string { return childproc.CacheDir("EDGEGATE_PEBBLE_DIR", "pebble-"+Version) }

// CheckBinaries reports ErrBinariesMissing (wrapped, naming the file) when
// binDir lacks an executable pebble or pebble-challtestsrv.
func CheckBinaries(binDir string) error {
	return childproc.CheckExecutables(ErrBinariesMissing, binDir, "pebble", "pebble-challtestsrv")
}

// Pebble is a running Pebble and its DNS server. Its methods may be called
// concurrently.
type Pebble struct {
	cfg      Config
	dir      string
	caFile   string
	caPool   *x509.CertPool
	acmePort int
	mgmtPort int

	mu      sync.Mutex // guards the fields below
	dns     *childproc.Proc
	pebble  *childproc.Proc
	stopped bool
}

// Start starts pebble-challtestsrv and pebble and returns when the ACME
// directory answers. ctx bounds the startup only (default 30 s when it has
// no deadline); the processes run until Stop. Work files (certificates,
// config, logs) live in a temporary directory that Stop removes.
func Start(ctx context.Context, cfg Config) (*Pebble, error) {
	if cfg.BinDir == "" {
		cfg.BinDir = DefaultBinDir()
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if err := CheckBinaries(cfg.BinDir); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}
	for _, p := range []*int{&cfg.HTTPPort, &cfg.TLSPort} {
		if *p == 0 {
			port, err := childproc.FreePort()
			if err != nil {
				return nil, err
			}
			*p = port
		}
	}
	began := time.Now()
	dir, err := os.MkdirTemp("", "edgegate-pebble-")
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	p := &Pebble{cfg: cfg, dir: dir}
	ok := false
	defer func() {
		if !ok {
			_ = p.Stop()
		}
	}()
	ca, err := writeCredentials(dir)
	if err != nil {
		return nil, err
	}
	p.caFile = ca.caFile
	p.caPool = ca.pool

	for attempt := 1; ; attempt++ {
		err = p.startOnce(ctx, ca)
		if err == nil {
			break
		}
		if !errors.Is(err, childproc.ErrAddrInUse) || attempt == bindAttempts || ctx.Err() != nil {
			return nil, err
		}
		p.stopChildren()
	}
	ok = true
	cfg.Logf("pebble: ACME directory %s (http-01 port %d, tls-alpn-01 port %d) ready in %v",
		p.DirectoryURL(), cfg.HTTPPort, cfg.TLSPort, time.Since(began).Round(time.Millisecond))
	return p, nil
}

func (p *Pebble) startOnce(ctx context.Context, ca *credentials) error {
	ports := make([]int, 4)
	for i := range ports {
		port, err := childproc.FreePort()
		if err != nil {
			return err
		}
		ports[i] = port
	}
	dnsPort, dnsMgmtPort := ports[0], ports[1]
	p.acmePort, p.mgmtPort = ports[2], ports[3]

	dnsAddr := "127.0.0.1:" + strconv.Itoa(dnsPort)
	dns, err := childproc.Start("pebble-challtestsrv", filepath.Join(p.cfg.BinDir, "pebble-challtestsrv"), []string{
		"-dnsserver", dnsAddr,
		"-management", "127.0.0.1:" + strconv.Itoa(dnsMgmtPort),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
	}, childproc.Options{LogPath: filepath.Join(p.dir, "challtestsrv.log"), Dir: p.dir})
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.dns = dns
	p.mu.Unlock()
	if err := childproc.WaitReady(ctx, dns, pollInterval, func() bool { return dialOK(dnsAddr) }); err != nil {
		return err
	}

	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":           "127.0.0.1:" + strconv.Itoa(p.acmePort),
		"managementListenAddress": "127.0.0.1:" + strconv.Itoa(p.mgmtPort),
		"certificate":             ca.certFile,
		"privateKey":              ca.keyFile,
		"httpPort":                p.cfg.HTTPPort,
		"tlsPort":                 p.cfg.TLSPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{
			"default": map[string]any{"description": "edgegate tests", "validityPeriod": 90 * 24 * 3600},
		},
	}}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return fmt.Errorf("pebble: encode config: %w", err)
	}
	confFile := filepath.Join(p.dir, "pebble-config.json")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		return fmt.Errorf("pebble: %w", err)
	}
	peb, err := childproc.Start("pebble", filepath.Join(p.cfg.BinDir, "pebble"),
		[]string{"-config", confFile, "-dnsserver", dnsAddr},
		childproc.Options{
			LogPath: filepath.Join(p.dir, "pebble.log"),
			Env:     []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"},
			Dir:     p.dir,
		})
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.pebble = peb
	p.mu.Unlock()
	client := p.httpClient()
	return childproc.WaitReady(ctx, peb, pollInterval, func() bool {
		for _, u := range []string{p.DirectoryURL(), p.mgmtURL("/roots/0")} {
			resp, err := client.Get(u)
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		return true
	})
}

// HTTPPort is the loopback port Pebble validates http-01 challenges on.
func (p *Pebble) HTTPPort() int { return p.cfg.HTTPPort }

// TLSPort is the loopback port Pebble validates tls-alpn-01 challenges on.
func (p *Pebble) TLSPort() int { return p.cfg.TLSPort }

// DirectoryURL is the ACME directory (https://127.0.0.1:<port>/dir).
func (p *Pebble) DirectoryURL() string {
	return "https://127.0.0.1:" + strconv.Itoa(p.acmePort) + "/dir"
}

// CAFile is a PEM file with the CA of the ACME API's own TLS certificate,
// for ACMEConfig.CAFile. It is not the issuing root (see Roots).
func (p *Pebble) CAFile() string { return p.caFile }

// Dir is the work directory (certificates, config, logs); Stop removes it.
func (p *Pebble) Dir() string { return p.dir }

func (p *Pebble) mgmtURL(path string) string {
	return "https://127.0.0.1:" + strconv.Itoa(p.mgmtPort) + path
}

func (p *Pebble) httpClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: p.caPool, MinVersion: tls.VersionTLS12},
			Proxy:           nil, // loopback only, never through a proxy
		},
	}
}

// Roots returns the roots Pebble issues certificates from (its management
// API's /roots/0), to verify issued chains. Pebble makes a new root every
// start.
func (p *Pebble) Roots() (*x509.CertPool, error) {
	client := p.httpClient()
	defer client.CloseIdleConnections()
	resp, err := client.Get(p.mgmtURL("/roots/0"))
	if err != nil {
		return nil, fmt.Errorf("pebble: get roots: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("pebble: read roots: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pebble: get roots: %s", resp.Status)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("pebble: roots: no certificate in response")
	}
	return pool, nil
}

var ordersRe = regexp.MustCompile(`There are now (\d+) orders in the db`)

// Orders returns how many orders Pebble has created since it started (read
// from its log), so tests can tell that no order was placed.
func (p *Pebble) Orders() int {
	b, err := os.ReadFile(filepath.Join(p.dir, "pebble.log"))
	if err != nil {
		return 0
	}
	n := 0
	for _, m := range ordersRe.FindAllSubmatch(b, -1) {
		if v, err := strconv.Atoi(string(m[1])); err == nil && v > n {
			n = v
		}
	}
	return n
}

// LogTail returns the last lines of Pebble's log, for test failure messages.
func (p *Pebble) LogTail() string {
	p.mu.Lock()
	peb := p.pebble
	p.mu.Unlock()
	if peb == nil {
		return ""
	}
	return peb.LogTail()
}

// Stop stops both processes and removes the work directory. It may be
// called more than once.
func (p *Pebble) Stop() error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	p.mu.Unlock()
	err := p.stopChildren()
	if rerr := os.RemoveAll(p.dir); rerr != nil && err == nil {
		err = fmt.Errorf("pebble: %w", rerr)
	}
	return err
}

func (p *Pebble) stopChildren() error {
	p.mu.Lock()
	peb, dns := p.pebble, p.dns
	p.pebble, p.dns = nil, nil
	p.mu.Unlock()
	var errs []error
	for _, c := range []*childproc.Proc{peb, dns} {
		if c != nil {
			errs = append(errs, c.Stop(stopTimeout))
		}
	}
	return errors.Join(errs...)
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
