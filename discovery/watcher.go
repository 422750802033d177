package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

// Config configures a Watcher.
type Config struct {
	// Client talks to the API server. Required.
	Client kubernetes.Interface

	// IngressClassName is the IngressClass name served. Default
	// DefaultIngressClassName ("edgegate").
	IngressClassName string

	// Namespaces limits the watched namespaces (Ingresses, Services,
	// EndpointSlices, TLS Secrets; IngressClasses are cluster-scoped and always
	// watched). Empty means all namespaces. Default empty.
	Namespaces []string

	// CoalesceIdle is how long the builder waits for quiet after a change
	// before rebuilding. Default 3ms.
	CoalesceIdle time.Duration

	// CoalesceMax bounds that wait: a rebuild starts at most this long
	// after the first change of a burst. Must not be below CoalesceIdle.
	// Default 20ms.
	CoalesceMax time.Duration

	// Registry holds the live endpoints; every published snapshot's
	// backends are bound through it, and it is told after each publish
	// which addresses are still in use. Default: a private registry with
	// default settings (only useful in tests: the proxy must share it).
	Registry *balancer.Registry

	// OnPublish, if set, is called after each publish with the new
	// snapshot, on the builder goroutine: it must not block for long and
	// must not modify the snapshot. Default nil.
	OnPublish func(*route.Snapshot)

	// Logger receives problems and API server connectivity changes.
	// Default slog.Default().
	Logger *slog.Logger

	// Now returns the current time, for Snapshot.Built, the API server
	// metrics and certificate validity (Input.Now). Default time.Now.
	Now func() time.Time

	// TLS switches HTTPS redirects and ACME (see TLSConfig). Default: all
	// off.
	TLS TLSConfig
}

// Defaults of Config.
const (
	DefaultCoalesceIdle = 3 * time.Millisecond
	DefaultCoalesceMax  = 20 * time.Millisecond
	// probeInterval is how often the API server is probed.
	probeInterval = 5 * time.Second
	// probeTimeout bounds one probe.
	probeTimeout = 2 * time.Second
	// sliceIndex indexes EndpointSlices by "namespace/service".
	sliceIndex = "service"
	// maxExpiryWait bounds the wait for a certificate expiry rebuild.
	maxExpiryWait = 24 * time.Hour
	// lastAppliedAnnotation is dropped from cached objects.
	lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"
)

// scope is the informers of one watched namespace ("" for all).
type scope struct {
	ingresses cache.SharedIndexInformer
	services  cache.SharedIndexInformer
	slices    cache.SharedIndexInformer
	secrets   cache.SharedIndexInformer // kubernetes.io/tls only
}

// Watcher watches the API server and publishes route snapshots. Snapshot and
// Ready may be called from any goroutine at any time.
type Watcher struct {
	cfg       Config
	log       *slog.Logger
	probe     func(context.Context) error
	probeEach time.Duration

	snap      atomic.Pointer[route.Snapshot]
	synced    atomic.Bool
	started   atomic.Bool
	factories []informers.SharedInformerFactory
	scopes    map[string]*scope // by namespace; "" when watching all
	classes   cache.SharedIndexInformer

	// signal wakes the builder; handlers write it without blocking.
	signal chan struct{}
	// mu guards the dirty state the handlers record.
	mu        sync.Mutex
	dirtyAll  bool            // IngressClass changed, or anything a full build must see
	dirtyIngs map[nsName]bool // Ingresses changed
	// dirtySvcs are the Services whose backends must be resolved again:
	// the Service or one of its EndpointSlices changed. A Service reaches
	// the snapshot only through those backends (ResolveEndpoints).
	dirtySvcs map[nsName]bool
	// secretRefs is the reverse index: the Secrets the current snapshot's
	// certificates come from (set after each full build). A change to any
	// other Secret cannot change the snapshot.
	secretRefs map[nsName]bool
	// building is set during a full build; secretsSeen then collects the
	// Secrets changed meanwhile, checked against the new secretRefs once
	// the build is done (the build may have read them before the change).
	building    bool
	secretsSeen map[nsName]bool
	// expiry fires a full build when the earliest certificate of the
	// current snapshot expires (builder goroutine only).
	expiry *time.Timer

	// Builder goroutine state.
	inc      *incState      // left by the last build for incremental Ingress updates
	inUse    map[string]int // address -> number of backends of the current snapshot using it
	problems map[Problem]bool

	// API server connectivity.
	connMu    sync.Mutex
	conn      connState
	downSince time.Time
	watchErrs map[string]string // informer type -> last non-outage error logged

	m metrics
}

type connState int

const (
	connUnknown connState = iota
	connUp
	connDown
)

