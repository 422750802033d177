// Command load compares edgegate's throughput, latency, CPU and memory with
// nginx and haproxy proxying to the same two pods, and with wrk talking to a
// pod directly. It starts a real etcd + kube-apiserver, two backend pods in a
// network namespace (needs root: the host routes to the pods exactly as an
// edge VM routes to a pod CIDR, and nginx and haproxy reach them the same
// way), the edgegate binary watching the API server, and nginx and haproxy
// from bench/nginx.conf.tmpl and bench/haproxy.cfg.tmpl on free loopback
// ports.
//
// Profiles: a small body at 64 connections, a 16 KiB body at 256
// connections, and a small body with 1,000 extra hosts in every proxy's table
// (1,000 Ingresses for edgegate, 1,000 server blocks for nginx, a 1,000-entry
// host map for haproxy) with wrk rotating over those hosts. Runs are
// interleaved round-robin over the targets; each figure is the median over
// the rounds. It prints a table and writes bench/results/latest.md.
//
//	go run ./bench/load            # 3 rounds of 10 s per target and profile (~7 min)
//	go run ./bench/load -quick     # 1 round of 5 s (~1.5 min)
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"
	"github.com/edgegate/edgegate/internal/podnet"
)

// options are the command's flags.
type options struct {
	quick    bool
	rounds   int
	duration time.Duration
	warmup   time.Duration
	threads  int
	out      string
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", os.Getenv("QUICK") == "1", "1 round of 5 s per target and profile (default from QUICK=1)")
	flag.IntVar(&o.rounds, "rounds", 0, "rounds per profile (default 3, 1 with -quick)")
	flag.DurationVar(&o.duration, "duration", 0, "length of one wrk run (default 10s, 5s with -quick)")
	flag.DurationVar(&o.warmup, "warmup", 0, "unmeasured wrk run per target before each profile (default 2s, 1s with -quick)")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.StringVar(&o.out, "out", "", "markdown results file (default bench/results/latest.md)")
	flag.Parse()
	if o.rounds == 0 {
		o.rounds = 3
		if o.quick {
			o.rounds = 1
		}
	}
	if o.warmup == 0 {
		o.warmup = 2 * time.Second
		if o.quick {
			o.warmup = time.Second
		}
	}
	if o.duration == 0 {
		o.duration = 10 * time.Second
		if o.quick {
			o.duration = 5 * time.Second
		}
	}
	log.SetFlags(log.Ltime)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	interrupted := ctx.Err() != nil
	stop()
	if interrupted {
		log.Printf("interrupted (%v); everything started was stopped", err)
		os.Exit(130)
	}
	if err != nil {
		log.Printf("bench/load: %v", err)
		os.Exit(1)
	}
}

// Bodies the pods answer; the same for every target.
var (
	smallBody = []byte("hello from an edgegate bench pod\n")
	largeBody = bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB
)

// profile is one load shape.
type profile struct {
	name      string
	path      string
	conns     int
	bodyLen   int
	manyHosts bool // the 1,000 extra hosts are in every table and wrk rotates over them
}

var profiles = []profile{
	{name: "small body, 64 conns", path: "/small", conns: 64, bodyLen: len(smallBody)},
	{name: "16 KiB body, 256 conns", path: "/16k", conns: 256, bodyLen: len(largeBody)},
	{name: "small body, 64 conns, 1,000 hosts", path: "/small", conns: 64, bodyLen: len(smallBody), manyHosts: true},
}

const (
	benchNS   = "bench"
	benchHost = "bench.test"
	extraN    = 1000
)

func extraHost(i int) string { return fmt.Sprintf("h%04d.bench.test", i) }

