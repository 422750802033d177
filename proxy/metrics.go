package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegate/edgegate/route"
)

// Request counting without a lock or an allocation per request.
//
// Every *route.Route a request matched maps, through a sync.Map keyed by the
// pointer (a pointer key does not allocate), to a *routeStats. routeStats
// are shared by label identity (namespace, ingress, host, path): a new
// snapshot's routes resolve to the same routeStats as the old one's on first
// sight (the only slow path, under a mutex), so counts survive snapshot
// swaps and never go backwards. Prune drops pointer keys of routes no
// longer published; the routeStats themselves are kept for the life of the
// process, so a deleted Ingress's series stays exported with its last
// value, as a counter should.

// statsKey is the label identity of a series.
type statsKey struct{ namespace, ingress, host, path string }

// codeSlots is how many distinct status codes one route counts exactly;
// further codes are counted as code="other".
const codeSlots = 16

type routeStats struct {
	key   statsKey
	slots [codeSlots]struct {
		code atomic.Uint32
		n    atomic.Uint64
	}
	other atomic.Uint64
}

func (s *routeStats) inc(code int) {
	if code < 100 || code > 999 {
		s.other.Add(1)
		return
	}
	c := uint32(code)
	for i := range s.slots {
		sl := &s.slots[i]
		got := sl.code.Load()
		if got == 0 {
			if sl.code.CompareAndSwap(0, c) {
				got = c
			} else {
				got = sl.code.Load()
			}
		}
		if got == c {
			sl.n.Add(1)
			return
		}
	}
	s.other.Add(1)
}

type requestStats struct {
	desc      *prometheus.Desc
	byPtr     sync.Map // *route.Route -> *routeStats
	unmatched routeStats

	mu    sync.Mutex
	byKey map[statsKey]*routeStats

	// ptrs counts the entries of byPtr, live or dead.
	ptrs    atomic.Int64
	pruneMu sync.Mutex
	pruned  *route.Snapshot // the snapshot the last prune kept the routes of
}

func newRequestStats() *requestStats {
	return &requestStats{
		desc: prometheus.NewDesc("edgegate_http_requests_total",
			"HTTP requests answered, by the route that matched (ingress and path empty when none did) and status code.",
			[]string{"namespace", "ingress", "host", "path", "code"}, nil),
		byKey: make(map[statsKey]*routeStats),
	}
}

// get returns the stats for r (nil: unmatched). Lock- and allocation-free
// except on the first request through a route pointer.
func (rs *requestStats) get(r *route.Route) *routeStats {
	if r == nil {
		return &rs.unmatched
	}
	if v, ok := rs.byPtr.Load(r); ok {
		return v.(*routeStats)
	}
	return rs.slow(r)
}

func (rs *requestStats) slow(r *route.Route) *routeStats {
	k := statsKey{r.Ingress.Namespace, r.Ingress.Name, r.Host, r.Path}
	rs.mu.Lock()
	s := rs.byKey[k]
	if s == nil {
		s = &routeStats{key: k}
		rs.byKey[k] = s
	}
	rs.mu.Unlock()
	if _, loaded := rs.byPtr.LoadOrStore(r, s); !loaded {
		rs.ptrs.Add(1)
	}
	return s
}

// prune forgets route pointers snap no longer holds, once there are enough
// of them to be worth a walk: only routes that served a request have an
// entry, and a dead one costs a map entry (its counters live on by key). A
// walk over every route of snap on each publish would make an Ingress
// change, which replaces the tables of one host only, cost as much as the
// whole table again; waiting until the entries outnumber twice the live
// routes (plus a slack) amortises it. A snapshot sharing the last pruned
// one's route tables (an endpoint-only change) has nothing to prune.
func (rs *requestStats) prune(snap *route.Snapshot) int {
	rs.pruneMu.Lock()
	defer rs.pruneMu.Unlock()
	if rs.pruned != nil && snap.SharesRoutes(rs.pruned) {
		rs.pruned = snap
		return 0
	}
	live := 1 // the default route
	if snap != nil {
		live += snap.RouteCount()
	}
	if rs.ptrs.Load() <= int64(2*live+pruneSlack) {
		return 0
	}
	rs.pruned = snap
	alive := make(map[*route.Route]struct{}, live)
	if snap != nil {
		for _, t := range snap.Hosts() {
			for _, r := range t.Routes {
				alive[r] = struct{}{}
			}
		}
		if snap.Default != nil {
			alive[snap.Default] = struct{}{}
		}
	}
	n := 0
	rs.byPtr.Range(func(k, _ any) bool {
		if _, ok := alive[k.(*route.Route)]; !ok {
			if _, deleted := rs.byPtr.LoadAndDelete(k); deleted {
				rs.ptrs.Add(-1)
				n++
			}
		}
		return true
	})
	return n
}