type metrics struct {
	problems     *prometheus.GaugeVec
	builds       *prometheus.CounterVec
	secretEvents *prometheus.CounterVec
	buildSeconds prometheus.Histogram
	version      prometheus.Gauge
	timestamp    prometheus.Gauge
	synced       prometheus.Gauge
	apiUp        prometheus.Gauge
	lastContact  prometheus.Gauge
}

func newMetrics() metrics {
	m := metrics{
		problems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgegate_config_problems",
			Help: "Problems found in the Kubernetes objects by the last full build, by object kind.",
		}, []string{"kind"}),
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_snapshot_builds_total",
			Help: "Snapshot builds, published or not: full (everything), ingresses (the hosts of changed Ingresses only) or endpoints (the backends of changed Services and EndpointSlices only).",
		}, []string{"kind"}),
		secretEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_secret_events_total",
			Help: "TLS Secret changes seen: rebuild (the snapshot uses the Secret) or ignored.",
		}, []string{"action"}),
		buildSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgegate_snapshot_build_seconds",
			Help:    "Time to build a snapshot, from reading the caches to the publish decision.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgegate_snapshot_version",
			Help: "Version of the published route snapshot.",
		}),
		timestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgegate_snapshot_timestamp_seconds",
			Help: "Unix time the published route snapshot was built; its age is time() minus this.",
		}),
		synced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgegate_informer_synced",
			Help: "1 once the informer caches have synced.",
		}),
		apiUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgegate_apiserver_up",
			Help: "1 while the API server is reachable.",
		}),
		lastContact: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgegate_apiserver_last_contact_timestamp_seconds",
			Help: "Unix time of the last successful contact with the API server.",
		}),
	}
	m.builds.WithLabelValues("full")
	m.builds.WithLabelValues("endpoints")
	m.secretEvents.WithLabelValues("rebuild")
	m.secretEvents.WithLabelValues("ignored")
	return m
}

// New returns a Watcher; nothing runs until Run.
func New(cfg Config) (*Watcher, error) {
	if cfg.Client == nil {
		return nil, errors.New("discovery: Config.Client is required")
	}
	if cfg.IngressClassName == "" {
		cfg.IngressClassName = DefaultIngressClassName
	}
	if cfg.CoalesceIdle <= 0 {
		cfg.CoalesceIdle = DefaultCoalesceIdle
	}
	if cfg.CoalesceMax <= 0 {
		cfg.CoalesceMax = DefaultCoalesceMax
	}
	if cfg.CoalesceMax < cfg.CoalesceIdle {
		return nil, fmt.Errorf("discovery: CoalesceMax %v is below CoalesceIdle %v", cfg.CoalesceMax, cfg.CoalesceIdle)
	}
	if cfg.Registry == nil {
		cfg.Registry = balancer.NewRegistry(balancer.RegistryConfig{})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Watcher{
		cfg:       cfg,
		log:       cfg.Logger,
		probeEach: probeInterval,
		signal:    make(chan struct{}, 1),
		scopes:    make(map[string]*scope),
		inUse:     make(map[string]int),
		problems:  make(map[Problem]bool),
		watchErrs: make(map[string]string),
		m:         newMetrics(),
	}
	w.probe = w.defaultProbe
	if err := w.setupInformers(); err != nil {
		return nil, err
	}
	return w, nil
}

// Collectors returns the Watcher's metrics, for registration by the caller.
func (w *Watcher) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		w.m.problems, w.m.builds, w.m.secretEvents, w.m.buildSeconds, w.m.version, w.m.timestamp,
		w.m.synced, w.m.apiUp, w.m.lastContact,
	}
}

// Snapshot returns the published snapshot, nil before the first publish.
// It is a single atomic load: call it once per request.
func (w *Watcher) Snapshot() *route.Snapshot { return w.snap.Load() }

// Ready reports whether the informers have synced and the first snapshot is
// published, with a reason for operators.
func (w *Watcher) Ready() (bool, string) {
	if !w.synced.Load() {
		return false, "waiting for the informer caches to sync"
	}
	s := w.snap.Load()
	if s == nil {
		return false, "no route snapshot published yet"
	}
	return true, fmt.Sprintf("serving route snapshot version %d", s.Version)
}

// stripObject drops what edgegate never reads and costs memory in the
// caches: managed fields and kubectl's last-applied copy of the object.
func stripObject(obj any) (any, error) {
	a, err := meta.Accessor(obj)
	if err != nil {
		return obj, nil // tombstones and the like
	}
	a.SetManagedFields(nil)
	if ann := a.GetAnnotations(); ann != nil {
		if _, ok := ann[lastAppliedAnnotation]; ok {
			c := make(map[string]string, len(ann)-1)
			for k, v := range ann {
				if k != lastAppliedAnnotation {
					c[k] = v
				}
			}
			a.SetAnnotations(c)
		}
	}
	return obj, nil
}

