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
//
// For optimising, -profiles and -targets pick a subset, and -b runs a second
// edgegate binary as target "edgegate-b" in the same interleaved rounds (an
// A/B comparison on the same machine state); -env and -b-env set their
// environments (GOMAXPROCS=1 ...). -event-loops and -b-event-loops write
// http.event_loops into their configs (N loops, -1 the goroutine server, 0
// or absent the default: one loop per CPU), so -b with a binary of this
// tree and -b-event-loops -1 compares loops with goroutines. A subset run
// writes no results file unless -out is given.
//
//	go run ./bench/load -profiles small -targets nginx,edgegate -b /tmp/edgegate-old
//	go run ./bench/load -targets nginx,edgegate -event-loops 2
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
	"slices"
	"strconv"
	"strings"
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

	profiles, targets string   // comma-separated subsets; "" is all
	bin, binB         string   // prebuilt edgegate binaries; bin "" builds one
	env, envB         []string // extra environment of edgegate and edgegate-b
	eventLoops        int      // http.event_loops of edgegate
	eventLoopsB       int      // http.event_loops of edgegate-b
}

// listFlag is a comma-separated flag.Value.
type listFlag struct{ p *[]string }

func (l listFlag) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listFlag) Set(v string) error {
	*l.p = append(*l.p, strings.Split(v, ",")...)
	return nil
}

// selected reports whether name is in the comma-separated list (all when
// the list is empty).
func selected(list, name string) bool {
	return list == "" || slices.Contains(strings.Split(list, ","), name)
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", os.Getenv("QUICK") == "1", "1 round of 5 s per target and profile (default from QUICK=1)")
	flag.IntVar(&o.rounds, "rounds", 0, "rounds per profile (default 3, 1 with -quick)")
	flag.DurationVar(&o.duration, "duration", 0, "length of one wrk run (default 10s, 5s with -quick)")
	flag.DurationVar(&o.warmup, "warmup", 0, "unmeasured wrk run per target before each profile (default 2s, 1s with -quick)")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.StringVar(&o.out, "out", "", "markdown results file (default bench/results/latest.md; none for a subset run)")
	flag.StringVar(&o.profiles, "profiles", "", "profiles to run, of small,16k,hosts (default all)")
	flag.StringVar(&o.targets, "targets", "", "targets to run, of direct,nginx,haproxy,edgegate (default all)")
	flag.StringVar(&o.bin, "bin", "", "edgegate binary to run (default: build this tree)")
	flag.StringVar(&o.binB, "b", "", "second edgegate binary, run as target edgegate-b")
	flag.Var(listFlag{&o.env}, "env", "KEY=VALUE[,...] added to edgegate's environment")
	flag.Var(listFlag{&o.envB}, "b-env", "KEY=VALUE[,...] added to edgegate-b's environment")
	flag.IntVar(&o.eventLoops, "event-loops", 0, "http.event_loops of edgegate: N event loops, -1 none (goroutine per connection), 0 the default (one per CPU)")
	flag.IntVar(&o.eventLoopsB, "b-event-loops", 0, "http.event_loops of edgegate-b, as -event-loops")
	flag.Parse()
	if o.eventLoops < -1 || o.eventLoopsB < -1 {
		log.Fatalf("-event-loops %d, -b-event-loops %d: -1 (none), 0 (default) or a number of loops", o.eventLoops, o.eventLoopsB)
	}
	for _, name := range strings.Split(o.profiles, ",") {
		if name != "" && !slices.ContainsFunc(profiles, func(p profile) bool { return p.key == name }) {
			log.Fatalf("-profiles: unknown profile %q (have small, 16k, hosts)", name)
		}
	}
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
	key       string // for -profiles
	name      string
	path      string
	conns     int
	bodyLen   int
	manyHosts bool // the 1,000 extra hosts are in every table and wrk rotates over them
}

var profiles = []profile{
	{key: "small", name: "small body, 64 conns", path: "/small", conns: 64, bodyLen: len(smallBody)},
	{key: "16k", name: "16 KiB body, 256 conns", path: "/16k", conns: 256, bodyLen: len(largeBody)},
	{key: "hosts", name: "small body, 64 conns, 1,000 hosts", path: "/small", conns: 64, bodyLen: len(smallBody), manyHosts: true},
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
	subset := o.profiles != "" || o.targets != "" || o.binB != ""
	if o.out == "" && !subset {
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
	bin := o.bin
	if bin == "" {
		log.Printf("building edgegate")
		if bin, err = gatewayproc.Build(ctx, dir); err != nil {
			return err
		}
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
	gw, err := gatewayproc.Start(ctx, gatewayproc.Options{
		Bin: bin, Dir: gwDir, Kubeconfig: cp.Kubeconfig(), LogLevel: "warn", Env: o.env, EventLoops: o.eventLoops,
	})
	if err != nil {
		return err
	}
	defer gw.Stop(10 * time.Second)
	gwPID, err := pidByCmdline(gw.Config)
	if err != nil {
		return err
	}
	log.Printf("edgegate built and ready on %s (pid %d, event_loops %d) in %s", gw.HTTPAddr, gwPID, o.eventLoops, since(step))
	var gwB *gatewayproc.Gateway
	var gwBPID int
	if o.binB != "" {
		d := filepath.Join(dir, "gw-b")
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		gwB, err = gatewayproc.Start(ctx, gatewayproc.Options{Bin: o.binB, Dir: d, Kubeconfig: cp.Kubeconfig(), LogLevel: "warn", Env: o.envB, EventLoops: o.eventLoopsB})
		if err != nil {
			return err
		}
		defer gwB.Stop(10 * time.Second)
		if gwBPID, err = pidByCmdline(gwB.Config); err != nil {
			return err
		}
		log.Printf("edgegate-b (%s) ready on %s (pid %d, event_loops %d)", o.binB, gwB.HTTPAddr, gwBPID, o.eventLoopsB)
	}

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
	all := []*target{
		{name: "direct", addr: pods[0].addr},
		{name: "nginx", addr: ngx.listen, pids: ngx.pids},
		{name: "haproxy", addr: hap.listen, pids: hap.pids},
		{name: "edgegate", addr: gw.HTTPAddr, pids: func() []int { return []int{gwPID} }},
	}
	var targets []*target
	for _, t := range all {
		if selected(o.targets, t.name) {
			targets = append(targets, t)
		}
	}
	if gwB != nil {
		targets = append(targets, &target{name: "edgegate-b", addr: gwB.HTTPAddr, pids: func() []int { return []int{gwBPID} }})
	}
	log.Printf("nginx on %s, haproxy on %s; setup took %s", ngx.listen, hap.listen, since(began))

	script := filepath.Join(dir, "hosts.lua")
	if err := os.WriteFile(script, []byte(hostsLua()), 0o644); err != nil {
		return err
	}
	var results []result
	for _, p := range profiles {
		if !selected(o.profiles, p.key) {
			continue
		}
		if p.manyHosts {
			step = time.Now()
			log.Printf("adding %d Ingresses (one host each) and restarting nginx and haproxy with %d hosts", extraN, extraN+1)
			if err := k.createExtraIngresses(ctx); err != nil {
				return err
			}
			if err := waitHosts(ctx, gw.HTTPAddr, 60*time.Second); err != nil {
				return err
			}
			if gwB != nil {
				if err := waitHosts(ctx, gwB.HTTPAddr, 60*time.Second); err != nil {
					return err
				}
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
			all[1].addr, all[2].addr = ngx.listen, hap.listen
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
	if o.out == "" {
		log.Printf("subset run: no results file written (give -out to write one); total %s", since(began))
		return nil
	}
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
