package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/internal/childproc"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Version is the Kubernetes release that hack/controlplane.sh builds.
const Version = "v1.36.3"

// AdminUser is the user name of the admin token (group system:masters).
const AdminUser = "edgegate-admin"

// ErrBinariesMissing is returned by Start when kube-apiserver or etcd is not
// in the bin directory.
var ErrBinariesMissing = errors.New("controlplane: binaries missing (run `make controlplane`)")

const (
	// defaultStartTimeout bounds Start and StartAPIServer when ctx has no
	// deadline. Warm starts take 2-5 s; the first one on a busy 2-core
	// machine is slower.
	defaultStartTimeout = 2 * time.Minute
	// stopTimeout is how long a child gets between SIGTERM and SIGKILL.
	stopTimeout = 15 * time.Second
	// pollInterval is the readiness polling period.
	pollInterval = 50 * time.Millisecond
	// bindAttempts is how often a start is retried on a port that turned
	// out to be taken between picking and binding.
	bindAttempts = 5
)

// Config configures Start. The zero value is ready to use.
type Config struct {
	// BinDir holds the kube-apiserver and etcd binaries.
	// Default: DefaultBinDir().
	BinDir string
	// Dir is the work directory: etcd data, certificates, the kubeconfig
	// and the logs (etcd.log, kube-apiserver.log). A given Dir is kept by
	// Stop. Default: a new temporary directory that Stop removes.
	Dir string
	// Logf receives a few progress lines (ports, timings).
	// Default: discard.
	Logf func(format string, args ...any)
}

// DefaultBinDir is where hack/controlplane.sh puts the binaries:
// $EDGEGATE_CP_DIR, else $XDG_CACHE_HOME/edgegate/controlplane-<Version>,
// else $HOME/.cache/edgegate/controlplane-<Version>.
func DefaultBinDir() string { return childproc.CacheDir("EDGEGATE_CP_DIR", "controlplane-"+Version) }

// ControlPlane is a running etcd and kube-apiserver. Its methods may be
// called concurrently.
type ControlPlane struct {
	cfg        Config
	dir        string
	removeDir  bool
	creds      *credentials
	etcdURL    string
	apiPort    int
	url        string
	kubeconfig string
	restConfig *rest.Config
	client     kubernetes.Interface

	mu        sync.Mutex // guards the fields below
	etcd      *childproc.Proc
	apiserver *childproc.Proc
	stopped   bool
}