func sliceServiceKey(obj any) (nsName, bool) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || sl == nil {
		return nsName{}, false
	}
	name := sl.Labels[labelServiceName]
	if name == "" {
		return nsName{}, false
	}
	return nsName{sl.Namespace, name}, true
}

// stripSecret is stripObject for Secrets, which also keeps only tls.crt and
// tls.key (a copy of the data map: the object may be shared).
func stripSecret(obj any) (any, error) {
	if s, ok := obj.(*corev1.Secret); ok && s != nil && len(s.Data) > 0 {
		d := make(map[string][]byte, 2)
		for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
			if v, ok := s.Data[k]; ok {
				d[k] = v
			}
		}
		s.Data = d
		s.StringData = nil
	}
	return stripObject(obj)
}

// tlsSecretsOnly lists and watches only kubernetes.io/tls Secrets.
func tlsSecretsOnly(o *metav1.ListOptions) {
	o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)).String()
}

func (w *Watcher) setupInformers() error {
	opts := []informers.SharedInformerOption{informers.WithTransform(stripObject)}
	nss := slices.Clone(w.cfg.Namespaces)
	slices.Sort(nss)
	nss = slices.Compact(nss)
	if len(nss) == 0 || slices.Contains(nss, "") {
		nss = []string{""}
	}
	var cluster informers.SharedInformerFactory
	for _, ns := range nss {
		o := opts
		if ns != "" {
			o = append(slices.Clone(opts), informers.WithNamespace(ns))
		}
		f := informers.NewSharedInformerFactoryWithOptions(w.cfg.Client, 0, o...)
		w.factories = append(w.factories, f)
		if ns == "" {
			cluster = f
		}
		// Secrets get a factory of their own: the field selector applies
		// to every informer of a factory.
		so := []informers.SharedInformerOption{informers.WithTransform(stripSecret), informers.WithTweakListOptions(tlsSecretsOnly)}
		if ns != "" {
			so = append(so, informers.WithNamespace(ns))
		}
		sf := informers.NewSharedInformerFactoryWithOptions(w.cfg.Client, 0, so...)
		w.factories = append(w.factories, sf)
		sc := &scope{
			ingresses: f.Networking().V1().Ingresses().Informer(),
			services:  f.Core().V1().Services().Informer(),
			slices:    f.Discovery().V1().EndpointSlices().Informer(),
			secrets:   sf.Core().V1().Secrets().Informer(),
		}
		err := sc.slices.AddIndexers(cache.Indexers{sliceIndex: func(obj any) ([]string, error) {
			if k, ok := sliceServiceKey(obj); ok {
				return []string{k.ns + "/" + k.name}, nil
			}
			return nil, nil
		}})
		if err != nil {
			return fmt.Errorf("discovery: endpointslice index: %w", err)
		}
		w.scopes[ns] = sc
	}
	if cluster == nil {
		cluster = informers.NewSharedInformerFactoryWithOptions(w.cfg.Client, 0, opts...)
		w.factories = append(w.factories, cluster)
	}
	w.classes = cluster.Networking().V1().IngressClasses().Informer()

	all := []cache.SharedIndexInformer{w.classes}
	for _, ns := range nss {
		sc := w.scopes[ns]
		all = append(all, sc.ingresses, sc.services, sc.slices, sc.secrets)
		if err := addHandler(sc.services, w.onService); err != nil {
			return err
		}
		if err := addHandler(sc.secrets, w.onSecret); err != nil {
			return err
		}
		if err := addHandler(sc.slices, w.onSlice); err != nil {
			return err
		}
		if err := addHandler(sc.ingresses, w.onIngress); err != nil {
			return err
		}
	}
	if err := addHandler(w.classes, w.onRoutes); err != nil {
		return err
	}
	for _, inf := range all {
		if err := inf.SetWatchErrorHandler(w.onWatchError); err != nil {
			return fmt.Errorf("discovery: watch error handler: %w", err)
		}
	}
	return nil
}

