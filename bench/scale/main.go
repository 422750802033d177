// Command scale checks edgegate's scale targets through a real API server. It
// starts etcd + kube-apiserver, creates a generated cluster (by default 10,000
// Ingresses over 2,000 Services with 50,000 endpoints in EndpointSlices of at
// most 100 endpoints, as the endpointslice controller writes them) with many
// concurrent clients, and only then starts the edgegate binary. It measures
//
//   - the time from process start to the informers' sync and to /readyz 200,
//     and the first full build (edgegate_snapshot_build_seconds);
//   - the gateway's RSS (VmRSS and VmHWM from /proc) once ready and after the
//     changes;
//   - the cost of one endpoint change: the time from an EndpointSlice write to
//     the first request routed the new way (a Service whose endpoint moves
//     between two real pods in a network namespace), and the gateway's own
//     rebuild time and allocations per change (from its /metrics);
//   - the cost of one Ingress change: the time from an Ingress write that adds
//     a path to the probe Ingress to the first request for that path answered
//     by the pod, and the rebuild it causes (from its /metrics).
//
// It runs a table 1/100 of the size first (-small=false skips it), each table
// on a fresh control plane, and writes both side by side with their ratio to
// bench/results/scale.md, so that the cost of a change can be seen not to grow
// with the table. It needs root: the pods live in a network namespace, and all
// generated endpoint addresses are in that namespace's pod subnet (nothing is
// ever sent to them; only the two real pods receive requests).
//
//	go run ./bench/scale -ingresses 10000 -services 2000 -endpoints 50000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"
	"github.com/edgegate/edgegate/internal/podnet"
)

// config is the command line.
type config struct {
	full    table
	small   bool
	changes int
	// ingressChanges is the number of Ingress changes timed per table.
	ingressChanges int
	workers        int
	out            string
}

func main() {
	var cfg config
	flag.IntVar(&cfg.full.ingresses, "ingresses", 10000, "Ingresses (one host and two paths each)")
	flag.IntVar(&cfg.full.services, "services", 2000, "Services the Ingresses route to (round-robin)")
	flag.IntVar(&cfg.full.endpoints, "endpoints", 50000, "endpoints in all, spread evenly over the Services in EndpointSlices of at most 100")
	flag.IntVar(&cfg.full.namespaces, "namespaces", 10, "namespaces the Services (and their Ingresses) are spread over")
	flag.BoolVar(&cfg.small, "small", true, "first run a table 1/100 of the size, for the comparison")
	flag.IntVar(&cfg.changes, "changes", 100, "endpoint changes to time, of each kind, per table")
	flag.IntVar(&cfg.ingressChanges, "ingress-changes", 50, "Ingress changes (a new path on the probe Ingress) to time per table")
	flag.IntVar(&cfg.workers, "workers", 48, "concurrent clients creating objects")
	flag.StringVar(&cfg.out, "out", "", "markdown results file (default bench/results/scale.md)")
	flag.Parse()
	cfg.full.name = "full"
	if err := cfg.check(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

func (c config) check() error {
	if err := c.full.check(); err != nil {
		return err
	}
	if c.changes < 2 {
		return errors.New("-changes must be at least 2")
	}
	if c.ingressChanges < 1 {
		return errors.New("-ingress-changes must be at least 1")
	}
	if c.workers < 1 {
		return errors.New("-workers must be at least 1")
	}
	return nil
}

// tables are the tables to run, smallest first.
func (c config) tables() []table {
	if !c.small {
		return []table{c.full}
	}
	return []table{c.full.scaled("small", 100), c.full}
}

func run(ctx context.Context, cfg config) error {
	began := time.Now()
	if os.Geteuid() != 0 {
		return errors.New("needs root: the pods live in a network namespace (see internal/podnet)")
	}
	tables := cfg.tables()
	var est time.Duration
	for _, t := range tables {
		est += t.estimate(cfg.changes, cfg.ingressChanges)
	}
	log.Printf("scale: %d table(s), %d endpoint changes of each kind and %d Ingress changes per table (~%s in all on 2 cores)",
		len(tables), cfg.changes, cfg.ingressChanges, est.Round(10*time.Second))

	out := cfg.out
	if out == "" {
		root, err := gatewayproc.ModuleRoot(ctx)
		if err != nil {
			return err
		}
		out = filepath.Join(root, "bench", "results", "scale.md")
	}
	dir, err := os.MkdirTemp("", "edgegate-scale-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	log.Printf("building edgegate (a few seconds)")
	bin, err := gatewayproc.Build(ctx, dir)
	if err != nil {
		return err
	}
	pn, err := podnet.New(podnet.Config{})
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	defer pn.Close()
	var pods [2]*podnet.Pod
	for i, name := range []string{"a", "b"} {
		if pods[i], err = pn.NewPod(name, 8080); err != nil {
			return fmt.Errorf("pod %s: %w", name, err)
		}
	}
	log.Printf("pod network %s: pods at %s and %s, generated endpoints in %s (never contacted)",
		pn.PodCIDR(), pods[0].Addr, pods[1].Addr, pn.PodCIDR())

	env := environment{start: time.Now(), loadStart: loadAvg()}
	var results []*result
	for _, t := range tables {
		r, err := measure(ctx, cfg, t, bin, pn, pods)
		if err != nil {
			return fmt.Errorf("%s table: %w", t.name, err)
		}
		r.print(os.Stdout)
		results = append(results, r)
	}
	env.took = time.Since(began)
	env.loadEnd = loadAvg()

	report := markdown(env, cfg, results)
	fmt.Print("\n" + report)
	if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	log.Printf("wrote %s (took %s)", out, env.took.Round(time.Second))
	return nil
}

// measure runs one table on a fresh control plane.
func measure(ctx context.Context, cfg config, t table, bin string, pn *podnet.Network, pods [2]*podnet.Pod) (*result, error) {
	log.Printf("=== %s table: %s Ingresses, %s Services, %s endpoints in %s EndpointSlices, %d namespaces (~%s)",
		t.name, commas(t.ingresses), commas(t.services), commas(t.endpoints), commas(t.slices()), t.namespaces,
		t.estimate(cfg.changes, cfg.ingressChanges).Round(5*time.Second))
	r := &result{table: t, loadStart: loadAvg()}
	log.Printf("starting etcd + kube-apiserver (~5 s)")
	cp, err := controlplane.Start(ctx, controlplane.Config{})
	if err != nil {
		return nil, err
	}
	defer cp.Stop()

	g, err := newGenerator(t, pn.PodCIDR(), pods)
	if err != nil {
		return nil, err
	}
	rc := cp.RESTConfig()
	rc.QPS, rc.Burst = 5000, 10000
	if err := g.create(ctx, rc, cfg.workers, r); err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "edgegate-scale-gw-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	log.Printf("starting edgegate on the finished table; timing start -> informers synced -> ready")
	gw, pid, err := startGateway(ctx, bin, dir, cp.Kubeconfig(), r)
	if err != nil {
		return nil, err
	}
	defer func() {
		if gw != nil {
			gw.Kill()
		}
	}()
	if err := measureGateway(ctx, cfg, g, cp.Client(), gw, pid, r); err != nil {
		return nil, fmt.Errorf("%w\ngateway log tail:\n%s", err, gw.LogTail(30))
	}
	log.Printf("stopping edgegate")
	if err := gw.Stop(15 * time.Second); err != nil {
		r.exitErr = err.Error()
	}
	r.scanLog(gw.Log())
	gw = nil
	r.loadEnd = loadAvg()
	return r, nil
}