// Start starts etcd and kube-apiserver and returns when the API server is
// ready (/readyz is 200 and the default namespace exists). ctx bounds the
// startup only (default 2 minutes when it has no deadline); the processes
// run until Stop. On failure everything started is stopped again and the
// error includes the tail of the failing process's log.
func Start(ctx context.Context, cfg Config) (cp *ControlPlane, err error) {
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
	began := time.Now()

	cp = &ControlPlane{cfg: cfg, dir: cfg.Dir}
	if cp.dir == "" {
		removeStaleDirs()
		if cp.dir, err = os.MkdirTemp("", tempPrefix); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		cp.removeDir = true
		// Lets a later Start remove the directory if this process dies
		// without calling Stop.
		if err := os.WriteFile(filepath.Join(cp.dir, pidFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
	} else if err := os.MkdirAll(cp.dir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	defer func() {
		if err != nil {
			_ = cp.Stop()
		}
	}()

	if cp.creds, err = writeCredentials(cp.dir); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if err := cp.startEtcd(ctx); err != nil {
		return nil, err
	}
	cfg.Logf("controlplane: etcd ready at %s after %v", cp.etcdURL, time.Since(began).Round(time.Millisecond))

	// The API server's port is picked once and kept across restarts.
	for attempt := 1; ; attempt++ {
		if cp.apiPort, err = childproc.FreePort(); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		cp.url = "https://127.0.0.1:" + strconv.Itoa(cp.apiPort)
		err = cp.startAPIServerOnce(ctx)
		if err == nil || !errors.Is(err, childproc.ErrAddrInUse) || attempt == bindAttempts {
			break
		}
	}
	if err != nil {
		return nil, err
	}

	cp.restConfig = &rest.Config{
		Host:            cp.url,
		BearerToken:     cp.creds.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.creds.caPEM},
		QPS:             200,
		Burst:           400,
	}
	if cp.client, err = kubernetes.NewForConfig(cp.restConfig); err != nil {
		return nil, fmt.Errorf("controlplane: client: %w", err)
	}
	cp.kubeconfig = filepath.Join(cp.dir, "kubeconfig")
	if err := cp.writeKubeconfig(); err != nil {
		return nil, err
	}
	if err := cp.waitDefaultNamespace(ctx); err != nil {
		return nil, err
	}
	cfg.Logf("controlplane: kube-apiserver %s ready at %s after %v (dir %s)", Version, cp.url,
		time.Since(began).Round(time.Millisecond), cp.dir)
	return cp, nil
}

// CheckBinaries reports ErrBinariesMissing (with the directory) when binDir
// lacks kube-apiserver or etcd.
func CheckBinaries(binDir string) error {
	return childproc.CheckExecutables(ErrBinariesMissing, binDir, "kube-apiserver", "etcd")
}

// URL is the API server's base URL, https://127.0.0.1:<port>.
func (cp *ControlPlane) URL() string { return cp.url }

// EtcdURL is the client URL of the etcd behind the API server. The demo uses
// it to store objects the API server would refuse (loopback endpoints) the
// way a custom endpoint controller with etcd access could.
func (cp *ControlPlane) EtcdURL() string { return cp.etcdURL }

// Dir is the work directory (logs are etcd.log and kube-apiserver.log).
func (cp *ControlPlane) Dir() string { return cp.dir }

// Kubeconfig is the path of a kubeconfig file for the admin user.
func (cp *ControlPlane) Kubeconfig() string { return cp.kubeconfig }

// RESTConfig returns a new copy of the admin client configuration.
func (cp *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(cp.restConfig) }

// Client is a clientset for the admin user, shared by all callers.
func (cp *ControlPlane) Client() kubernetes.Interface { return cp.client }

// StopAPIServer kills kube-apiserver at once (SIGKILL: the API server is
// lost, as when its host dies or the network drops; a graceful stop would
// wait for every open watch) and leaves etcd and its data running.
func (cp *ControlPlane) StopAPIServer() error {
	cp.mu.Lock()
	p := cp.apiserver
	cp.apiserver = nil
	cp.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Kill()
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the same
// port with the same certificates and token, and waits until it is ready.
// Clients made earlier keep working once it is back.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	cp.mu.Lock()
	running, stopped := cp.apiserver != nil, cp.stopped
	cp.mu.Unlock()
	if stopped {
		return errors.New("controlplane: already stopped")
	}
	if running {
		return errors.New("controlplane: kube-apiserver is running")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}
	began := time.Now()
	for attempt := 1; ; attempt++ {
		err := cp.startAPIServerOnce(ctx)
		if err == nil {
			break
		}
		// The port is fixed now; it may still be held briefly. Retry.
		if !errors.Is(err, childproc.ErrAddrInUse) || attempt == bindAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
	cp.cfg.Logf("controlplane: kube-apiserver restarted in %v", time.Since(began).Round(time.Millisecond))
	return nil
}

// Stop stops kube-apiserver, then etcd, and removes the work directory if
// Start created it. It is safe to call more than once.
func (cp *ControlPlane) Stop() error {
	cp.mu.Lock()
	if cp.stopped {
		cp.mu.Unlock()
		return nil
	}
	cp.stopped = true
	api, etcd := cp.apiserver, cp.etcd
	cp.apiserver, cp.etcd = nil, nil
	cp.mu.Unlock()

	var errs []error
	if api != nil {
		// A test API server holds no state of its own (etcd does), and a
		// graceful stop waits for every open watch: kill it.
		errs = append(errs, api.Kill())
	}
	if etcd != nil {
		errs = append(errs, etcd.Stop(stopTimeout))
	}
	if cp.removeDir && cp.dir != "" {
		errs = append(errs, os.RemoveAll(cp.dir))
	}
	return errors.Join(errs...)
}

func (cp *ControlPlane) startEtcd(ctx context.Context) error {
	var err error
	for attempt := 1; attempt <= bindAttempts; attempt++ {
		var clientPort, peerPort int
		if clientPort, err = childproc.FreePort(); err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		if peerPort, err = childproc.FreePort(); err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
		peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
		// A failed attempt may have left a half-made member: start clean.
		dataDir := filepath.Join(cp.dir, "etcd")
		if err := os.RemoveAll(dataDir); err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		args := []string{
			"--name=edgegate",
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + clientURL,
			"--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=edgegate=" + peerURL,
			"--initial-cluster-state=new",
			"--unsafe-no-fsync",
			"--log-level=warn",
		}
		p, err := childproc.Start("etcd", filepath.Join(cp.cfg.BinDir, "etcd"), args, childproc.Options{LogPath: filepath.Join(cp.dir, "etcd.log")})
		if err != nil {
			return err
		}
		client := &http.Client{Timeout: time.Second}
		err = childproc.WaitReady(ctx, p, pollInterval, func() bool {
			resp, err := client.Get(clientURL + "/health")
			if err != nil {
				return false
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`)
		})
		client.CloseIdleConnections()
		if err == nil {
			cp.mu.Lock()
			cp.etcd, cp.etcdURL = p, clientURL
			cp.mu.Unlock()
			return nil
		}
		_ = p.Stop(stopTimeout)
		if !errors.Is(err, childproc.ErrAddrInUse) {
			return err
		}
	}
	return err
}

func (cp *ControlPlane) startAPIServerOnce(ctx context.Context) error {
	c := cp.creds
	args := []string{
		"--etcd-servers=" + cp.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(cp.apiPort),
		"--tls-cert-file=" + c.certFile,
		"--tls-private-key-file=" + c.keyFile,
		"--cert-dir=" + filepath.Join(cp.dir, "certs"),
		"--token-auth-file=" + c.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + cp.url,
		"--service-account-key-file=" + c.saPubFile,
		"--service-account-signing-key-file=" + c.saKeyFile,
		// Never used for traffic: edgegate proxies to pod IPs.
		"--service-cluster-ip-range=10.0.0.0/24",
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		// No kubernetes.default Endpoints pointing at loopback, and less
		// bootstrap work for a single test server.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	p, err := childproc.Start("kube-apiserver", filepath.Join(cp.cfg.BinDir, "kube-apiserver"), args,
		childproc.Options{LogPath: filepath.Join(cp.dir, "kube-apiserver.log")})
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer client.CloseIdleConnections()
	err = childproc.WaitReady(ctx, p, pollInterval, func() bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cp.url+"/readyz", nil)
		if err != nil {
			return false
		}
		req.Header.Set("Authorization", "Bearer "+c.adminToken)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		_ = p.Stop(stopTimeout)
		return err
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		go p.Stop(stopTimeout) //nolint:errcheck // raced with Stop
		return errors.New("controlplane: stopped while starting")
	}
	cp.apiserver = p
	return nil
}

func (cp *ControlPlane) writeKubeconfig() error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["edgegate"] = &clientcmdapi.Cluster{Server: cp.url, CertificateAuthorityData: cp.creds.caPEM}
	kc.AuthInfos[AdminUser] = &clientcmdapi.AuthInfo{Token: cp.creds.adminToken}
	kc.Contexts["edgegate"] = &clientcmdapi.Context{Cluster: "edgegate", AuthInfo: AdminUser}
	kc.CurrentContext = "edgegate"
	if err := clientcmd.WriteToFile(*kc, cp.kubeconfig); err != nil {
		return fmt.Errorf("controlplane: write kubeconfig: %w", err)
	}
	return nil
}

func (cp *ControlPlane) waitDefaultNamespace(ctx context.Context) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cp.client.CoreV1().Namespaces().Get(rctx, metav1.NamespaceDefault, metav1.GetOptions{})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			cp.mu.Lock()
			p := cp.apiserver
			cp.mu.Unlock()
			tail := ""
			if p != nil {
				tail = p.LogTail()
			}
			return fmt.Errorf("controlplane: namespace default not created: %w (last error: %v)%s", ctx.Err(), err, tail)
		case <-t.C:
		}
	}
}

// tempPrefix and pidFile mark the temporary work directories of Start.
const (
	tempPrefix = "edgegate-cp-"
	pidFile    = "owner.pid"
)

// removeStaleDirs removes temporary work directories whose owner process is
// gone (a test binary that was killed; its children died with it).
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, pidFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}