// addHandler registers on for changes: objects of the initial list are
// skipped (the first build reads the synced caches), and so are updates
// that do not change the resourceVersion (resyncs, no-op writes; an empty
// resourceVersion, which only fakes produce, counts as a change).
func addHandler(inf cache.SharedIndexInformer, on func(objs ...any)) error {
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			if !initial {
				on(obj)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, err1 := meta.Accessor(oldObj)
			n, err2 := meta.Accessor(newObj)
			if err1 == nil && err2 == nil && o.GetResourceVersion() != "" && o.GetResourceVersion() == n.GetResourceVersion() {
				return
			}
			on(oldObj, newObj)
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			on(obj)
		},
	})
	if err != nil {
		return fmt.Errorf("discovery: add event handler: %w", err)
	}
	return nil
}

// wake signals the builder without blocking.
func (w *Watcher) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *Watcher) onRoutes(...any) {
	w.mu.Lock()
	w.dirtyAll = true
	w.mu.Unlock()
	w.wake()
}

func (w *Watcher) onIngress(objs ...any) {
	w.mu.Lock()
	for _, o := range objs {
		ing, ok := o.(*netv1.Ingress)
		if !ok || ing == nil {
			w.dirtyAll = true // unknown tombstone: be safe
			continue
		}
		if w.dirtyIngs == nil {
			w.dirtyIngs = make(map[nsName]bool)
		}
		w.dirtyIngs[nsName{ing.Namespace, ing.Name}] = true
	}
	w.mu.Unlock()
	w.wake()
}

func (w *Watcher) onService(objs ...any) {
	w.mu.Lock()
	for _, o := range objs {
		s, ok := o.(*corev1.Service)
		if !ok || s == nil {
			w.dirtyAll = true // unknown tombstone: be safe
			continue
		}
		if w.dirtySvcs == nil {
			w.dirtySvcs = make(map[nsName]bool)
		}
		w.dirtySvcs[nsName{s.Namespace, s.Name}] = true
	}
	w.mu.Unlock()
	w.wake()
}

func (w *Watcher) onSlice(objs ...any) {
	w.mu.Lock()
	for _, o := range objs {
		if _, isSlice := o.(*discoveryv1.EndpointSlice); !isSlice {
			w.dirtyAll = true // unknown tombstone: be safe
			continue
		}
		if k, ok := sliceServiceKey(o); ok {
			if w.dirtySvcs == nil {
				w.dirtySvcs = make(map[nsName]bool)
			}
			w.dirtySvcs[k] = true
		}
	}
	w.mu.Unlock()
	w.wake()
}

// onSecret rebuilds only for the Secrets the current snapshot uses (by
// namespace/name, so a referenced Secret that was missing and is now created
// counts too).
func (w *Watcher) onSecret(objs ...any) {
	w.mu.Lock()
	dirty := false
	for _, o := range objs {
		a, err := meta.Accessor(o)
		if err != nil {
			dirty = true // unknown tombstone: be safe
			continue
		}
		k := nsName{a.GetNamespace(), a.GetName()}
		if w.building {
			if w.secretsSeen == nil {
				w.secretsSeen = make(map[nsName]bool)
			}
			w.secretsSeen[k] = true
		}
		if w.secretRefs[k] {
			dirty = true
		}
	}
	if dirty {
		w.dirtyAll = true
	}
	w.mu.Unlock()
	if dirty {
		w.m.secretEvents.WithLabelValues("rebuild").Inc()
		w.wake()
	} else {
		w.m.secretEvents.WithLabelValues("ignored").Inc()
	}
}

// Run starts the informers, waits for their caches to sync, publishes the
// first snapshot and then rebuilds on every (coalesced) change until ctx is
// done. While the API server is unreachable the informers retry with
// backoff on their own and the current snapshot keeps serving. Run returns
// nil when ctx is done, and an error only when it cannot start (it may be
// called once).
func (w *Watcher) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("discovery: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		for _, f := range w.factories {
			f.Shutdown()
		}
		wg.Wait()
	}()
	for _, f := range w.factories {
		f.Start(ctx.Done())
	}
	wg.Go(func() { w.probeLoop(ctx) })

	synced := []cache.InformerSynced{w.classes.HasSynced}
	for _, sc := range w.scopes {
		synced = append(synced, sc.ingresses.HasSynced, sc.services.HasSynced, sc.slices.HasSynced, sc.secrets.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx done
	}
	w.synced.Store(true)
	w.m.synced.Set(1)
	w.markUp()

	// The first build reads everything: what the handlers recorded so far
	// is covered by it.
	w.mu.Lock()
	w.dirtyAll, w.dirtyIngs, w.dirtySvcs = false, nil, nil
	w.mu.Unlock()
	defer func() {
		if w.expiry != nil {
			w.expiry.Stop()
		}
	}()
	w.buildFull(nil)
	w.log.Info("route snapshot published", "version", w.snap.Load().Version)

	coalesce(ctx, w.signal, w.cfg.CoalesceIdle, w.cfg.CoalesceMax, w.rebuild)
	return nil
}

