package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/controlplane"
)

// Targets of the scale issue.
const (
	targetReady  = 10 * time.Second     // informers synced -> ready
	targetRSS    = 300_000_000          // bytes
	targetChange = 5 * time.Millisecond // one endpoint change applied
	// targetPropagation is the performance issue's "propagation p99
	// under 50 ms for endpoint and Ingress changes" (write -> routed).
	targetPropagation = 50 * time.Millisecond
)

// phaseTime is the creation of one kind of object.
type phaseTime struct {
	what string
	n    int
	took time.Duration
}

// result is everything measured on one table.
type result struct {
	table
	loadStart, loadEnd string

	phases []phaseTime
	create time.Duration

	toSynced   time.Duration // 0: never seen between start and ready
	toReady    time.Duration
	firstBuild time.Duration

	memReady, memAfter, memAfterRoutes memory
	memEndpoints                       memory // after the endpoint changes, before the Ingress changes
	heapReady, heapAfter               float64

	routed     []time.Duration // write -> routed, in order
	buildProbe histogram       // rebuilds during the probed changes
	buildQuiet histogram       // rebuilds during the quiet changes
	epBuilds   int
	fullBuilds int

	ingRouted     []time.Duration // Ingress change write -> routed, in order
	ingBefore     map[int]int     // status of the new path before its change -> count
	ingBuild      histogram       // rebuilds during the Ingress changes
	ingFullBuilds int
	ingEpBuilds   int
	ingIncBuilds  int

	allocs, allocBytes float64       // per quiet change
	cpu                time.Duration // gateway CPU time per quiet change

	routesTime                                   time.Duration
	routesBytes                                  int
	routesHosts, routesBackends, routesEndpoints int

	exitErr  string
	logLines int
	problems []string // warnings and errors in the gateway's log
	nProblem int
}

// syncedToReady is the time from the informers' sync to /readyz 200: as
// polled when the poll saw the state in between, else the first build.
func (r *result) syncedToReady() time.Duration {
	if r.toSynced > 0 {
		return r.toReady - r.toSynced
	}
	return r.firstBuild
}

// startToSynced is the time from the process start to the informers' sync.
func (r *result) startToSynced() time.Duration { return r.toReady - r.syncedToReady() }

func (r *result) sorted() []time.Duration {
	d := slices.Clone(r.routed)
	slices.Sort(d)
	return d
}

func (r *result) sortedIngress() []time.Duration {
	d := slices.Clone(r.ingRouted)
	slices.Sort(d)
	return d
}

// ingBeforeNote is what the new paths answered before their change, e.g.
// "404 ×50".
func (r *result) ingBeforeNote() string {
	codes := slices.Sorted(maps.Keys(r.ingBefore))
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d ×%d", c, r.ingBefore[c]))
	}
	return strings.Join(parts, ", ")
}

// propagationMet is whether both kinds of change propagate within
// targetPropagation at p99.
func (r *result) propagationMet() (endpoint, ingress bool) {
	return quantile(r.sorted(), 0.99) < targetPropagation, quantile(r.sortedIngress(), 0.99) < targetPropagation
}

// klogProblem matches client-go's warning and error lines.
var klogProblem = regexp.MustCompile(`^[WE]\d{4} `)

// scanLog keeps the warnings and errors of the gateway's log.
func (r *result) scanLog(log string) {
	for line := range strings.Lines(log) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		r.logLines++
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || klogProblem.MatchString(line) {
			r.nProblem++
			if len(r.problems) < 10 {
				r.problems = append(r.problems, line)
			}
		}
	}
}

// print writes a short summary of r.
func (r *result) print(w io.Writer) {
	d := r.sorted()
	fmt.Fprintf(w, "\n%s table: %s objects created in %s; start -> ready %s (synced -> ready %s); RSS %s (peak %s) at ready, %s (peak %s) after the changes\n",
		r.name, commas(r.objects()), fmtDur(r.create), fmtDur(r.toReady), fmtDur(r.syncedToReady()),
		mib(r.memReady.rss), mib(r.memReady.hwm), mib(r.memAfter.rss), mib(r.memAfter.hwm))
	fmt.Fprintf(w, "  endpoint change write -> routed p50 %s p99 %s; rebuild mean %s p99 <= %s (quiet); per change %s CPU, %.0f allocations (%s)\n",
		fmtDur(quantile(d, 0.5)), fmtDur(quantile(d, 0.99)), fmtDur(r.buildQuiet.mean()), fmtDur(r.buildQuiet.bound(0.99)),
		fmtDur(r.cpu), r.allocs, kib(r.allocBytes))
	id := r.sortedIngress()
	fmt.Fprintf(w, "  Ingress change write -> routed p50 %s p90 %s p99 %s max %s; rebuild mean %s p99 <= %s (first full build %s)\n",
		fmtDur(quantile(id, 0.5)), fmtDur(quantile(id, 0.9)), fmtDur(quantile(id, 0.99)), fmtDur(id[len(id)-1]),
		fmtDur(r.ingBuild.mean()), fmtDur(r.ingBuild.bound(0.99)), fmtDur(r.firstBuild))
	fmt.Fprintf(w, "  gateway log: %d lines, %d warnings or errors\n", r.logLines, r.nProblem)
	for _, p := range r.problems {
		fmt.Fprintf(w, "    %s\n", p)
	}
	if r.exitErr != "" {
		fmt.Fprintf(w, "  gateway exit: %s\n", r.exitErr)
	}
}

