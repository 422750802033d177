package main

import (
	"fmt"
	"strings"
	"time"
)

var modeName = map[string]string{
	"http":  "plain HTTP",
	"https": "TLS (TLS 1.3, ECDSA P-256 self-signed)",
}

func report(o options, rs []result) string {
	var b strings.Builder
	b.WriteString("# Memory per idle keep-alive client connection\n\n")
	fmt.Fprintf(&b, "%s, %s. Reproduce: `make bench-idleconn` (`go run ./bench/idleconn -conns %d`).\n\n",
		time.Now().UTC().Format("2006-01-02"), machine(), o.conns)
	label := o.label
	if label == "" {
		label = "edgegate built from this tree"
		if o.binGiven {
			label = "edgegate binary " + o.bin
		}
		if o.httpExtra != "" {
			label += ", [http] " + strings.ReplaceAll(strings.TrimSpace(o.httpExtra), "\n", "; ")
		}
		if len(o.env) > 0 {
			label += ", env " + strings.Join(o.env, " ")
		}
	}
	fmt.Fprintf(&b, "Measured: %s (default settings otherwise: http.max_header_bytes 16384, GOGC 100).\n\n", label)
	b.WriteString("**Target: under 8 KiB per idle keep-alive client connection.**\n\n")
	b.WriteString("| connection | idle conns | RSS / conn | heap + stacks / conn | heap in use / conn | goroutine stacks / conn | goroutines / conn | freed, not yet returned / conn | RSS delta | target |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rs {
		n := float64(r.conns)
		rss := float64(r.after.rss-r.base.rss) / n
		heap := (r.after.m["go_memstats_heap_inuse_bytes"] - r.base.m["go_memstats_heap_inuse_bytes"]) / n
		stack := (r.after.m["go_memstats_stack_inuse_bytes"] - r.base.m["go_memstats_stack_inuse_bytes"]) / n
		gor := (r.after.m["go_goroutines"] - r.base.m["go_goroutines"]) / n
		// Heap the runtime has freed but not yet given back to the
		// kernel (it scavenges gradually): resident, yet not in use.
		kept := func(m map[string]float64) float64 {
			return m["go_memstats_heap_idle_bytes"] - m["go_memstats_heap_released_bytes"]
		}
		retained := (kept(r.after.m) - kept(r.base.m)) / n
		verdict := "met"
		if worst := max(rss, heap+stack); worst >= target {
			verdict = fmt.Sprintf("missed (%.1fx)", worst/target)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %.2f | %s | %.0f MiB | %s |\n", modeName[r.mode], r.conns,
			perConn(rss), perConn(heap+stack), perConn(heap), perConn(stack), gor, perConn(retained), rss*n/(1<<20), verdict)
	}
	b.WriteString("\nEach column is (with the idle connections - baseline) / connections. RSS is VmRSS of the gateway process " +
		"(/proc/PID/status); heap and stacks are `go_memstats_heap_inuse_bytes` and `go_memstats_stack_inuse_bytes` from its " +
		"admin /metrics. The target counts as met only if both RSS and heap + stacks are under it: RSS counts only the pages " +
		"a process has touched, so in a fresh process a buffer that only ever held a small request is partly not resident " +
		"(RSS below heap + stacks), while buffers reused after larger requests are resident in full; and RSS also holds freed " +
		"heap the runtime keeps for the next GC cycle (TLS handshakes leave much of it), so it can be above heap + stacks too. " +
		"\"Freed, not yet returned\" is `go_memstats_heap_idle_bytes - go_memstats_heap_released_bytes`: heap the runtime freed " +
		"(after the burst of connections each served its request) and still holds resident, returning it to the kernel gradually.\n\n")
	for _, r := range rs {
		if r.base.slab > 0 && r.after.slab > 0 {
			fmt.Fprintf(&b, "Kernel slab memory (machine-wide /proc/meminfo Slab, both ends of each loopback connection, other load included, so rough), "+
				"%s: %s per socket, not part of the gateway's RSS.\n", modeName[r.mode], perConn(float64(r.after.slab-r.base.slab)/float64(2*r.conns)))
		}
	}
	b.WriteString("\n")

	b.WriteString("## Method\n\n")
	fmt.Fprintf(&b, "- Real etcd + kube-apiserver, one pod (an HTTP server in a network namespace), a Service, an EndpointSlice and an Ingress; "+
		"for each kind of connection a fresh edgegate process (HTTPS on with its self-signed default certificate, http.idle_timeout %s so that no "+
		"connection closes during the run, admin.pprof on to force collections; everything else default). Its RLIMIT_NOFILE is inherited from the tool.\n", o.idleTimeout)
	fmt.Fprintf(&b, "- Warm-up: %d connections send one request and close. Settle %s (past the 4 s upstream idle timeout and fasthttp's 10 s idle-worker "+
		"timeout), two forced collections (`/debug/pprof/heap?gc=1`; two so sync.Pool victim caches are empty too), baseline.\n", o.warmup, o.settle)
	fmt.Fprintf(&b, "- Then %d connections are opened (%d at a time); each sends one keep-alive GET, proxied to the pod, and reads the whole response: "+
		"the realistic idle state is a connection that has served a request. They stay open; settle %s, two forced collections, measure.\n", o.conns, o.parallel, o.settle)
	b.WriteString("- Afterwards every connection sends a second request, which all answered: none had been closed.\n")
	b.WriteString("- Not included: kernel memory. The client sockets are in the tool's process, and a socket (its buffers, inode, file, " +
		"epoll entry) is kernel memory, never part of a process's RSS; the slab line above gives a rough idea of it.\n\n")
	b.WriteString("| connection | open + first request | gateway->pod conns open at measurement | verified after | oldest idle at verification |\n|---|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %s | %d | %d/%d | %s |\n", modeName[r.mode], r.openTime.Round(time.Millisecond), r.upstreamOpen, r.verified, r.conns, r.oldestIdle.Round(time.Second))
	}
	b.WriteString("\n## Where the memory goes\n\nHeap profile difference (inuse_space, after - baseline, sampled) by allocating function, " +
		"`go tool pprof -top -base`. Goroutine stacks are not in the heap profile; see the stacks column above.\n")
	for _, r := range rs {
		if r.top == "" {
			continue
		}
		fmt.Fprintf(&b, "\n%s, %d connections:\n\n```\n%s\n```\n", modeName[r.mode], r.conns, r.top)
	}
	return b.String()
}

// perConn formats bytes per connection.
func perConn(b float64) string {
	if b >= 1024 || b <= -1024 {
		return fmt.Sprintf("%.1f KiB", b/1024)
	}
	return fmt.Sprintf("%.0f B", b)
}