// pruneSlack is how many dead route pointers prune tolerates beyond twice
// the live routes.
const pruneSlack = 256

func (rs *requestStats) Describe(ch chan<- *prometheus.Desc) { ch <- rs.desc }

func (rs *requestStats) Collect(ch chan<- prometheus.Metric) {
	rs.mu.Lock()
	all := make([]*routeStats, 0, len(rs.byKey)+1)
	for _, s := range rs.byKey {
		all = append(all, s)
	}
	rs.mu.Unlock()
	all = append(all, &rs.unmatched)
	for _, s := range all {
		k := s.key
		for i := range s.slots {
			sl := &s.slots[i]
			c := sl.code.Load()
			if c == 0 {
				break
			}
			if n := sl.n.Load(); n > 0 {
				ch <- prometheus.MustNewConstMetric(rs.desc, prometheus.CounterValue, float64(n),
					k.namespace, k.ingress, k.host, k.path, strconv.Itoa(int(c)))
			}
		}
		if n := s.other.Load(); n > 0 {
			ch <- prometheus.MustNewConstMetric(rs.desc, prometheus.CounterValue, float64(n),
				k.namespace, k.ingress, k.host, k.path, "other")
		}
	}
}

// Upstream error kinds (the fixed label set of edgegate_upstream_errors_total).
type errKind uint8

const (
	errConnect errKind = iota // dial refused or unreachable: 502
	errTimeout                // dial timed out, or no response (headers or body bytes) within ResponseTimeout: 504
	errReset                  // connection reset/closed or malformed response: 502
	errBusy                   // MaxConnsPerEndpoint reached: 503
	numErrKinds
)

var errKindNames = [numErrKinds]string{"connect", "timeout", "reset", "busy"}

type metrics struct {
	requests    *requestStats
	upstream    prometheus.Histogram
	badRequests prometheus.Counter
	panics      prometheus.Counter
	upErrVec    *prometheus.CounterVec
	upErr       [numErrKinds]prometheus.Counter

	staleRetries prometheus.Counter
	dialRetries  prometheus.Counter
	upgraded     prometheus.Gauge
	handOffs     prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		requests: newRequestStats(),
		upstream: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgegate_http_upstream_duration_seconds",
			Help:    "Time from sending a request to an endpoint until its response headers arrived (successful round trips only).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		badRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegate_http_bad_requests_total",
			Help: "Client requests rejected before routing: malformed (400), header too large (431) or timed out (408).",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegate_http_panics_total",
			Help: "Panics recovered in the request handler (answered 500).",
		}),
		upErrVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_upstream_errors_total",
			Help: "Failed round trips to endpoints by kind: connect, timeout, reset, busy.",
		}, []string{"kind"}),
		staleRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegate_upstream_stale_retries_total",
			Help: "Round trips retried on a new connection because the pooled keep-alive connection they used had been closed by the endpoint.",
		}),
		dialRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegate_upstream_next_endpoint_total",
			Help: "Requests sent to another endpoint of their backend because connecting to the one picked failed.",
		}),
		upgraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgegate_http_upgraded_connections",
			Help: "Client connections upgraded (WebSocket or another protocol) and tunnelled to an endpoint, open now.",
		}),
		handOffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegate_http_loop_handoffs_total",
			Help: "Client connections an event loop handed to the goroutine server, for a request the loops do not serve themselves (a body, an upgrade, HTTP/1.0, a local answer).",
		}),
	}
	for i := range m.upErr {
		m.upErr[i] = m.upErrVec.WithLabelValues(errKindNames[i])
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.upstream, m.badRequests, m.panics, m.upErrVec, m.staleRetries, m.dialRetries, m.upgraded, m.handOffs}
}
