// Package gatewayproc builds the edgegate binary and runs it as a real child
// process with a generated config, for end-to-end tests, benchmarks and the
// demo. Tests drive the gateway only through its config, its ports and the API
// server, the way an operator would.
package gatewayproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/internal/childproc"
)

// Build compiles the edgegate binary from the module containing this package
// into dir and returns its path. flags go to go build (for example -race).
func Build(ctx context.Context, dir string, flags ...string) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "edgegate")
	args := append([]string{"build", "-o", bin}, flags...)
	cmd := exec.CommandContext(ctx, "go", append(args, ".")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build edgegate: %w\n%s", err, out)
	}
	return bin, nil
}

// ModuleRoot is the directory of edgegate's go.mod.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the edgegate module")
	}
	return filepath.Dir(mod), nil
}

// Options describes one gateway process.
type Options struct {
	// Bin is the edgegate binary (see Build).
	Bin string
	// Dir holds the generated config and the log; default a temp dir.
	Dir string
	// Kubeconfig is the admin kubeconfig of the API server to watch.
	Kubeconfig string
	// HTTPListen, HTTPSListen and AdminListen default to free 127.0.0.1
	// ports (never :443).
	HTTPListen, HTTPSListen, AdminListen string
	// NoHTTPS writes https.listen = "" (HTTPS off) instead.
	NoHTTPS bool
	// HTTPSExtra is appended inside the [https] section (default_cert,
	// redirect ...). [acme] keys go in Extra as a section of their own.
	HTTPSExtra string
	// Extra is appended verbatim to the generated TOML (more sections or
	// keys for sections the generator does not write).
	Extra string
	// KubernetesExtra, HTTPExtra and AdminExtra are appended inside the
	// [kubernetes], [http] and [admin] sections.
	KubernetesExtra, HTTPExtra, AdminExtra string
	// EventLoops, when not 0, writes http.event_loops (the plain-HTTP
	// listener on that many event loops; -1: none); 0 leaves the key out
	// (the default: one loop per CPU).
	EventLoops int
	// LogLevel is the [log] level; default "debug".
	LogLevel string
	// Stdout, if set, also receives the gateway's log output.
	Stdout io.Writer
	// NoWait skips waiting for /readyz.
	NoWait bool
	// Env is added to the gateway's environment (GOMAXPROCS=1, GOGC=200 ...).
	Env []string
}

// Gateway is a running edgegate process.
type Gateway struct {
	HTTPAddr  string // host:port of the HTTP listener
	HTTPSAddr string // host:port of the HTTPS listener; "" with NoHTTPS
	AdminAddr string // host:port of the admin listener
	Config    string // path of the config file

	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error
}

// Start writes a config file and starts edgegate with it. Unless NoWait is
// set it returns once /readyz answers 200, or fails with the log's tail.
func Start(ctx context.Context, o Options) (*Gateway, error) {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "edgegate-gw-")
		if err != nil {
			return nil, err
		}
		o.Dir = d
	}
	if o.LogLevel == "" {
		o.LogLevel = "debug"
	}
	if o.HTTPListen == "" {
		o.HTTPListen = FreeAddr()
	}
	if o.AdminListen == "" {
		o.AdminListen = FreeAddr()
	}
	switch {
	case o.NoHTTPS:
		o.HTTPSListen = ""
	case o.HTTPSListen == "":
		o.HTTPSListen = FreeAddr()
	}
	httpKeys := o.HTTPExtra
	if o.EventLoops != 0 {
		httpKeys = fmt.Sprintf("event_loops = %d\n%s", o.EventLoops, httpKeys)
	}
	cfg := fmt.Sprintf(`[kubernetes]
kubeconfig = %q
%s
[http]
listen = %q
shutdown_timeout = "10s"
%s
[https]
listen = %q
%s
[admin]
listen = %q
%s
[log]
level = %q
%s`, o.Kubeconfig, o.KubernetesExtra, o.HTTPListen, httpKeys, o.HTTPSListen, o.HTTPSExtra, o.AdminListen, o.AdminExtra, o.LogLevel, o.Extra)
	path := filepath.Join(o.Dir, "gateway.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	g := &Gateway{HTTPAddr: o.HTTPListen, HTTPSAddr: o.HTTPSListen, AdminAddr: o.AdminListen, Config: path, log: &syncBuffer{}, done: make(chan struct{})}
	g.cmd = exec.Command(o.Bin, "-config", path)
	var out io.Writer = g.log
	if o.Stdout != nil {
		out = io.MultiWriter(g.log, o.Stdout)
	}
	g.cmd.Stdout, g.cmd.Stderr = out, out
	if len(o.Env) > 0 {
		g.cmd.Env = append(os.Environ(), o.Env...)
	}
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start edgegate: %w", err)
	}
	go func() { g.err = g.cmd.Wait(); close(g.done) }()
	if o.NoWait {
		return g, nil
	}
	if err := g.WaitReady(ctx, 60*time.Second); err != nil {
		g.Kill()
		return nil, err
	}
	return g, nil
}

// WaitReady polls /readyz until it answers 200.
func (g *Gateway) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-g.done:
			return fmt.Errorf("edgegate exited before ready: %v\n%s", g.err, g.LogTail(40))
		default:
		}
		resp, err := c.Get("http://" + g.AdminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("edgegate not ready after %s\n%s", timeout, g.LogTail(40))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits for the process; it returns the exit error
// (nil for exit code 0).
func (g *Gateway) Stop(timeout time.Duration) error {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
		return g.err
	case <-time.After(timeout):
		g.Kill()
		return fmt.Errorf("edgegate did not stop within %s", timeout)
	}
}

// PID is the process id of the gateway (for /proc/PID, RSS and the like).
func (g *Gateway) PID() int { return g.cmd.Process.Pid }

// Signal sends sig to the process.
func (g *Gateway) Signal(sig os.Signal) error { return g.cmd.Process.Signal(sig) }

// Done is closed when the process has exited; Err is then its exit error.
func (g *Gateway) Done() <-chan struct{} { return g.done }

// Err is the process's exit error once Done is closed.
func (g *Gateway) Err() error { return g.err }

// Kill stops the process at once.
func (g *Gateway) Kill() {
	_ = g.cmd.Process.Kill()
	<-g.done
}

// Log is everything the process printed so far.
func (g *Gateway) Log() string { return g.log.String() }

// LogTail is the last n lines the process printed.
func (g *Gateway) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(g.log.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func FreeAddr() string {
	port, err := childproc.FreePort()
	if err != nil {
		panic(fmt.Sprintf("gatewayproc: no free port: %v", err))
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