// rebuild runs on the builder goroutine after a burst of changes.
func (w *Watcher) rebuild() {
	w.mu.Lock()
	all, ings, svcs := w.dirtyAll, w.dirtyIngs, w.dirtySvcs
	w.dirtyAll, w.dirtyIngs, w.dirtySvcs = false, nil, nil
	w.mu.Unlock()

	cur := w.snap.Load()
	if all || cur == nil || w.inc == nil {
		w.buildFull(cur)
		return
	}
	if len(ings) > 0 {
		if !w.buildIngresses(cur, ings) {
			w.buildFull(cur)
			return
		}
		cur = w.snap.Load()
	}
	// The endpoint path takes a full build itself when a backend's error
	// (and with it the Problems) changes.
	if len(svcs) > 0 {
		w.buildEndpoints(cur, svcs)
	}
}

// buildIngresses applies the changes of the Ingresses in keys by
// rebuilding only the hosts they name (see incState). It reports false,
// having changed nothing, when the change needs a full build.
func (w *Watcher) buildIngresses(cur *route.Snapshot, keys map[nsName]bool) (ok bool) {
	start := time.Now()
	list := make([]nsName, 0, len(keys))
	for k := range keys {
		list = append(list, k)
	}
	get := func(k nsName) *netv1.Ingress {
		sc := w.scopeOf(k.ns)
		if sc == nil {
			return nil
		}
		o, found, err := sc.ingresses.GetStore().GetByKey(k.ns + "/" + k.name)
		if err != nil || !found {
			return nil
		}
		ing, _ := o.(*netv1.Ingress)
		return ing
	}
	resolve := func(k backendKey) ([]string, string) {
		svc, sls := w.serviceAndSlices(nsName{k.ns, k.svc})
		return ResolveEndpoints(k.ns, k.svc, k.port, svc, sls)
	}
	var next *route.Snapshot
	var problems []Problem
	func() {
		// The incremental path is new code over arbitrary input: should it
		// ever panic, a full build (which starts a fresh state) takes over.
		defer func() {
			if r := recover(); r != nil {
				w.log.Error("incremental ingress update failed; rebuilding everything", "panic", fmt.Sprint(r))
				w.inc, ok = nil, false
			}
		}()
		next, problems, ok = w.inc.applyIngresses(cur, list, get, resolve)
	}()
	if !ok {
		return false
	}
	w.m.builds.WithLabelValues("ingresses").Inc()
	w.reportProblems(problems)
	published := next != cur && w.publish(cur, next, changedSlots(cur, next))
	w.m.buildSeconds.Observe(time.Since(start).Seconds())
	if published {
		w.log.Debug("route snapshot published", "version", next.Version, "build", "ingresses", "ingresses", len(list))
	}
	return true
}

// changedSlots lists the backend indexes whose backend differs between cur
// and next (never nil: publish reads nil as "all").
func changedSlots(cur, next *route.Snapshot) []int {
	changed := []int{}
	for i := range max(len(cur.Backends), len(next.Backends)) {
		var a, b *route.Backend
		if i < len(cur.Backends) {
			a = cur.Backends[i]
		}
		if i < len(next.Backends) {
			b = next.Backends[i]
		}
		if a != b {
			changed = append(changed, i)
		}
	}
	return changed
}

// input reads every watched object from the caches.
func (w *Watcher) input() Input {
	in := Input{IngressClassName: w.cfg.IngressClassName, TLS: w.cfg.TLS, Now: w.cfg.Now()}
	for _, o := range w.classes.GetStore().List() {
		if c, ok := o.(*netv1.IngressClass); ok {
			in.Classes = append(in.Classes, c)
		}
	}
	for _, sc := range w.scopes {
		for _, o := range sc.ingresses.GetStore().List() {
			if x, ok := o.(*netv1.Ingress); ok {
				in.Ingresses = append(in.Ingresses, x)
			}
		}
		for _, o := range sc.services.GetStore().List() {
			if x, ok := o.(*corev1.Service); ok {
				in.Services = append(in.Services, x)
			}
		}
		for _, o := range sc.slices.GetStore().List() {
			if x, ok := o.(*discoveryv1.EndpointSlice); ok {
				in.Slices = append(in.Slices, x)
			}
		}
		for _, o := range sc.secrets.GetStore().List() {
			if x, ok := o.(*corev1.Secret); ok {
				in.Secrets = append(in.Secrets, x)
			}
		}
	}
	return in
}

func (w *Watcher) scopeOf(ns string) *scope {
	if sc, ok := w.scopes[""]; ok {
		return sc
	}
	return w.scopes[ns]
}

