// Command idleconn measures the memory the real edgegate binary spends per
// idle keep-alive client connection, against the target "under 8 KiB per
// idle keep-alive connection".
//
// It starts a real etcd + kube-apiserver, one pod in a network namespace
// (needs root), a Service, an EndpointSlice and an Ingress, then, for each
// mode (plain HTTP, then TLS with the gateway's self-signed default
// certificate), a fresh edgegate process:
//
//  1. warm-up: a few hundred connections each send one proxied request and
//     close, so that code paths, pools and the upstream client exist;
//  2. settle (longer than the 4 s upstream idle timeout, so the pooled
//     connections to the pod have closed), force two garbage collections
//     through the admin listener's /debug/pprof/heap?gc=1 (two, so the
//     sync.Pool victim caches are empty), then record the baseline: VmRSS
//     from /proc/PID/status and go_memstats_* from the admin /metrics;
//  3. open -conns connections and send one keep-alive request on each (it is
//     proxied to the pod: the realistic idle state is a connection that has
//     served a request), keep them all open and idle;
//  4. settle again (idle plain-HTTP connections park after 1 s, and the
//     worker goroutines they leave are stopped within 20 s), force two
//     collections, record again; per connection is
//     (after - baseline) / conns, for RSS, heap in use and goroutine stacks;
//  5. send a second request on every connection to prove none was closed
//     during the measurement, then close them.
//
// The client sockets live in this process, so the kernel's socket buffers of
// both ends are not in the gateway's RSS either (socket memory is kernel
// memory, never counted in a process's RSS): the numbers are the gateway's
// user-space cost. The gateway is started with this tool's RLIMIT_NOFILE,
// which the tool raises to fit -conns. Heap profiles taken at both points
// show where the memory goes (the diff's top entries are in the results).
//
// Run it as root from the module root (the control plane binaries come from
// `make controlplane`):
//
//	go run ./bench/idleconn -conns 10000
//
// It writes bench/results/idleconn.md (-out). To measure another build or
// setting, pass -bin (an edgegate binary built elsewhere, for example from a
// patched copy of the repo) or -http-config (extra keys for the gateway's
// [http] section, for example 'max_header_bytes = 4096'), with -out
// elsewhere. A run takes about two minutes for 10,000 connections.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"
	"github.com/edgegate/edgegate/internal/podnet"
)

// target is the per-connection budget the measurement is compared with.
const target = 8 << 10

type options struct {
	conns, parallel, warmup int
	modes                   []string
	bin, httpExtra, label   string
	env                     []string
	settle, idleTimeout     time.Duration
	out, profileDir         string
	binGiven                bool
}

func main() {
	var o options
	flag.IntVar(&o.conns, "conns", 10000, "idle keep-alive client connections to open per mode")
	flag.IntVar(&o.parallel, "parallel", 32, "connections opened concurrently")
	flag.IntVar(&o.warmup, "warmup", 256, "connections opened, used once and closed before the baseline")
	modes := flag.String("modes", "http,https", "comma-separated modes to measure: http (plain) and/or https (TLS)")
	flag.StringVar(&o.bin, "bin", "", "edgegate binary to measure (default: build this module's main package)")
	flag.StringVar(&o.httpExtra, "http-config", "", "extra TOML lines for the gateway's [http] section, e.g. 'max_header_bytes = 4096'")
	flag.StringVar(&o.label, "label", "", "what is measured, for the results file (default: the binary and config)")
	env := flag.String("env", "", "space-separated KEY=VALUE pairs added to the gateway's environment")
	flag.DurationVar(&o.settle, "settle", 25*time.Second, "wait before each measurement: above the 4s upstream idle timeout, and above the 1s after which idle plain-HTTP connections park plus twice fasthttp's 10s idle-worker timeout (its worker goroutines, freed by parking, are stopped by a sweep every 10s)")
	flag.DurationVar(&o.idleTimeout, "idle-timeout", 10*time.Minute, "the gateway's http.idle_timeout: long enough that no connection closes during the run")
	flag.StringVar(&o.out, "out", "", "markdown results file (default bench/results/idleconn.md)")
	flag.StringVar(&o.profileDir, "profiles", "", "directory to keep the heap profiles in (default: a temp dir, removed)")
	flag.Parse()
	for _, m := range strings.Split(*modes, ",") {
		switch m = strings.TrimSpace(m); m {
		case "http", "https":
			o.modes = append(o.modes, m)
		case "":
		default:
			log.Fatalf("unknown mode %q (want http or https)", m)
		}
	}
	if len(o.modes) == 0 || o.conns <= 0 || o.parallel <= 0 {
		log.Fatal("need at least one mode, -conns > 0 and -parallel > 0")
	}
	o.env = strings.Fields(*env)
	o.binGiven = o.bin != ""
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

func run(o options) error {
	ctx := context.Background()
	start := time.Now()
	if err := raiseNofile(uint64(o.conns) + 4096); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "edgegate-idleconn-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.profileDir == "" {
		o.profileDir = filepath.Join(dir, "profiles")
	}
	if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
		return err
	}
	if o.bin == "" {
		log.Printf("building edgegate")
		if o.bin, err = gatewayproc.Build(ctx, dir); err != nil {
			return err
		}
	} else if o.bin, err = filepath.Abs(o.bin); err != nil {
		return err
	}

	log.Printf("starting etcd + kube-apiserver (a few seconds)")
	cp, err := controlplane.Start(ctx, controlplane.Config{})
	if err != nil {
		return err
	}
	defer cp.Stop()
	pn, err := podnet.New(podnet.Config{})
	if err != nil {
		return fmt.Errorf("pod network (needs root): %w", err)
	}
	defer pn.Close()
	p, err := startPod(pn)
	if err != nil {
		return err
	}
	if err := createObjects(ctx, cp.Client(), p); err != nil {
		return err
	}
	log.Printf("control plane, pod and Ingress ready in %s", time.Since(start).Round(time.Millisecond))

	var results []result
	for _, mode := range o.modes {
		r, err := measure(ctx, o, mode, cp.Kubeconfig(), dir, p)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		results = append(results, r)
	}

	md := report(o, results)
	fmt.Print(md)
	out := o.out
	if out == "" {
		root, err := gatewayproc.ModuleRoot(ctx)
		if err != nil {
			return err
		}
		out = filepath.Join(root, "bench", "results", "idleconn.md")
	}
	if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
		return err
	}
	log.Printf("wrote %s (total %s)", out, time.Since(start).Round(time.Second))
	return nil
}

// raiseNofile raises RLIMIT_NOFILE (soft and, as root, hard) to at least n.
// Calling syscall.Setrlimit also stops the Go runtime from restoring the
// original soft limit in child processes, so the gateway inherits it.
func raiseNofile(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Max < n {
		lim.Max = n
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d (run as root or lower -conns): %w", n, err)
	}
	log.Printf("RLIMIT_NOFILE %d (inherited by the gateway)", lim.Cur)
	return nil
}

// machine describes the host for the results file.
func machine() string {
	host, _ := os.Hostname()
	kernel := "?"
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		kernel = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%s, %d cores (%s/%s, Linux %s), %s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, kernel, runtime.Version())
}
