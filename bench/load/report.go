package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// env describes the machine and the tools.
type env struct {
	date, host, cpu, loadStart                string
	nproc                                     int
	goVer, nginxVer, haproxyVer, wrkVer, kver string
}

func probeEnv(ctx context.Context) (env, error) {
	e := env{date: time.Now().UTC().Format("2006-01-02 15:04 MST"), nproc: runtime.NumCPU(), cpu: "unknown"}
	e.host, _ = os.Hostname()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	e.loadStart = loadavg()
	first := func(name string, args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if line == "" && err != nil {
			return "", fmt.Errorf("%s not runnable (bench/run.sh installs it): %w", name, err)
		}
		return line, nil
	}
	var err error
	if e.goVer, err = first("go", "env", "GOVERSION"); err != nil {
		return e, err
	}
	if e.nginxVer, err = first("nginx", "-v"); err != nil {
		return e, err
	}
	e.nginxVer = strings.TrimPrefix(e.nginxVer, "nginx version: ")
	if e.haproxyVer, err = first("haproxy", "-v"); err != nil {
		return e, err
	}
	if f := strings.Fields(e.haproxyVer); len(f) >= 3 {
		e.haproxyVer = "haproxy " + f[2]
	}
	if e.wrkVer, err = first("wrk", "-v"); err != nil {
		return e, err
	}
	if f := strings.Fields(e.wrkVer); len(f) >= 2 {
		e.wrkVer = "wrk " + f[1]
	}
	e.kver, _ = first("uname", "-r")
	return e, nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// render formats the results as markdown.
func render(e env, o options, results []result, took time.Duration) string {
	var b strings.Builder
	b.WriteString("# Load: edgegate vs nginx vs haproxy\n\n")
	if o.quick {
		b.WriteString("**QUICK trial** (1 round of 5 s per target and profile): checks the harness, not a result to quote.\n\n")
	}
	fmt.Fprintf(&b, "- date: %s; took %s; reproduce: `make bench` (`QUICK=1 make bench` for a trial)\n", e.date, took.Round(time.Second))
	fmt.Fprintf(&b, "- machine: %s, %d CPUs (%s), Linux %s; load average %s at start, %s at end\n", e.host, e.nproc, e.cpu, e.kver, e.loadStart, loadavg())
	fmt.Fprintf(&b, "- versions: edgegate built with %s, %s, %s, %s\n", e.goVer, e.nginxVer, e.haproxyVer, e.wrkVer)
	fmt.Fprintf(&b, "- method: wrk -t%d --latency, %d round(s) of %s per target, round-robin over the targets (each round starts one target later) after a %s warm-up per target; figures are medians over the rounds\n",
		o.threads, o.rounds, o.duration, o.warmup)
	b.WriteString("- pods: two fasthttp servers in a network namespace behind a veth pair, the same for every target; `direct` is wrk to the first pod\n")
	b.WriteString("- proxies: 2 workers (nginx `worker_processes 2`, haproxy `nbthread 2`, edgegate GOMAXPROCS = CPUs), upstream keep-alive, no access log, Host passed through, X-Forwarded-For/-Proto/-Host/-Port set; edgegate also counts every request in its Prometheus metrics (always on)\n")
	fmt.Fprintf(&b, "- edgegate: plain HTTP served by %s", loopsText(o.eventLoops))
	if o.binB != "" {
		fmt.Fprintf(&b, "; edgegate-b by %s", loopsText(o.eventLoopsB))
	}
	b.WriteString("\n")
	b.WriteString("- 1,000 hosts: 1,000 extra Ingresses (one host each) for edgegate, 1,000 extra server blocks for nginx, a 1,000-entry host map for haproxy; wrk rotates over the 1,000 hosts (a Lua script with pre-formatted requests, also for `direct`; the script costs wrk throughput, so compare this profile's rows with each other, not with the other profiles)\n")
	b.WriteString("- CPU: utime+stime of the proxy's processes (nginx: master and workers) per 100k requests; peak RSS: VmHWM summed over those processes, reset before each run\n")
	b.WriteString("- all of wrk, the proxy, the pods, etcd and kube-apiserver share the machine; errors are non-2xx responses plus wrk socket errors (connect, read, write, timeout after 2 s)\n\n")

	b.WriteString("| profile | target | req/s | p50 | p99 | CPU s / 100k req | peak RSS | errors | req/s vs nginx | req/s vs direct | p99 vs nginx |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		var ngx, direct *result
		for i := range results {
			if results[i].profile == r.profile {
				switch results[i].target {
				case "nginx":
					ngx = &results[i]
				case "direct":
					direct = &results[i]
				}
			}
		}
		cpu, rss := "-", "-"
		if r.cpuPer100k >= 0 {
			cpu, rss = fmt.Sprintf("%.2f", r.cpuPer100k), fmtKB(r.hwmKB)
		}
		ratio := func(a, b float64) string {
			if b == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", a/b)
		}
		vsNginx, vsDirect, p99Nginx := "-", "-", "-"
		if ngx != nil {
			vsNginx = ratio(r.rps, ngx.rps)
			p99Nginx = ratio(float64(r.p99), float64(ngx.p99))
		}
		if direct != nil {
			vsDirect = ratio(r.rps, direct.rps)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s | %s | %d | %s | %s | %s |\n",
			r.profile, r.target, r.rps, fmtDur(r.p50), fmtDur(r.p99), cpu, rss, r.errors, vsNginx, vsDirect, p99Nginx)
	}
	return b.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}

func fmtKB(kb uint64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }

// loopsText describes an http.event_loops value.
func loopsText(n int) string {
	switch {
	case n < 0:
		return "the goroutine server (`http.event_loops = -1`)"
	case n == 0:
		return "one event loop per CPU (the default `http.event_loops`)"
	}
	return fmt.Sprintf("%d event loops (`http.event_loops = %d`)", n, n)
}