// serviceAndSlices reads one Service and its EndpointSlices from the caches.
func (w *Watcher) serviceAndSlices(k nsName) (*corev1.Service, []*discoveryv1.EndpointSlice) {
	sc := w.scopeOf(k.ns)
	if sc == nil {
		return nil, nil
	}
	var svc *corev1.Service
	if o, ok, err := sc.services.GetStore().GetByKey(k.ns + "/" + k.name); err == nil && ok {
		svc, _ = o.(*corev1.Service)
	}
	objs, _ := sc.slices.GetIndexer().ByIndex(sliceIndex, k.ns+"/"+k.name)
	sls := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if sl, ok := o.(*discoveryv1.EndpointSlice); ok {
			sls = append(sls, sl)
		}
	}
	return svc, sls
}

func (w *Watcher) buildFull(cur *route.Snapshot) {
	start := time.Now()
	w.m.builds.WithLabelValues("full").Inc()
	w.mu.Lock()
	w.building, w.secretsSeen = true, nil
	w.mu.Unlock()
	in := w.input()
	next, problems, st := build(in, true)
	w.inc = st
	w.setSecretRefs(next)
	w.scheduleExpiry(next, in.Now)
	w.reportProblems(problems)
	published := w.publish(cur, next, nil)
	if !published && cur != nil {
		// Same content, but the snapshot that keeps serving is cur, whose
		// backends may sit in other slots than next's.
		st.rebase(cur)
	}
	w.m.buildSeconds.Observe(time.Since(start).Seconds())
	if published {
		w.log.Debug("route snapshot published", "version", next.Version, "build", "full")
	}
}

// setSecretRefs makes the Secrets next uses the reverse index, and marks
// everything dirty when one of them changed during the build.
func (w *Watcher) setSecretRefs(next *route.Snapshot) {
	refs := make(map[nsName]bool)
	for _, h := range next.TLSHosts() {
		if c := next.Certificate(h); c != nil {
			refs[nsName{c.Secret.Namespace, c.Secret.Name}] = true
		}
	}
	w.mu.Lock()
	w.secretRefs = refs
	missed := false
	for k := range w.secretsSeen {
		missed = missed || refs[k]
	}
	w.building, w.secretsSeen = false, nil
	if missed {
		w.dirtyAll = true
	}
	w.mu.Unlock()
	if missed {
		w.wake()
	}
}

// scheduleExpiry arranges a full build when the first usable certificate
// of next expires, so that it is published with its Error.
func (w *Watcher) scheduleExpiry(next *route.Snapshot, now time.Time) {
	var first time.Time
	for _, h := range next.TLSHosts() {
		c := next.Certificate(h)
		if c == nil || c.Error != "" || c.NotAfter.IsZero() || !c.NotAfter.After(now) {
			continue
		}
		if first.IsZero() || c.NotAfter.Before(first) {
			first = c.NotAfter
		}
	}
	if w.expiry != nil {
		w.expiry.Stop()
		w.expiry = nil
	}
	if first.IsZero() {
		return
	}
	// Just after NotAfter (Build treats a certificate as expired once now
	// is after it), and at least daily: far-off dates overflow a Duration,
	// and an extra build that changes nothing publishes nothing.
	d := min(first.Sub(now), maxExpiryWait) + time.Second
	w.expiry = time.AfterFunc(d, func() { w.onRoutes() })
}

// buildEndpoints re-resolves the backends of the Services in svcs (their
// EndpointSlices or the Service itself changed), sharing everything else
// with cur. When a backend's error changes (its Service or port appeared or
// vanished) it falls back to a full build so the Problems stay accurate.
func (w *Watcher) buildEndpoints(cur *route.Snapshot, svcs map[nsName]bool) {
	start := time.Now()
	w.m.builds.WithLabelValues("endpoints").Inc()
	var backends []*route.Backend
	var changed []int
	for k := range svcs {
		if len(cur.BackendsOf(k.ns, k.name)) == 0 {
			continue
		}
		svc, sls := w.serviceAndSlices(k)
		var full bool
		backends, changed, full = reresolve(cur, k, svc, sls, backends, changed)
		if full {
			w.m.buildSeconds.Observe(time.Since(start).Seconds())
			w.buildFull(cur)
			return
		}
	}
	published := false
	if len(changed) > 0 {
		published = w.publish(cur, cur.WithBackends(backends), changed)
	}
	w.m.buildSeconds.Observe(time.Since(start).Seconds())
	if published {
		w.log.Debug("route snapshot published", "version", w.snap.Load().Version, "build", "endpoints", "backends", len(changed))
	}
}

