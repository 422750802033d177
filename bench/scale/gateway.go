package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/edgegate/edgegate/internal/gatewayproc"
)

const (
	// changeSpacing separates the quiet endpoint changes: well above the
	// gateway's coalescing window (20 ms at most), so each one is a
	// rebuild of its own.
	changeSpacing = 50 * time.Millisecond
	// readyTimeout bounds the gateway's start.
	readyTimeout = 2 * time.Minute
	// changeTimeout bounds the wait for one change to show.
	changeTimeout = 10 * time.Second

	buildMetric   = "edgegate_snapshot_build_seconds"
	versionMetric = "edgegate_snapshot_version"
	fullBuilds    = `edgegate_snapshot_builds_total{kind="full"}`
	epBuilds      = `edgegate_snapshot_builds_total{kind="endpoints"}`
	ingBuilds     = `edgegate_snapshot_builds_total{kind="ingresses"}`
	mallocsMetric = "go_memstats_mallocs_total"
	bytesMetric   = "go_memstats_alloc_bytes_total"
	heapMetric    = "go_memstats_heap_inuse_bytes"
)

// startGateway starts edgegate without waiting and polls /readyz, whose
// reason tells "waiting for the informer caches to sync" from "no route
// snapshot published yet", until it answers 200.
func startGateway(ctx context.Context, bin, dir, kubeconfig string, r *result) (*gatewayproc.Gateway, int, error) {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	start := time.Now()
	gw, err := gatewayproc.Start(ctx, gatewayproc.Options{Bin: bin, Dir: dir, Kubeconfig: kubeconfig, LogLevel: "info", NoWait: true})
	if err != nil {
		return nil, 0, err
	}
	for {
		select {
		case <-gw.Done():
			return nil, 0, fmt.Errorf("edgegate exited before ready: %v\n%s", gw.Err(), gw.LogTail(30))
		case <-ctx.Done():
			gw.Kill()
			return nil, 0, ctx.Err()
		default:
		}
		code, body, _, _ := get(client, "http://"+gw.AdminAddr+"/readyz", "")
		el := time.Since(start)
		if code == http.StatusOK {
			r.toReady = el
			return gw, gw.PID(), nil
		}
		if r.toSynced == 0 && strings.Contains(string(body), "no route snapshot") {
			r.toSynced = el
		}
		if el > readyTimeout {
			gw.Kill()
			return nil, 0, fmt.Errorf("edgegate not ready after %s\n%s", readyTimeout, gw.LogTail(30))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// measureGateway takes every measurement of a ready gateway: memory,
// the first build, write -> routed for changes of the probe's endpoints,
// the cost of quiet changes of a generated Service, and a check of the
// route table.
func measureGateway(ctx context.Context, cfg config, g *generator, c kubernetes.Interface, gw *gatewayproc.Gateway, pid int, r *result) error {
	// Memory first: every later step allocates.
	var err error
	if r.memReady, err = readMemory(pid); err != nil {
		return err
	}
	adm := &admin{addr: gw.AdminAddr, client: &http.Client{Timeout: 30 * time.Second}}
	defer adm.client.CloseIdleConnections()
	// /readyz turns 200 as the first snapshot is stored; the build is
	// observed once the rest of the publish is done.
	var atReady metrics
	for deadline := time.Now().Add(changeTimeout); ; time.Sleep(5 * time.Millisecond) {
		if atReady, err = adm.scrape(); err != nil {
			return err
		}
		if atReady[buildMetric+"_count"] > 0 || time.Now().After(deadline) {
			break
		}
	}
	first := atReady.histogram(buildMetric)
	if first.count != 1 || atReady[fullBuilds] != 1 {
		return fmt.Errorf("at ready: %v builds (%v full), want the first full build only", first.count, atReady[fullBuilds])
	}
	r.firstBuild = seconds(first.sum)
	r.heapReady = atReady[heapMetric]
	if n := atReady.sumPrefix("edgegate_config_problems"); n != 0 {
		return fmt.Errorf("the generated table has %v config problems", n)
	}
	log.Printf("ready: start -> synced %s, synced -> ready %s (first full build %s), start -> ready %s; RSS %s, peak %s",
		fmtDur(r.toSynced), fmtDur(r.syncedToReady()), fmtDur(r.firstBuild), fmtDur(r.toReady),
		mib(r.memReady.rss), mib(r.memReady.hwm))

	p := &prober{base: "http://" + gw.HTTPAddr, client: &http.Client{Timeout: 2 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
	defer p.client.CloseIdleConnections()
	if err := p.waitPod(ctx, "/", g.pods[g.probeOn].Name); err != nil {
		return fmt.Errorf("initial route to pod %s: %w", g.pods[0].Name, err)
	}

	before, err := adm.scrape()
	if err != nil {
		return err
	}
	log.Printf("timing %d endpoint changes: write -> first request routed to the other pod (~%s-%s: 10-100 ms each)",
		cfg.changes, roundEstimate(time.Duration(cfg.changes)*10*time.Millisecond),
		roundEstimate(time.Duration(cfg.changes)*100*time.Millisecond))
	if r.routed, err = probeChanges(ctx, c, g, p, cfg.changes); err != nil {
		return err
	}
	d := slices.Clone(r.routed)
	slices.Sort(d)
	log.Printf("  write -> routed p50 %s, p99 %s", fmtDur(quantile(d, 0.50)), fmtDur(quantile(d, 0.99)))

	mid, err := adm.scrape()
	if err != nil {
		return err
	}
	log.Printf("timing allocations: %s idle baseline, then %d quiet endpoint changes %s apart (~%s)",
		time.Duration(cfg.changes)*changeSpacing, cfg.changes, changeSpacing,
		roundEstimate(2*time.Duration(cfg.changes)*changeSpacing))
	if err := quietChanges(ctx, c, g, adm, pid, cfg.changes, r); err != nil {
		return err
	}
	after, err := adm.scrape()
	if err != nil {
		return err
	}
	r.buildProbe = mid.histogram(buildMetric).sub(before.histogram(buildMetric))
	r.buildQuiet = after.histogram(buildMetric).sub(mid.histogram(buildMetric))
	r.epBuilds = int(after[epBuilds] - before[epBuilds])
	r.fullBuilds = int(after[fullBuilds] - before[fullBuilds])
	if r.memEndpoints, err = readMemory(pid); err != nil {
		return err
	}
	log.Printf("  rebuilds: %d endpoint-only, %d full; mean %s, p99 <= %s (quiet); mean %s, p99 <= %s (probing); %.0f allocations, %s per change; RSS %s, peak %s",
		r.epBuilds, r.fullBuilds, fmtDur(r.buildQuiet.mean()), fmtDur(r.buildQuiet.bound(0.99)),
		fmtDur(r.buildProbe.mean()), fmtDur(r.buildProbe.bound(0.99)),
		r.allocs, kib(r.allocBytes), mib(r.memEndpoints.rss), mib(r.memEndpoints.hwm))
	log.Printf("  gateway CPU per quiet change: %s", fmtDur(r.cpu))

	log.Printf("timing %d Ingress changes: write (a new path on the probe Ingress) -> first request for the path answered by the pod (~%s; each rebuilds the probe's host only, a full build took %s)",
		cfg.ingressChanges, roundEstimate(time.Duration(cfg.ingressChanges)*g.ingressChange()), fmtDur(r.firstBuild))
	if err := ingressChanges(ctx, c, g, p, cfg.ingressChanges, r); err != nil {
		return err
	}
	final, err := adm.settled(after)
	if err != nil {
		return err
	}
	r.ingBuild = final.histogram(buildMetric).sub(after.histogram(buildMetric))
	r.ingFullBuilds = int(final[fullBuilds] - after[fullBuilds])
	r.ingEpBuilds = int(final[epBuilds] - after[epBuilds])
	r.ingIncBuilds = int(final[ingBuilds] - after[ingBuilds])
	r.heapAfter = final[heapMetric]
	if r.memAfter, err = readMemory(pid); err != nil {
		return err
	}
	d = r.sortedIngress()
	log.Printf("  write -> routed p50 %s, p90 %s, p99 %s, max %s; before each change the new path answered %s",
		fmtDur(quantile(d, 0.50)), fmtDur(quantile(d, 0.90)), fmtDur(quantile(d, 0.99)), fmtDur(d[len(d)-1]), r.ingBeforeNote())
	log.Printf("  rebuilds: %d of changed hosts only, %d full, %d endpoint-only; mean %s, p99 <= %s (first full build %s); RSS %s, peak %s",
		r.ingIncBuilds, r.ingFullBuilds, r.ingEpBuilds, fmtDur(r.ingBuild.mean()), fmtDur(r.ingBuild.bound(0.99)), fmtDur(r.firstBuild),
		mib(r.memAfter.rss), mib(r.memAfter.hwm))

	log.Printf("checking the route table on /routes")
	if err := verifyRoutes(adm, g, r); err != nil {
		return err
	}
	if r.memAfterRoutes, err = readMemory(pid); err != nil {
		return err
	}
	return nil
}

// probeChanges moves the probe Service's endpoint between the two pods n
// times and returns, for each move, the time from issuing the write to the
// first request answered by the new pod.
func probeChanges(ctx context.Context, c kubernetes.Interface, g *generator, p *prober, n int) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	cur := 0
	for i := range n {
		next := 1 - cur
		s := g.probeSliceFor(g.pods[next])
		s.ResourceVersion = g.probeSlice.ResourceVersion
		t0 := time.Now()
		sl, err := c.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx, s, metav1.UpdateOptions{})
		if err != nil {
			return nil, fmt.Errorf("endpoint change %d: %w", i, err)
		}
		g.probeSlice, g.probeOn = sl, next
		if err := p.waitPod(ctx, "/", g.pods[next].Name); err != nil {
			return nil, fmt.Errorf("endpoint change %d: %w", i, err)
		}
		lat = append(lat, time.Since(t0))
		cur = next
	}
	return lat, nil
}

// ingressChanges adds n paths (/v0, /v1, ...; Prefix, to the probe Service)
// to the probe Ingress, one Update per path, and records for each the time
// from issuing the write to the first request for the new path answered by
// the probe's pod, probing without pause. Before each write, one request
// checks that the path is not routed yet (the probe Ingress's "/" is
// Exact), and its status is recorded.
func ingressChanges(ctx context.Context, c kubernetes.Interface, g *generator, p *prober, n int, r *result) error {
	ing, err := c.NetworkingV1().Ingresses(namespaceName(0)).Get(ctx, "probe", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get probe Ingress: %w", err)
	}
	pod := g.pods[g.probeOn].Name
	r.ingBefore = make(map[int]int)
	r.ingRouted = make([]time.Duration, 0, n)
	logged := time.Now()
	for i := range n {
		path := "/v" + strconv.Itoa(i)
		code, _, got, err := get(p.client, p.base+path, probeHost)
		if err != nil {
			return fmt.Errorf("Ingress change %d: request for %s before the change: %w", i, path, err)
		}
		if got != "" {
			return fmt.Errorf("Ingress change %d: %s answered by pod %s (status %d) before the change", i, path, got, code)
		}
		r.ingBefore[code]++
		ing.Spec.Rules[0].HTTP.Paths = append(ing.Spec.Rules[0].HTTP.Paths, probePath(path, netv1.PathTypePrefix))
		t0 := time.Now()
		next, err := c.NetworkingV1().Ingresses(ing.Namespace).Update(ctx, ing, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("Ingress change %d: %w", i, err)
		}
		ing = next
		if err := p.waitPod(ctx, path, pod); err != nil {
			return fmt.Errorf("Ingress change %d (%s): %w", i, path, err)
		}
		r.ingRouted = append(r.ingRouted, time.Since(t0))
		if time.Since(logged) >= 5*time.Second && i+1 < n {
			log.Printf("  Ingress changes: %d/%d, last write -> routed %s", i+1, n, fmtDur(r.ingRouted[i]))
			logged = time.Now()
		}
	}
	return nil
}

// quietChanges measures what one endpoint change costs the gateway in
// allocations, without requests: n changes of the first EndpointSlice of a
// generated Service (one endpoint after the other turns not ready), spaced
// apart, against an idle window of the same length. The allocations of the
// /metrics scrapes themselves and of the idle background are subtracted;
// the gateway's CPU time per change is measured the same way (background
// subtracted, scrapes not: they are a few milliseconds in all).
func quietChanges(ctx context.Context, c kubernetes.Interface, g *generator, adm *admin, pid, n int, r *result) error {
	s := min(g.services, g.ingresses) / 2 // a Service some Ingress uses
	k := g.firstSlice[s]
	size := len(g.slice(k, -1).Endpoints)
	if size == 0 {
		return fmt.Errorf("service %s has no endpoints to change", serviceName(s))
	}
	cur, err := c.DiscoveryV1().EndpointSlices(g.namespaceOf(s)).Get(ctx, g.slice(k, -1).Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get EndpointSlice: %w", err)
	}
	m0, err := adm.scrape()
	if err != nil {
		return err
	}
	m1, err := adm.scrape()
	if err != nil {
		return err
	}
	perScrape := m1.allocs().minus(m0.allocs())
	cpu1, err := cpuTime(pid)
	if err != nil {
		return err
	}
	idleFrom := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Duration(n) * changeSpacing):
	}
	m2, err := adm.scrape()
	if err != nil {
		return err
	}
	idleFor := time.Since(idleFrom)
	cpu2, err := cpuTime(pid)
	if err != nil {
		return err
	}
	// Background allocations per second when idle, scrapes excluded.
	background := m2.allocs().minus(m1.allocs()).minus(perScrape).scale(1 / idleFor.Seconds())

	changeFrom := time.Now()
	v0 := m2[versionMetric]
	for i := range n {
		// Endpoint i mod (size+1) not ready, size meaning none: each
		// change differs from the one before.
		nr := i % (size + 1)
		if nr == size {
			nr = -1
		}
		sl := g.slice(k, nr)
		sl.ResourceVersion = cur.ResourceVersion
		if cur, err = c.DiscoveryV1().EndpointSlices(sl.Namespace).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("quiet endpoint change %d: %w", i, err)
		}
		time.Sleep(changeSpacing)
	}
	// Done when the version has not moved for settle: a rebuild may take
	// long enough at scale for the next change to join it, so the
	// version need not advance once per change.
	const settle = 500 * time.Millisecond
	var m3 metrics
	polls, last, lastMoved := 0, -1.0, time.Now()
	for deadline := time.Now().Add(changeTimeout); ; time.Sleep(100 * time.Millisecond) {
		if m3, err = adm.scrape(); err != nil {
			return err
		}
		polls++
		if v := m3[versionMetric]; v != last {
			last, lastMoved = v, time.Now()
		} else if time.Since(lastMoved) >= settle {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("quiet endpoint changes: snapshot version still moving %s after the last change", changeTimeout)
		}
	}
	if m3[versionMetric] == v0 {
		return fmt.Errorf("quiet endpoint changes: snapshot version %v did not move", v0)
	}
	changeFor := time.Since(changeFrom)
	cpu3, err := cpuTime(pid)
	if err != nil {
		return err
	}
	a := m3.allocs().minus(m2.allocs()).minus(perScrape.scale(float64(polls))).minus(background.scale(changeFor.Seconds()))
	idleCPU := float64(cpu2-cpu1) / idleFor.Seconds() // per second
	r.cpu = time.Duration((float64(cpu3-cpu2) - idleCPU*changeFor.Seconds()) / float64(n))
	r.allocs, r.allocBytes = a.objects/float64(n), a.bytes/float64(n)
	return nil
}

