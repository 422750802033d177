package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/gatewayproc"
)

// gateway is one edgegate process, with HTTPS on, admin.pprof on (to force
// collections and take heap profiles) and an http.idle_timeout that
// outlasts the run.
type gateway struct {
	*gatewayproc.Gateway
}

func startGateway(ctx context.Context, o options, kubeconfig, dir string) (*gateway, error) {
	g, err := gatewayproc.Start(ctx, gatewayproc.Options{
		Bin: o.bin, Dir: dir, Kubeconfig: kubeconfig,
		HTTPExtra:  fmt.Sprintf("idle_timeout = %q\n%s\n", o.idleTimeout.String(), o.httpExtra),
		AdminExtra: "pprof = true\n",
		LogLevel:   "warn",
		Env:        o.env,
	})
	if err != nil {
		return nil, err
	}
	return &gateway{g}, nil
}

// alive reports an error if the process has exited.
func (g *gateway) alive() error {
	select {
	case <-g.Done():
		return fmt.Errorf("edgegate exited: %v\n%s", g.Err(), g.LogTail(30))
	default:
		return nil
	}
}

func (g *gateway) stop() { _ = g.Stop(15 * time.Second) }

// nofile is the gateway's soft RLIMIT_NOFILE, from /proc/PID/limits.
func (g *gateway) nofile() (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", g.PID()))
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
	return 0, fmt.Errorf("no Max open files in /proc/%d/limits", g.PID())
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
		if err := get(c, "http://"+g.AdminAddr+"/debug/pprof/heap?gc=1", io.Discard); err != nil {
			return s, fmt.Errorf("force GC: %w", err)
		}
	}
	f, err := os.Create(profile)
	if err != nil {
		return s, err
	}
	err = get(c, "http://"+g.AdminAddr+"/debug/pprof/heap", f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return s, fmt.Errorf("heap profile: %w", err)
	}
	if s.rss, err = procRSS(g.PID()); err != nil {
		return s, err
	}
	s.slab = meminfo("Slab")
	var b strings.Builder
	if err := get(c, "http://"+g.AdminAddr+"/metrics", &b); err != nil {
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