// reresolve is the pure, cache-free half of buildEndpoints: it resolves the
// backends of cur that use the Service k again, against svc (nil when it does
// not exist) and the EndpointSlices sls of that Service. Each backend whose
// addresses changed is replaced in backends by a new, unbound Backend, and
// its index is appended to changed; backends is cloned from cur.Backends on
// the first change when it is nil, so cur is never modified. Its cost is that
// of resolving the Service plus, once per call sequence, a copy of the
// backend pointers: it never touches the route tables.
//
// full reports that a backend's Error changed (its Service or port appeared
// or vanished): only a full build keeps the Problems accurate then, and
// backends and changed must be discarded.
func reresolve(cur *route.Snapshot, k nsName, svc *corev1.Service, sls []*discoveryv1.EndpointSlice,
	backends []*route.Backend, changed []int) (_ []*route.Backend, _ []int, full bool) {
	for _, i := range cur.BackendsOf(k.ns, k.name) {
		old := cur.Backends[i]
		addrs, errMsg := ResolveEndpoints(old.Namespace, old.Service, old.Port, svc, sls)
		if errMsg != old.Error {
			return backends, changed, true
		}
		if slices.Equal(addrs, old.Addrs) {
			continue
		}
		if backends == nil {
			backends = slices.Clone(cur.Backends)
		}
		backends[i] = &route.Backend{
			Namespace: old.Namespace, Service: old.Service, Port: old.Port,
			Error: old.Error, Addrs: addrs,
		}
		changed = append(changed, i)
	}
	return backends, changed, false
}

// publish binds and publishes next unless its hash equals cur's. changed
// lists the backend indexes that differ from cur (nil: all of them).
func (w *Watcher) publish(cur, next *route.Snapshot, changed []int) bool {
	if cur != nil && next.Hash() == cur.Hash() {
		return false
	}
	// The backends that differ from cur's: on a full build, every backend
	// equal to one of cur's is replaced by cur's (keeping its endpoints
	// and round-robin position), so only the rest are bound and counted.
	var added, removed []*route.Backend
	switch {
	case cur == nil:
		added = next.Backends
	case changed == nil:
		added, removed = reuseBackends(cur, next)
	default:
		for _, i := range changed {
			if i < len(next.Backends) && next.Backends[i] != nil {
				added = append(added, next.Backends[i])
			}
			if i < len(cur.Backends) && cur.Backends[i] != nil {
				removed = append(removed, cur.Backends[i])
			}
		}
	}
	for _, b := range added {
		b.Bind(w.cfg.Registry)
	}
	next.Version = 1
	if cur != nil {
		next.Version = cur.Version + 1
	}
	next.Built = w.cfg.Now()
	w.snap.Store(next)

	// Addresses in use, adjusted by what changed; only the addresses whose
	// count fell to zero are released: a change costs what changed,
	// whatever the table's size.
	var gone []string
	for _, b := range removed {
		for _, a := range b.Addrs {
			if w.inUse[a]--; w.inUse[a] <= 0 {
				gone = append(gone, a)
			}
		}
	}
	for _, b := range added {
		for _, a := range b.Addrs {
			w.inUse[a]++
		}
	}
	// An address can move between two changed backends: release only what
	// no backend uses after all of the adjustments.
	released := gone[:0]
	for _, a := range gone {
		if w.inUse[a] <= 0 {
			delete(w.inUse, a)
			released = append(released, a)
		}
	}
	w.cfg.Registry.Release(released)
	w.cfg.Registry.Sweep()

	w.m.version.Set(float64(next.Version))
	w.m.timestamp.Set(float64(next.Built.UnixNano()) / 1e9)
	if w.cfg.OnPublish != nil {
		w.cfg.OnPublish(next)
	}
	return true
}

// reuseBackends replaces each backend of next that equals one of cur's
// (same Service port, error and addresses) with cur's, so its bound
// endpoints and round-robin position carry over a full rebuild (an Ingress
// change must not restart every backend's rotation). It returns next's
// backends that are new and cur's that next no longer holds. The hashes
// stay valid: a replaced backend has the same content.
func reuseBackends(cur, next *route.Snapshot) (added, removed []*route.Backend) {
	kept := make(map[*route.Backend]bool)
	for i, b := range next.Backends {
		if b == nil {
			continue
		}
		var old *route.Backend
		for _, j := range cur.BackendsOf(b.Namespace, b.Service) {
			if o := cur.Backends[j]; o.Port == b.Port {
				old = o
				break
			}
		}
		if old != nil && old.Error == b.Error && slices.Equal(old.Addrs, b.Addrs) {
			next.Backends[i] = old
			kept[old] = true
			continue
		}
		added = append(added, b)
	}
	for _, o := range cur.Backends {
		if o != nil && !kept[o] {
			removed = append(removed, o)
		}
	}
	return added, removed
}