func run(ctx context.Context, o options) error {
	began := time.Now()
	if os.Geteuid() != 0 {
		return errors.New("needs root: the pods live in a network namespace joined to the host by a veth pair " +
			"(run as root, as CI does)")
	}
	root, err := gatewayproc.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	if o.out == "" {
		o.out = filepath.Join(root, "bench", "results", "latest.md")
	}
	env, err := probeEnv(ctx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "edgegate-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil { // nginx workers run as nobody
		return err
	}

	step := time.Now()
	log.Printf("starting etcd + kube-apiserver")
	cp, err := controlplane.Start(ctx, controlplane.Config{})
	if err != nil {
		return err
	}
	defer cp.Stop()
	pn, err := podnet.New(podnet.Config{})
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	defer pn.Close()
	pods := make([]*pod, 2)
	for i := range pods {
		if pods[i], err = startPod(pn); err != nil {
			return err
		}
		defer pods[i].srv.Shutdown()
	}
	log.Printf("control plane and pods %s, %s up in %s", pods[0].addr, pods[1].addr, since(step))

	step = time.Now()
	log.Printf("building edgegate")
	bin, err := gatewayproc.Build(ctx, dir)
	if err != nil {
		return err
	}
	k, err := newKube(cp)
	if err != nil {
		return err
	}
	if err := k.createBase(ctx, pods); err != nil {
		return err
	}
	gwDir := filepath.Join(dir, "gw")
	if err := os.Mkdir(gwDir, 0o755); err != nil {
		return err
	}
	// Access log: off (the default, which gatewayproc does not change).
	// Metrics and X-Forwarded-* headers are always on.
	gw, err := gatewayproc.Start(ctx, gatewayproc.Options{Bin: bin, Dir: gwDir, Kubeconfig: cp.Kubeconfig(), LogLevel: "warn"})
	if err != nil {
		return err
	}
	defer gw.Stop(10 * time.Second)
	gwPID, err := pidByCmdline(gw.Config)
	if err != nil {
		return err
	}
	log.Printf("edgegate built and ready on %s (pid %d) in %s", gw.HTTPAddr, gwPID, since(step))

	podAddrs := []string{pods[0].addr, pods[1].addr}
	hosts := []string{benchHost}
	ngx := &server{kind: "nginx", dir: filepath.Join(dir, "nginx"), tmpl: filepath.Join(root, "bench", "nginx.conf.tmpl")}
	hap := &server{kind: "haproxy", dir: filepath.Join(dir, "haproxy"), tmpl: filepath.Join(root, "bench", "haproxy.cfg.tmpl")}
	for _, s := range []*server{ngx, hap} {
		defer s.stop()
		if err := s.start(ctx, podAddrs, hosts); err != nil {
			return err
		}
	}
	targets := []*target{
		{name: "direct", addr: pods[0].addr},
		{name: "nginx", addr: ngx.listen, pids: ngx.pids},
		{name: "haproxy", addr: hap.listen, pids: hap.pids},
		{name: "edgegate", addr: gw.HTTPAddr, pids: func() []int { return []int{gwPID} }},
	}
	log.Printf("nginx on %s, haproxy on %s; setup took %s", ngx.listen, hap.listen, since(began))

	script := filepath.Join(dir, "hosts.lua")
	if err := os.WriteFile(script, []byte(hostsLua()), 0o644); err != nil {
		return err
	}
	var results []result
	for _, p := range profiles {
		if p.manyHosts {
			step = time.Now()
			log.Printf("adding %d Ingresses (one host each) and restarting nginx and haproxy with %d hosts", extraN, extraN+1)
			if err := k.createExtraIngresses(ctx); err != nil {
				return err
			}
			if err := waitHosts(ctx, gw.HTTPAddr, 60*time.Second); err != nil {
				return err
			}
			log.Printf("edgegate routes all %d hosts %s after the first write", extraN+1, since(step))
			for i := range extraN {
				hosts = append(hosts, extraHost(i))
			}
			for _, s := range []*server{ngx, hap} {
				s.stop()
				if err := s.start(ctx, podAddrs, hosts); err != nil {
					return err
				}
			}
			targets[1].addr, targets[2].addr = ngx.listen, hap.listen
		}
		if err := verify(ctx, targets, p); err != nil {
			return err
		}
		runs, err := measure(ctx, o, p, targets, script, pods)
		if err != nil {
			return err
		}
		results = append(results, summarize(p, targets, runs)...)
	}

	report := render(env, o, results, since(began))
	fmt.Print("\n" + report)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
		return err
	}
	log.Printf("wrote %s; total %s", o.out, since(began))
	return nil
}

// pod is a backend: a fasthttp server on its own IP in the pod network
// namespace, answering /small and /16k (anything else: the small body).
type pod struct {
	addr     string
	srv      *fasthttp.Server
	requests atomic.Int64
}

func startPod(pn *podnet.Network) (*pod, error) {
	ip := pn.AllocIP()
	ln, err := pn.Listen("tcp", net.JoinHostPort(ip.String(), "8080"))
	if err != nil {
		return nil, err
	}
	p := &pod{addr: ln.Addr().String()}
	p.srv = &fasthttp.Server{
		Name: "bench-pod",
		Handler: func(c *fasthttp.RequestCtx) {
			p.requests.Add(1)
			c.SetContentType("text/plain")
			if string(c.Path()) == "/16k" {
				c.SetBody(largeBody)
				return
			}
			c.SetBody(smallBody)
		},
	}
	go p.srv.Serve(ln)
	return p, nil
}

// hostsLua is a wrk script that sends each request to the next of the 1,000
// extra hosts (requests are formatted once, in init, so the script costs
// wrk almost nothing per request).
func hostsLua() string {
	return `local reqs, i = {}, 0
function init(args)
  for n = 0, ` + strconv.Itoa(extraN-1) + ` do
    reqs[#reqs + 1] = wrk.format(nil, nil, { Host = string.format("h%04d.bench.test", n) })
  end
  i = math.random(#reqs) - 1
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
`
}

func since(t time.Time) time.Duration { return time.Since(t).Round(10 * time.Millisecond) }