// environment is the machine and the run.
type environment struct {
	start              time.Time
	took               time.Duration
	loadStart, loadEnd string
}

// markdown is the results file.
func markdown(env environment, cfg config, rs []*result) string {
	var b strings.Builder
	full := rs[len(rs)-1]
	var small *result
	if len(rs) > 1 {
		small = rs[0]
	}
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Scale: %s Ingresses, %s Services, %s endpoints through a real API server\n\n",
		commas(full.ingresses), commas(full.services), commas(full.endpoints))
	fmt.Fprintf(&b, "- date: %s; took %s; reproduce: `make bench-scale`\n", env.start.UTC().Format("2006-01-02 15:04 MST"), env.took.Round(time.Second))
	fmt.Fprintf(&b, "- machine: %s, %d CPUs (%s), %s RAM, Linux %s, %s; load average %s at start, %s at end (other benchmarks may share the machine)\n",
		host, runtime.NumCPU(), cpuModel(), memTotal(), kernel(), runtime.Version(), env.loadStart, env.loadEnd)
	fmt.Fprintf(&b, "- control plane: etcd + kube-apiserver %s on the same machine, a fresh one per table; the gateway is the `edgegate` binary with default settings (HTTPS on, log level info)\n\n", controlplane.Version)

	b.WriteString("## Targets\n\nOn the full table; the propagation target at both sizes.\n\n| target | measured | met |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| ready < %s after the informers sync | %s (first full build %s) | %s |\n",
		fmtDur(targetReady), fmtDur(full.syncedToReady()), fmtDur(full.firstBuild), yes(full.syncedToReady() < targetReady))
	peak := max(full.memReady.hwm, full.memAfter.hwm)
	fmt.Fprintf(&b, "| RSS < 300 MB (%s) | peak %s (VmHWM up to the end of the changes), %s after the changes | %s |\n",
		mib(targetRSS), mib(peak), mib(full.memAfter.rss), yes(peak < targetRSS))
	changeLine := fmt.Sprintf("rebuild p99 ≤ %s, mean %s", fmtDur(full.buildQuiet.bound(0.99)), fmtDur(full.buildQuiet.mean()))
	met := full.buildQuiet.bound(0.99) <= targetChange
	if small != nil {
		changeLine += fmt.Sprintf(" (small table: p99 ≤ %s, mean %s; full/small mean %s)",
			fmtDur(small.buildQuiet.bound(0.99)), fmtDur(small.buildQuiet.mean()),
			ratio(full.buildQuiet.mean().Seconds(), small.buildQuiet.mean().Seconds()))
	}
	fmt.Fprintf(&b, "| one endpoint change applied < %s regardless of table size | %s | %s |\n", fmtDur(targetChange), changeLine, yes(met))
	for _, r := range slices.Backward(rs) { // full table first
		ep, ing := r.propagationMet()
		d, id := r.sorted(), r.sortedIngress()
		fmt.Fprintf(&b, "| propagation p99 < %s for endpoint and Ingress changes: endpoint change, %s table | p99 %s (p50 %s, max %s; %d changes) | %s |\n",
			fmtDur(targetPropagation), r.name, fmtDur(quantile(d, 0.99)), fmtDur(quantile(d, 0.5)), fmtDur(d[len(d)-1]), len(d), yes(ep))
		fmt.Fprintf(&b, "| propagation p99 < %s for endpoint and Ingress changes: Ingress change, %s table | p99 %s (p50 %s, max %s; %d changes among %s Ingresses; %d rebuilt only the changed host, %d everything; rebuild mean %s) | %s |\n",
			fmtDur(targetPropagation), r.name, fmtDur(quantile(id, 0.99)), fmtDur(quantile(id, 0.5)), fmtDur(id[len(id)-1]), len(id),
			commas(r.ingresses+1), r.ingIncBuilds, r.ingFullBuilds, fmtDur(r.ingBuild.mean()), yes(ing))
	}
	b.WriteString("\n")

	b.WriteString("## Results\n\n")
	b.WriteString("| table | objects (Ingresses / Services / EndpointSlices / endpoints) | time to create | start → synced | synced → ready | start → ready | RSS at ready (current / peak) | RSS after changes (current / peak) | endpoint change write → routed p50 / p99 | Ingress change write → routed p50 / p99 |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		d, id := r.sorted(), r.sortedIngress()
		fmt.Fprintf(&b, "| %s | %s (%s / %s / %s / %s) | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s / %s |\n",
			r.name, commas(r.objects()), commas(r.ingresses), commas(r.services), commas(r.slices()), commas(r.endpoints),
			fmtDur(r.create), fmtDur(r.startToSynced()), fmtDur(r.syncedToReady()), fmtDur(r.toReady),
			mib(r.memReady.rss), mib(r.memReady.hwm), mib(r.memAfter.rss), mib(r.memAfter.hwm),
			fmtDur(quantile(d, 0.5)), fmtDur(quantile(d, 0.99)), fmtDur(quantile(id, 0.5)), fmtDur(quantile(id, 0.99)))
	}
	if small != nil {
		fd, sd := full.sorted(), small.sorted()
		fid, sid := full.sortedIngress(), small.sortedIngress()
		fmt.Fprintf(&b, "| full / small | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s / %s |\n",
			ratio(float64(full.objects()), float64(small.objects())),
			ratio(full.create.Seconds(), small.create.Seconds()),
			ratio(full.startToSynced().Seconds(), small.startToSynced().Seconds()),
			ratio(full.syncedToReady().Seconds(), small.syncedToReady().Seconds()),
			ratio(full.toReady.Seconds(), small.toReady.Seconds()),
			ratio(float64(full.memReady.rss), float64(small.memReady.rss)), ratio(float64(full.memReady.hwm), float64(small.memReady.hwm)),
			ratio(float64(full.memAfter.rss), float64(small.memAfter.rss)), ratio(float64(full.memAfter.hwm), float64(small.memAfter.hwm)),
			ratio(quantile(fd, 0.5).Seconds(), quantile(sd, 0.5).Seconds()), ratio(quantile(fd, 0.99).Seconds(), quantile(sd, 0.99).Seconds()),
			ratio(quantile(fid, 0.5).Seconds(), quantile(sid, 0.5).Seconds()), ratio(quantile(fid, 0.99).Seconds(), quantile(sid, 0.99).Seconds()))
	}

	b.WriteString("\n### One endpoint change inside the gateway\n\n")
	b.WriteString("| table | changes (probed + quiet) | endpoint-only / full rebuilds | rebuild, quiet: mean / p50 / p99 | rebuild, while probing: mean / p99 | gateway CPU per change | allocations per change | bytes per change | write → routed p90 / max |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		d := r.sorted()
		fmt.Fprintf(&b, "| %s | %d + %d | %d / %d | %s / ≤ %s / ≤ %s | %s / ≤ %s | %s | %.0f | %s | %s / %s |\n",
			r.name, len(r.routed), cfg.changes, r.epBuilds, r.fullBuilds,
			fmtDur(r.buildQuiet.mean()), fmtDur(r.buildQuiet.bound(0.5)), fmtDur(r.buildQuiet.bound(0.99)),
			fmtDur(r.buildProbe.mean()), fmtDur(r.buildProbe.bound(0.99)), fmtDur(r.cpu),
			r.allocs, kib(r.allocBytes), fmtDur(quantile(d, 0.9)), fmtDur(d[len(d)-1]))
	}
	if small != nil {
		fd, sd := full.sorted(), small.sorted()
		fmt.Fprintf(&b, "| full / small | | | %s / %s / %s | %s / %s | %s | %s | %s | %s / %s |\n",
			ratio(full.buildQuiet.mean().Seconds(), small.buildQuiet.mean().Seconds()),
			ratio(full.buildQuiet.bound(0.5).Seconds(), small.buildQuiet.bound(0.5).Seconds()),
			ratio(full.buildQuiet.bound(0.99).Seconds(), small.buildQuiet.bound(0.99).Seconds()),
			ratio(full.buildProbe.mean().Seconds(), small.buildProbe.mean().Seconds()),
			ratio(full.buildProbe.bound(0.99).Seconds(), small.buildProbe.bound(0.99).Seconds()),
			ratio(full.cpu.Seconds(), small.cpu.Seconds()),
			ratio(full.allocs, small.allocs), ratio(full.allocBytes, small.allocBytes),
			ratio(quantile(fd, 0.9).Seconds(), quantile(sd, 0.9).Seconds()), ratio(fd[len(fd)-1].Seconds(), sd[len(sd)-1].Seconds()))
	}

	b.WriteString("\n### One Ingress change (a new path on the probe Ingress)\n\n")
	b.WriteString("| table | changes | new path before its change | write → routed p50 / p90 / p99 / max | changed-host / full / endpoint-only rebuilds | rebuild during the changes: mean / p50 / p99 | first full build (at ready, no requests) | RSS before → after the Ingress changes (current / peak) |\n")
	b.WriteString("|---|---:|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		id := r.sortedIngress()
		fmt.Fprintf(&b, "| %s | %d | %s | %s / %s / %s / %s | %d / %d / %d | %s / ≤ %s / ≤ %s | %s | %s → %s / %s → %s |\n",
			r.name, len(id), r.ingBeforeNote(),
			fmtDur(quantile(id, 0.5)), fmtDur(quantile(id, 0.9)), fmtDur(quantile(id, 0.99)), fmtDur(id[len(id)-1]),
			r.ingIncBuilds, r.ingFullBuilds, r.ingEpBuilds,
			fmtDur(r.ingBuild.mean()), fmtDur(r.ingBuild.bound(0.5)), fmtDur(r.ingBuild.bound(0.99)), fmtDur(r.firstBuild),
			mib(r.memEndpoints.rss), mib(r.memAfter.rss), mib(r.memEndpoints.hwm), mib(r.memAfter.hwm))
	}
	if small != nil {
		fid, sid := full.sortedIngress(), small.sortedIngress()
		fmt.Fprintf(&b, "| full / small | | | %s / %s / %s / %s | | %s / %s / %s | %s | |\n",
			ratio(quantile(fid, 0.5).Seconds(), quantile(sid, 0.5).Seconds()), ratio(quantile(fid, 0.9).Seconds(), quantile(sid, 0.9).Seconds()),
			ratio(quantile(fid, 0.99).Seconds(), quantile(sid, 0.99).Seconds()), ratio(fid[len(fid)-1].Seconds(), sid[len(sid)-1].Seconds()),
			ratio(full.ingBuild.mean().Seconds(), small.ingBuild.mean().Seconds()),
			ratio(full.ingBuild.bound(0.5).Seconds(), small.ingBuild.bound(0.5).Seconds()),
			ratio(full.ingBuild.bound(0.99).Seconds(), small.ingBuild.bound(0.99).Seconds()),
			ratio(full.firstBuild.Seconds(), small.firstBuild.Seconds()))
	}

	b.WriteString("\n### Details\n\n")
	b.WriteString("| table | creation (objects/s per kind) | Go heap in use at ready / after changes | /routes (size, time) | RSS after /routes (current / peak) | gateway log | load average (start → end) |\n|---|---|---:|---:|---:|---|---|\n")
	for _, r := range rs {
		var ph []string
		for _, p := range r.phases {
			ph = append(ph, fmt.Sprintf("%s %s in %s (%.0f/s)", commas(p.n), p.what, fmtDur(p.took), float64(p.n)/p.took.Seconds()))
		}
		logNote := fmt.Sprintf("%d lines, %d warnings/errors", r.logLines, r.nProblem)
		if r.exitErr != "" {
			logNote += "; exit: " + r.exitErr
		}
		fmt.Fprintf(&b, "| %s | %s | %s / %s | %s in %s (%s hosts, %s backends, %s endpoints) | %s / %s | %s | %s → %s |\n",
			r.name, strings.Join(ph, "; "), mib(int64(r.heapReady)), mib(int64(r.heapAfter)),
			mib(int64(r.routesBytes)), fmtDur(r.routesTime), commas(r.routesHosts), commas(r.routesBackends), commas(r.routesEndpoints),
			mib(r.memAfterRoutes.rss), mib(r.memAfterRoutes.hwm), logNote, r.loadStart, r.loadEnd)
	}
	for _, r := range rs {
		for _, p := range r.problems {
			fmt.Fprintf(&b, "\n- %s gateway log: `%s`", r.name, p)
		}
	}

	fmt.Fprintf(&b, "\n\n## Method\n\n")
	fmt.Fprintf(&b, `- **Table.** Each Ingress has one host (ing-NNNNN.scale.test) and two Prefix paths, "/" to its Service's port by name and "/api" by number (two backends per Service); Ingress i routes to Service i mod %s. Services are headless (the test API server's service CIDR is a /24, and edgegate never uses ClusterIPs) with an http and a metrics port, spread round-robin over %d namespaces. Endpoints are spread evenly over the Services (%s each on the full table) in EndpointSlices of at most %d, shaped like the endpointslice controller's (conditions, nodeName, zone, targetRef); every endpoint is a distinct ip:port in the pod network namespace's /24, which nothing listens on and nothing is sent to.
- **Creation.** %d concurrent creates through client-go (QPS 5000, burst 10000), namespaces, IngressClass, Services, EndpointSlices, Ingresses, then the probe (a Service, an EndpointSlice with one real pod and an Ingress for %s whose only path is "/", Exact).
- **Time to ready.** The gateway starts after every object exists. /readyz is polled every 5 ms from the moment the process is started: its reason tells "waiting for the informer caches to sync" from "no route snapshot published yet", which gives start → synced; synced → ready is the rest (when no poll landed between sync and publish, it is the first full build from edgegate_snapshot_build_seconds). A full build is also what an IngressClass or referenced Secret change, or a change to an Ingress's TLS, ACME opt-in or default backend, costs; a rules-only Ingress change rebuilds its hosts only (measured below).
- **Memory.** VmRSS and VmHWM from /proc/PID/status of the gateway process: right after /readyz answered 200, after the endpoint changes, after all changes (the Ingress changes come last), and after one GET /routes (which renders the whole table).
- **Endpoint change, write → routed.** %d times, the probe Service's only endpoint moves to the other pod (an EndpointSlice update through the API server); the time from issuing the write to the first request through the gateway answered by the new pod, probing without pause, as in bench/propagation. It includes the API write, the watch event, the gateway's coalescing (3 ms of quiet) and the rebuild.
- **Endpoint change, inside the gateway.** Then %d quiet changes, %s apart, to the first EndpointSlice of a generated Service in the middle of the table (one endpoint after the other turns not ready). Rebuild times are the gateway's edgegate_snapshot_build_seconds (from the builder's wake-up to the publish, OnPublish included), for the quiet changes and for the probed ones (where the prober's requests compete for the 2 CPUs); its buckets double from 0.1 ms, so p50/p99 are bucket upper bounds, the mean is exact. Allocations per change are go_memstats_mallocs_total / alloc_bytes_total over the quiet changes, less the allocations of the /metrics scrapes (measured back to back) and the idle background (an idle window of the same length before the changes); they include decoding the watch event. The gateway's CPU time per quiet change is utime + stime from /proc/PID/stat over the same window, less the idle rate (10 ms ticks, so about ±0.1 ms per change over 100 changes).
- **Ingress change, write → routed.** Last, %d times, an Update of the probe Ingress adds one more path (/v0, /v1, …, Prefix, to the probe Service's port 80 by number, the backend "/" already uses), so the Ingress ends with %d paths; the time from issuing the write to the first request through the gateway for the new path answered by the probe's pod, probing that path without pause, as in bench/propagation. One request before each write checks that the new path is not routed yet ("/" being Exact, it answers 404; the statuses seen are in the table). It includes the API write, the watch event, the coalescing and the rebuild: a change that touches only an Ingress's rules rebuilds the tables of the hosts it names and shares the rest (edgegate_snapshot_builds_total{kind="ingresses"}); the table shows how many builds were of that kind and how many full. Rebuild times are edgegate_snapshot_build_seconds over these changes (the histogram has no kind label), with the prober's requests competing for the 2 CPUs; the first full build at ready is what a full rebuild of the table costs without competing requests.
- **Check.** /routes must list every host, two backends per Service plus the probe's, no backend error and every endpoint; edgegate_config_problems must be 0.
`, commas(full.services), full.namespaces, commas(full.endpointsOf(0)), maxSliceEndpoints, cfg.workers, probeHost,
		cfg.changes, cfg.changes, changeSpacing, cfg.ingressChanges, cfg.ingressChanges+1)
	return b.String()
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// quantile is the q-quantile of sorted d.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func kib(n float64) string { return fmt.Sprintf("%.1f KiB", n/1024) }

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
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

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	var kb int64
	for line := range strings.Lines(string(b)) {
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
			return fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
		}
	}
	return "?"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