// reportProblems logs the problems not reported by the previous build and
// the ones that went away, and updates the gauge.
func (w *Watcher) reportProblems(ps []Problem) {
	now := make(map[Problem]bool, len(ps))
	counts := make(map[string]int)
	for _, p := range ps {
		now[p] = true
		counts[p.Kind]++
		if !w.problems[p] {
			w.log.Warn("config problem", p.attr(), "kind", p.Kind, "namespace", p.Namespace, "name", p.Name, "error", p.Msg)
		}
	}
	var gone []Problem
	for p := range w.problems {
		if !now[p] {
			gone = append(gone, p)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return compareProblems(gone[i], gone[j]) < 0 })
	for _, p := range gone {
		w.log.Info("config problem resolved", p.attr(), "kind", p.Kind, "namespace", p.Namespace, "name", p.Name, "error", p.Msg)
	}
	w.problems = now
	for _, k := range []string{KindIngress, KindIngressClass} {
		w.m.problems.WithLabelValues(k).Set(float64(counts[k]))
	}
}

// attr names the object as operators grep for it: ingress=namespace/name,
// ingressclass=name.
func (p Problem) attr() slog.Attr {
	ref := p.Name
	if p.Namespace != "" {
		ref = p.Namespace + "/" + p.Name
	}
	return slog.String(strings.ToLower(p.Kind), ref)
}

// onWatchError is every informer's watch error handler: called on each
// failed list or watch, before the informer's own backoff and retry.
func (w *Watcher) onWatchError(r *cache.Reflector, err error) {
	switch {
	case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
		// Routine: the informer relists.
		w.log.Debug("watch expired, relisting", "informer", r.TypeDescription(), "error", err)
	case isRejection(err):
		// The API server answered, but refused (RBAC, a missing API):
		// not an outage, and not worth a line per retry.
		w.connMu.Lock()
		first := w.watchErrs[r.TypeDescription()] != err.Error()
		w.watchErrs[r.TypeDescription()] = err.Error()
		w.connMu.Unlock()
		if first {
			w.log.Error("api server refused watch", "informer", r.TypeDescription(), "error", err)
		}
	default:
		w.markDown(err)
	}
}

// isRejection reports an API error status other than a server-side or
// throttling failure.
func isRejection(err error) bool {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return false
	}
	code := st.Status().Code
	return code >= 400 && code < 500 && code != 429 && code != 408
}

func (w *Watcher) markDown(err error) {
	w.m.apiUp.Set(0)
	w.connMu.Lock()
	defer w.connMu.Unlock()
	if w.conn == connDown {
		w.log.Debug("api server still unreachable", "error", err)
		return
	}
	w.conn = connDown
	w.downSince = w.cfg.Now()
	if s := w.snap.Load(); s != nil {
		w.log.Warn("api server unreachable, serving last snapshot", "error", err,
			"snapshot_version", s.Version, "snapshot_age", w.cfg.Now().Sub(s.Built).Round(time.Millisecond))
	} else {
		w.log.Warn("api server unreachable, no snapshot yet", "error", err)
	}
}

func (w *Watcher) markUp() {
	now := w.cfg.Now()
	w.m.apiUp.Set(1)
	w.m.lastContact.Set(float64(now.UnixNano()) / 1e9)
	w.connMu.Lock()
	defer w.connMu.Unlock()
	if w.conn == connDown {
		w.log.Info("api server reachable again", "down_for", now.Sub(w.downSince).Round(time.Millisecond))
		clear(w.watchErrs)
	}
	w.conn = connUp
}

func (w *Watcher) probeLoop(ctx context.Context) {
	t := time.NewTicker(w.probeEach)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := w.probe(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !isRejection(err):
			w.markDown(err)
		default: // an answer, even a refusal, is contact
			w.markUp()
		}
	}
}

// defaultProbe asks the API server's /readyz, or its version when the
// client has no REST client (fakes).
func (w *Watcher) defaultProbe(ctx context.Context) error {
	d := w.cfg.Client.Discovery()
	if rc := d.RESTClient(); rc != nil && !isNilPtr(rc) {
		return rc.Get().AbsPath("/readyz").Do(ctx).Error()
	}
	_, err := d.ServerVersion()
	return err
}

func isNilPtr(rc rest.Interface) bool {
	v := reflect.ValueOf(rc)
	return v.Kind() == reflect.Pointer && v.IsNil()
}
