package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/internal/gatewayproc"
)

// gateway is one edgegate process. The tool writes the config itself rather
// than through gatewayproc.Start: that generator writes the [http] and
// [admin] sections, so neither http.idle_timeout (which must outlast the
// run), http.max_header_bytes (for -http-config) nor admin.pprof (to force
// a collection and take heap profiles) could be set through its Extra.
type gateway struct {
	httpAddr, httpsAddr, adminAddr string
	logPath                        string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startGateway(ctx context.Context, o options, kubeconfig, dir string) (*gateway, error) {
	g := &gateway{
		httpAddr: gatewayproc.FreeAddr(), httpsAddr: gatewayproc.FreeAddr(), adminAddr: gatewayproc.FreeAddr(),
		logPath: filepath.Join(dir, "gateway.log"), done: make(chan struct{}),
	}
	cfg := fmt.Sprintf(`[kubernetes]
kubeconfig = %q

[http]
listen = %q
idle_timeout = %q
shutdown_timeout = "5s"
%s

[https]
listen = %q

[admin]
listen = %q
pprof = true

[log]
level = "warn"
`, kubeconfig, g.httpAddr, o.idleTimeout.String(), o.httpExtra, g.httpsAddr, g.adminAddr)
	path := filepath.Join(dir, "gateway.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(g.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	g.cmd = exec.Command(o.bin, "-config", path)
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if len(o.env) > 0 {
		g.cmd.Env = append(os.Environ(), o.env...)
	}
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start edgegate: %w", err)
	}
	go func() { g.err = g.cmd.Wait(); close(g.done) }()
	if err := g.waitReady(ctx, 60*time.Second); err != nil {
		g.stop()
		return nil, err
	}
	return g, nil
}

func (g *gateway) pid() int { return g.cmd.Process.Pid }

func (g *gateway) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-g.done:
			return fmt.Errorf("edgegate exited before ready: %v\n%s", g.err, g.logTail())
		default:
		}
		if resp, err := c.Get("http://" + g.adminAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("edgegate not ready after %s\n%s", timeout, g.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// alive reports an error if the process has exited.
func (g *gateway) alive() error {
	select {
	case <-g.done:
		return fmt.Errorf("edgegate exited: %v\n%s", g.err, g.logTail())
	default:
		return nil
	}
}

func (g *gateway) stop() {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
}

func (g *gateway) logTail() string {
	b, _ := os.ReadFile(g.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// nofile is the gateway's soft RLIMIT_NOFILE, from /proc/PID/limits.
func (g *gateway) nofile() (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", g.pid()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return strconv.ParseUint(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no Max open files in /proc/%d/limits", g.pid())
}

// sample is the gateway's memory at one point.
type sample struct {
	rss  int64   // /proc/PID/status VmRSS (bytes)
	slab int64   // /proc/meminfo Slab (bytes, machine-wide kernel objects)
	m    metrics // admin /metrics
}

type metrics map[string]float64

// gcAndSample forces two garbage collections (the heap profile handler's
// gc=1; two so sync.Pool's victim cache is dropped too), saves a heap
// profile to profile, then reads the process's RSS and metrics.
func (g *gateway) gcAndSample(profile string) (sample, error) {
	var s sample
	c := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < 2; i++ {
		if err := get(c, "http://"+g.adminAddr+"/debug/pprof/heap?gc=1", io.Discard); err != nil {
			return s, fmt.Errorf("force GC: %w", err)
		}
	}
	f, err := os.Create(profile)
	if err != nil {
		return s, err
	}
	err = get(c, "http://"+g.adminAddr+"/debug/pprof/heap", f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return s, fmt.Errorf("heap profile: %w", err)
	}
	if s.rss, err = procRSS(g.pid()); err != nil {
		return s, err
	}
	s.slab = meminfo("Slab")
	var b strings.Builder
	if err := get(c, "http://"+g.adminAddr+"/metrics", &b); err != nil {
		return s, fmt.Errorf("metrics: %w", err)
	}
	s.m = parseMetrics(b.String())
	return s, nil
}

func get(c *http.Client, url string, w io.Writer) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// procRSS reads VmRSS (bytes) from /proc/PID/status.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseInt(f[0], 10, 64)
				return n << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// meminfo returns a /proc/meminfo field in bytes, 0 if unavailable.
func meminfo(field string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == field {
			if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// parseMetrics reads the unlabelled samples of a Prometheus text exposition.
func parseMetrics(text string) metrics {
	m := metrics{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m[name] = v
		}
	}
	return m
}