// verifyRoutes checks on /routes that the gateway serves the whole table:
// every host, two backends per used Service and the probe's, no errors,
// every endpoint.
func verifyRoutes(adm *admin, g *generator, r *result) error {
	t0 := time.Now()
	code, body, _, err := get(adm.client, "http://"+adm.addr+"/routes", "")
	r.routesTime = time.Since(t0)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("/routes: status %d: %v", code, err)
	}
	r.routesBytes = len(body)
	var v struct {
		Hosts []struct {
			Host string `json:"host"`
		} `json:"hosts"`
		Backends []struct {
			ID        string   `json:"id"`
			Error     string   `json:"error"`
			Endpoints []string `json:"endpoints"`
		} `json:"backends"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("/routes: %w", err)
	}
	used := min(g.services, g.ingresses)
	want := 1 // the probe's endpoint
	for s := range used {
		want += g.endpointsOf(s)
	}
	eps := make(map[string]bool, want)
	for _, b := range v.Backends {
		if b.Error != "" {
			return fmt.Errorf("/routes: backend %s: %s", b.ID, b.Error)
		}
		for _, a := range b.Endpoints {
			eps[a] = true
		}
	}
	r.routesHosts, r.routesBackends, r.routesEndpoints = len(v.Hosts), len(v.Backends), len(eps)
	// The quiet changes may have left one endpoint not ready.
	if len(v.Hosts) != g.ingresses+1 || len(v.Backends) != 2*used+1 || len(eps) < want-1 || len(eps) > want {
		return fmt.Errorf("/routes: %d hosts, %d backends, %d endpoints; want %d, %d, %d",
			len(v.Hosts), len(v.Backends), len(eps), g.ingresses+1, 2*used+1, want)
	}
	return nil
}

// prober sends requests for the probe host through the gateway.
type prober struct {
	base   string // http://address of the gateway's HTTP listener
	client *http.Client
}

// waitPod requests path without pause until a response comes from pod name.
func (p *prober) waitPod(ctx context.Context, path, name string) error {
	deadline := time.Now().Add(changeTimeout)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if code, _, pod, err := get(p.client, p.base+path, probeHost); err == nil && code == http.StatusOK && pod == name {
			return nil
		}
	}
	return fmt.Errorf("no response for %s from pod %s within %s", path, name, changeTimeout)
}

// get fetches url (with Host header host unless empty) and returns the
// status, the body and the X-Pod header.
func get(c *http.Client, url, host string) (int, []byte, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, resp.Header.Get("X-Pod"), err
}

// admin is the gateway's admin listener.
type admin struct {
	addr   string
	client *http.Client
}

// settled scrapes /metrics until every build counted since from (the
// counter moves as a build starts) has been observed in the build
// histogram (as it ends, after the publish the prober may already see).
func (a *admin) settled(from metrics) (metrics, error) {
	for deadline := time.Now().Add(changeTimeout); ; time.Sleep(5 * time.Millisecond) {
		m, err := a.scrape()
		if err != nil {
			return nil, err
		}
		started := m[fullBuilds] + m[epBuilds] + m[ingBuilds] - from[fullBuilds] - from[epBuilds] - from[ingBuilds]
		if m[buildMetric+"_count"]-from[buildMetric+"_count"] >= started {
			return m, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%v builds started but not observed in %s after %s", started, buildMetric, changeTimeout)
		}
	}
}

// metrics is one /metrics scrape: series (name and labels as exposed) to
// value.
type metrics map[string]float64

func (a *admin) scrape() (metrics, error) {
	code, body, _, err := get(a.client, "http://"+a.addr+"/metrics", "")
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: status %d: %v", code, err)
	}
	m := make(metrics)
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	if _, ok := m[mallocsMetric]; !ok {
		return nil, fmt.Errorf("/metrics: no %s", mallocsMetric)
	}
	return m, nil
}

// sumPrefix sums the series whose name starts with prefix.
func (m metrics) sumPrefix(prefix string) float64 {
	var sum float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			sum += v
		}
	}
	return sum
}

// allocation counts heap allocations.
type allocation struct{ objects, bytes float64 }

func (m metrics) allocs() allocation {
	return allocation{objects: m[mallocsMetric], bytes: m[bytesMetric]}
}

func (a allocation) minus(b allocation) allocation {
	return allocation{a.objects - b.objects, a.bytes - b.bytes}
}

func (a allocation) scale(f float64) allocation { return allocation{a.objects * f, a.bytes * f} }

// histogram is a Prometheus histogram: cumulative bucket counts by upper
// bound, +Inf last.
type histogram struct {
	count, sum float64
	le         []float64
	cum        []float64
}

func (m metrics) histogram(name string) histogram {
	h := histogram{count: m[name+"_count"], sum: m[name+"_sum"]}
	prefix := name + `_bucket{le="`
	type bucket struct{ le, cum float64 }
	var bs []bucket
	for k, v := range m {
		le, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		b, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64) // "+Inf" parses
		if err != nil {
			continue
		}
		bs = append(bs, bucket{b, v})
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	for _, b := range bs {
		h.le = append(h.le, b.le)
		h.cum = append(h.cum, b.cum)
	}
	return h
}

// sub is the histogram of the observations made between o and h.
func (h histogram) sub(o histogram) histogram {
	d := histogram{count: h.count - o.count, sum: h.sum - o.sum, le: h.le, cum: slices.Clone(h.cum)}
	for i := range d.cum {
		if i < len(o.cum) {
			d.cum[i] -= o.cum[i]
		}
	}
	return d
}

func (h histogram) mean() time.Duration {
	if h.count == 0 {
		return 0
	}
	return seconds(h.sum / h.count)
}

// bound is the upper bound of the bucket holding the q-quantile: the
// q-quantile is at most that (and above the bucket below).
func (h histogram) bound(q float64) time.Duration {
	rank := math.Ceil(q * h.count)
	for i, c := range h.cum {
		if c >= rank && c > 0 {
			if math.IsInf(h.le[i], 1) {
				return time.Duration(math.MaxInt64)
			}
			return seconds(h.le[i])
		}
	}
	return 0
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// cpuTime is the CPU time (user and system) pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("gateway cpu time: %w", err)
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("gateway cpu time: bad /proc/%d/stat", pid)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime
		t, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("gateway cpu time: %w", err)
		}
		ticks += t
	}
	return time.Duration(ticks) * clockTick, nil
}

// memory is a process's resident set.
type memory struct{ rss, hwm int64 } // bytes

// readMemory reads VmRSS and VmHWM of pid.
func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("gateway memory: %w", err)
	}
	var m memory
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("gateway memory: %s: %w", k, err)
		}
		if k == "VmRSS" {
			m.rss = kb << 10
		} else {
			m.hwm = kb << 10
		}
	}
	if m.rss == 0 || m.hwm == 0 {
		return memory{}, fmt.Errorf("gateway memory: no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return m, nil
}
