package discovery

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testIngress(ns, name, host, svc string) *netv1.Ingress {
	pt := netv1.PathTypePrefix
	return &netv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.Unix(1, 0)},
		Spec: netv1.IngressSpec{
			IngressClassName: ptr("edgegate"),
			Rules: []netv1.IngressRule{{Host: host, IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{
				Paths: []netv1.HTTPIngressPath{{Path: "/", PathType: &pt, Backend: netv1.IngressBackend{
					Service: &netv1.IngressServiceBackend{Name: svc, Port: netv1.ServiceBackendPort{Number: 80}},
				}}},
			}}}},
		},
	}
}

// ourClass is the IngressClass testIngress names, with our controller.
func ourClass() *netv1.IngressClass {
	return &netv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultIngressClassName},
		Spec:       netv1.IngressClassSpec{Controller: ControllerName},
	}
}

func testService(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
}

func testSlice(ns, name, svc string, addrs ...string) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{labelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
	}
	for _, a := range addrs {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return sl
}

type harness struct {
	w      *Watcher
	client *fake.Clientset
	reg    *balancer.Registry
	logs   *syncBuffer
	pubs   atomic.Int64
	errc   chan error
}

// start runs a Watcher on a fake clientset holding objs and waits until it
// is ready and every informer's watch is established (the fake API server
// drops events sent before that).
func start(t *testing.T, cfg Config, objs ...runtime.Object) *harness {
	t.Helper()
	h := &harness{client: fake.NewClientset(objs...), logs: &syncBuffer{}, errc: make(chan error, 1)}
	var watches atomic.Int32
	h.client.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		wi, err := h.client.Tracker().Watch(action.GetResource(), action.GetNamespace())
		if err != nil {
			return false, nil, err
		}
		watches.Add(1)
		return true, wi, nil
	})
	h.reg = balancer.NewRegistry(balancer.RegistryConfig{})
	cfg.Client = h.client
	cfg.Registry = h.reg
	cfg.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.OnPublish = func(*route.Snapshot) { h.pubs.Add(1) }
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	if ok, _ := w.Ready(); ok || w.Snapshot() != nil {
		t.Fatal("ready before Run")
	}
	ctx, cancel := context.WithCancel(t.Context())
	go func() { h.errc <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-h.errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	want := int32(1 + 4*len(w.scopes))
	waitFor(t, "ready and watching", func() bool {
		ok, _ := w.Ready()
		return ok && watches.Load() >= want
	})
	return h
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (h *harness) builds(kind string) float64 {
	return testutil.ToFloat64(h.w.m.builds.WithLabelValues(kind))
}

func match(s *route.Snapshot, host string) *route.Route {
	return s.Match([]byte(host), []byte("/"))
}

func TestWatcherInitialPublish(t *testing.T) {
	t.Parallel()
	h := start(t, Config{}, ourClass(),
		testIngress("shop", "web", "shop.example.com", "web"),
		testService("shop", "web"),
		testSlice("shop", "web-1", "web", "10.0.0.1", "10.0.0.2"),
		// another class: ignored
		&netv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "nginx"}, Spec: netv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}},
	)
	s := h.w.Snapshot()
	if s.Version != 1 || s.Built.IsZero() {
		t.Fatalf("first snapshot version %d built %v", s.Version, s.Built)
	}
	r := match(s, "shop.example.com")
	if r == nil {
		t.Fatal("no route for shop.example.com")
	}
	b := s.Backends[r.Backend]
	if len(b.Endpoints) != 2 || b.Endpoints[0].Addr != "10.0.0.1:8080" || b.Endpoints[1].Addr != "10.0.0.2:8080" {
		t.Fatalf("backend endpoints not bound: %+v", b)
	}
	if got := h.reg.Len(); got != 2 {
		t.Fatalf("registry has %d endpoints, want 2", got)
	}
	if ok, msg := h.w.Ready(); !ok || msg == "" {
		t.Fatalf("Ready() = %v, %q", ok, msg)
	}
	if testutil.ToFloat64(h.w.m.synced) != 1 || testutil.ToFloat64(h.w.m.version) != 1 || testutil.ToFloat64(h.w.m.apiUp) != 1 {
		t.Fatal("synced, version or apiserver_up gauge not set")
	}
	if h.pubs.Load() != 1 {
		t.Fatalf("OnPublish called %d times, want 1", h.pubs.Load())
	}
}

func TestWatcherIngressAdd(t *testing.T) {
	t.Parallel()
	h := start(t, Config{}, ourClass(), testService("default", "web"), testSlice("default", "web-1", "web", "10.0.0.1"))
	if got := len(h.w.Snapshot().Hosts()); got != 0 {
		t.Fatalf("%d host tables before any Ingress", got)
	}
	ctx := t.Context()
	if _, err := h.client.NetworkingV1().Ingresses("default").Create(ctx, testIngress("default", "web", "a.example.com", "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Ingress in a snapshot", func() bool { return match(h.w.Snapshot(), "a.example.com") != nil })
	s := h.w.Snapshot()
	if s.Version != 2 {
		t.Fatalf("version %d, want 2", s.Version)
	}
	if b := s.Backends[match(s, "a.example.com").Backend]; len(b.Endpoints) != 1 {
		t.Fatalf("backend not bound: %+v", b)
	}

	// Deleting it removes the route.
	if err := h.client.NetworkingV1().Ingresses("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Ingress gone", func() bool { return match(h.w.Snapshot(), "a.example.com") == nil })
	if full := h.builds("full"); full != 1 {
		t.Errorf("%v full builds, want only the first: adding and deleting a plain Ingress rebuilds only its hosts", full)
	}
	if n := h.builds("ingresses"); n < 2 {
		t.Errorf("%v ingresses builds, want 2", n)
	}
	if s := h.w.Snapshot(); len(s.Backends) != 1 || s.Backends[0] != nil || len(s.BackendsOf("default", "web")) != 0 {
		t.Errorf("backend of the deleted Ingress not freed: %d slots, BackendsOf %v", len(s.Backends), s.BackendsOf("default", "web"))
	}
	// An endpoint change after the delete builds nothing.
	pubs := h.pubs.Load()
	if _, err := h.client.DiscoveryV1().EndpointSlices("default").Update(ctx, testSlice("default", "web-1", "web", "10.0.0.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eps := h.builds("endpoints")
	waitFor(t, "an endpoints build", func() bool { return h.builds("endpoints") > eps })
	if h.pubs.Load() != pubs {
		t.Error("an endpoint change of a Service no route uses published a snapshot")
	}
}

// TestWatcherIngressTLSFull: an Ingress change that touches TLS takes a full
// build (certificates, redirects and ACME hosts are not per host), and a
// later rules-only change of the same Ingress is incremental again.
func TestWatcherIngressTLSFull(t *testing.T) {
	t.Parallel()
	h := start(t, Config{TLS: TLSConfig{Redirect: true}}, ourClass(), testService("default", "web"), testSlice("default", "web-1", "web", "10.0.0.1"),
		testIngress("default", "plain", "b.example.com", "web"))
	ctx := t.Context()
	ing := testIngress("default", "web", "a.example.com", "web")
	ing.Spec.TLS = []netv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "missing"}}
	full := h.builds("full")
	if _, err := h.client.NetworkingV1().Ingresses("default").Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the TLS Ingress routed", func() bool {
		r := match(h.w.Snapshot(), "a.example.com")
		return r != nil && r.RedirectHTTPS
	})
	if h.builds("full") <= full {
		t.Fatal("adding an Ingress with spec.tls did not take a full build")
	}
	// A new path on it: incremental, and the redirect holds.
	full, incr := h.builds("full"), h.builds("ingresses")
	ing = ing.DeepCopy()
	ing.ResourceVersion = "7"
	ing.Spec.Rules[0].HTTP.Paths = append(ing.Spec.Rules[0].HTTP.Paths, netv1.HTTPIngressPath{
		Path: "/v2", PathType: ptr(netv1.PathTypePrefix), Backend: ing.Spec.Rules[0].HTTP.Paths[0].Backend,
	})
	if _, err := h.client.NetworkingV1().Ingresses("default").Update(ctx, ing, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new path", func() bool {
		r := h.w.Snapshot().Match([]byte("a.example.com"), []byte("/v2/x"))
		return r != nil && r.Path == "/v2" && r.RedirectHTTPS
	})
	if h.builds("full") != full || h.builds("ingresses") <= incr {
		t.Errorf("builds full %v -> %v, ingresses %v -> %v: want one ingresses build and no full one",
			full, h.builds("full"), incr, h.builds("ingresses"))
	}
	if r := match(h.w.Snapshot(), "b.example.com"); r == nil || r.RedirectHTTPS {
		t.Errorf("b.example.com (no TLS) route %+v, want routed without redirect", r)
	}
}

func TestWatcherEndpointsOnly(t *testing.T) {
	t.Parallel()
	h := start(t, Config{}, ourClass(),
		testIngress("default", "web", "a.example.com", "web"),
		testIngress("default", "other", "b.example.com", "other"),
		testService("default", "web"),
		testService("default", "other"),
		testSlice("default", "web-1", "web", "10.0.0.1"),
		testSlice("default", "other-1", "other", "10.0.1.1"),
	)
	s1 := h.w.Snapshot()
	full := h.builds("full")

	sl := testSlice("default", "web-1", "web", "10.0.0.1", "10.0.0.2")
	if _, err := h.client.DiscoveryV1().EndpointSlices("default").Update(t.Context(), sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new endpoint", func() bool {
		s := h.w.Snapshot()
		return len(s.Backends[match(s, "a.example.com").Backend].Addrs) == 2
	})
	s2 := h.w.Snapshot()
	if s2.Version != s1.Version+1 {
		t.Fatalf("version %d after %d", s2.Version, s1.Version)
	}
	if h.builds("endpoints") < 1 || h.builds("full") != full {
		t.Fatalf("builds: endpoints %v, full %v (was %v): want an endpoints build only", h.builds("endpoints"), h.builds("full"), full)
	}
	// Route tables are shared, and so is the untouched backend.
	if len(s1.Hosts()) != len(s2.Hosts()) || &s1.Hosts()[0] != &s2.Hosts()[0] {
		t.Fatal("route tables were rebuilt")
	}
	ob := match(s1, "b.example.com").Backend
	if s1.Backends[ob] != s2.Backends[ob] {
		t.Fatal("unchanged backend was replaced")
	}
	nb := s2.Backends[match(s2, "a.example.com").Backend]
	if len(nb.Endpoints) != 2 || nb.Endpoints[1].Addr != "10.0.0.2:8080" {
		t.Fatalf("new backend not bound: %+v", nb)
	}
	if s1.Hash() == s2.Hash() {
		t.Fatal("hash unchanged")
	}

	// The endpoints path agrees with a full Build of the same objects.
	want, _ := Build(h.w.input())
	if want.Hash() != s2.Hash() {
		t.Fatal("endpoints update differs from a full build")
	}

	// A slice of a Service no route uses builds nothing new.
	v := h.w.Snapshot().Version
	if _, err := h.client.DiscoveryV1().EndpointSlices("default").Create(t.Context(), testSlice("default", "x-1", "unused", "10.9.9.9"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eps := h.builds("endpoints")
	waitFor(t, "an endpoints build", func() bool { return h.builds("endpoints") > eps })
	if h.w.Snapshot().Version != v {
		t.Fatal("published for an unused Service")
	}
}

// TestWatcherDrainingFallback: through the endpoint path, a Service whose
// endpoints are all terminating keeps its serving ones (kube-proxy's
// fallback) until a ready endpoint appears, in any of its slices; with
// neither it has none.
func TestWatcherDrainingFallback(t *testing.T) {
	t.Parallel()
	h := start(t, Config{}, ourClass(), testIngress("default", "web", "a.example.com", "web"), testService("default", "web"),
		testSlice("default", "web-1", "web", "10.0.0.1", "10.0.0.2"))
	ctx := t.Context()
	eps := h.client.DiscoveryV1().EndpointSlices("default")
	addrs := func() []string {
		s := h.w.Snapshot()
		if r := match(s, "a.example.com"); r != nil {
			return s.Backends[r.Backend].Addrs
		}
		return nil
	}
	is := func(want ...string) func() bool {
		return func() bool { return strings.Join(addrs(), ",") == strings.Join(want, ",") }
	}
	full := h.builds("full")
	rv := 1
	write := func(sl *discoveryv1.EndpointSlice, create bool) {
		t.Helper()
		rv++
		sl.ResourceVersion = strconv.Itoa(rv)
		var err error
		if create {
			_, err = eps.Create(ctx, sl, metav1.CreateOptions{})
		} else {
			_, err = eps.Update(ctx, sl, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	draining := discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}
	gone := discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(false), Terminating: ptr(true)}

	// A rolling update's last pods drain: both terminating, one still serving.
	sl := testSlice("default", "web-1", "web", "10.0.0.1", "10.0.0.2")
	sl.Endpoints[0].Conditions = draining
	sl.Endpoints[1].Conditions = gone
	write(sl, false)
	waitFor(t, "the serving terminating endpoint only", is("10.0.0.1:8080"))

	// A new pod becomes ready in another slice: it alone gets new requests.
	write(testSlice("default", "web-2", "web", "10.0.0.3"), true)
	waitFor(t, "the ready endpoint only", is("10.0.0.3:8080"))

	// It goes away again, and the draining one stops serving: none.
	if err := eps.Delete(ctx, "web-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the fallback again", is("10.0.0.1:8080"))
	sl = sl.DeepCopy()
	sl.Endpoints[0].Conditions = gone
	write(sl, false)
	waitFor(t, "no endpoint", is())
	if h.builds("full") != full {
		t.Errorf("endpoint changes took %v full builds", h.builds("full")-full)
	}
}

func TestWatcherUnchangedHash(t *testing.T) {
	t.Parallel()
	ing := testIngress("default", "web", "a.example.com", "web")
	h := start(t, Config{}, ourClass(), ing, testService("default", "web"))
	builds := h.builds("ingresses")
	ing = ing.DeepCopy()
	ing.Annotations = map[string]string{"note": "does not change routes"}
	ing.ResourceVersion = "42"
	if _, err := h.client.NetworkingV1().Ingresses("default").Update(t.Context(), ing, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an ingresses build", func() bool { return h.builds("ingresses") > builds })
	if v := h.w.Snapshot().Version; v != 1 {
		t.Fatalf("version %d after a no-op change, want 1", v)
	}
	if h.pubs.Load() != 1 {
		t.Fatalf("OnPublish called %d times, want 1", h.pubs.Load())
	}
}

// TestWatcherIngressClassLifecycle: an Ingress naming our class by
// spec.ingressClassName is routed only while that IngressClass exists with
// our controller. Without it the Ingress gets a Problem (logged with the
// Ingress, counted); creating the IngressClass routes it, deleting it or
// handing it to another controller stops routing it.
func TestWatcherIngressClassLifecycle(t *testing.T) {
	t.Parallel()
	h := start(t, Config{}, testIngress("default", "web", "a.example.com", "web"),
		testService("default", "web"), testSlice("default", "web-1", "web", "10.0.0.1"))
	if match(h.w.Snapshot(), "a.example.com") != nil {
		t.Fatal("routed without its IngressClass")
	}
	if got := testutil.ToFloat64(h.w.m.problems.WithLabelValues(KindIngress)); got != 1 {
		t.Fatalf("problems gauge %v, want 1", got)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "ingress=default/web") || !strings.Contains(logs, "IngressClass edgegate not found") {
		t.Fatalf("missing IngressClass not logged with the Ingress:\n%s", logs)
	}

	ctx := t.Context()
	classes := h.client.NetworkingV1().IngressClasses()
	ic, err := classes.Create(ctx, ourClass(), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "routed once the IngressClass exists", func() bool { return match(h.w.Snapshot(), "a.example.com") != nil })
	waitFor(t, "the problem resolved", func() bool {
		return testutil.ToFloat64(h.w.m.problems.WithLabelValues(KindIngress)) == 0 &&
			strings.Contains(h.logs.String(), "config problem resolved")
	})

	ic = ic.DeepCopy()
	ic.Spec.Controller = "example.com/other"
	ic.ResourceVersion = "2"
	if _, err := classes.Update(ctx, ic, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "unrouted once the IngressClass is another controller's", func() bool { return match(h.w.Snapshot(), "a.example.com") == nil })

	ic = ic.DeepCopy()
	ic.Spec.Controller = ControllerName
	ic.ResourceVersion = "3"
	if _, err := classes.Update(ctx, ic, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "routed again", func() bool { return match(h.w.Snapshot(), "a.example.com") != nil })

	if err := classes.Delete(ctx, ic.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "unrouted once the IngressClass is deleted", func() bool { return match(h.w.Snapshot(), "a.example.com") == nil })
	waitFor(t, "the problem back", func() bool { return testutil.ToFloat64(h.w.m.problems.WithLabelValues(KindIngress)) == 1 })
}

func TestWatcherNamespaces(t *testing.T) {
	t.Parallel()
	h := start(t, Config{Namespaces: []string{"a", "b"}}, ourClass(),
		testIngress("a", "web", "a.example.com", "web"),
		testIngress("c", "web", "c.example.com", "web"),
	)
	s := h.w.Snapshot()
	if match(s, "a.example.com") == nil || match(s, "c.example.com") != nil {
		t.Fatalf("namespaces not limited: %+v", s.View().Hosts)
	}
	if _, err := h.client.NetworkingV1().Ingresses("b").Create(t.Context(), testIngress("b", "web", "b.example.com", "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Ingress of namespace b", func() bool { return match(h.w.Snapshot(), "b.example.com") != nil })
}

func TestWatcherProblemsLoggedOnce(t *testing.T) {
	t.Parallel()
	h := start(t, Config{}, ourClass(), testIngress("default", "web", "a.example.com", "missing"))
	if got := testutil.ToFloat64(h.w.m.problems.WithLabelValues(KindIngress)); got != 1 {
		t.Fatalf("problems gauge %v, want 1", got)
	}
	builds := h.builds("ingresses")
	ing := testIngress("default", "web2", "b.example.com", "missing")
	if _, err := h.client.NetworkingV1().Ingresses("default").Create(t.Context(), ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an ingresses build", func() bool { return h.builds("ingresses") > builds })
	waitFor(t, "the gauge", func() bool { return testutil.ToFloat64(h.w.m.problems.WithLabelValues(KindIngress)) == 2 })
	logs := h.logs.String()
	if n := strings.Count(logs, `name=web error=`); n != 1 {
		t.Fatalf("problem of default/web logged %d times, want 1:\n%s", n, logs)
	}
	if n := strings.Count(logs, `name=web2 error=`); n != 1 {
		t.Fatalf("problem of default/web2 logged %d times, want 1:\n%s", n, logs)
	}
}

func TestWatcherAPIServerConnectivity(t *testing.T) {
	t.Parallel()
	h := start(t, Config{})
	r := cache.NewReflector(&cache.ListWatch{}, &netv1.Ingress{}, cache.NewStore(cache.MetaNamespaceKeyFunc), 0)
	down := errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")
	for range 3 {
		h.w.onWatchError(r, down)
	}
	if testutil.ToFloat64(h.w.m.apiUp) != 0 {
		t.Fatal("apiserver_up still 1")
	}
	// Routine and refusal errors are not outages.
	h.w.markUp()
	h.w.onWatchError(r, apierrors.NewResourceExpired("too old"))
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "ingresses"}, "", errors.New("rbac"))
	h.w.onWatchError(r, forbidden)
	h.w.onWatchError(r, forbidden)
	if testutil.ToFloat64(h.w.m.apiUp) != 1 {
		t.Fatal("apiserver_up 0 after a non-outage error")
	}
	h.w.onWatchError(r, down)
	h.w.markUp()
	h.w.markUp()

	logs := h.logs.String()
	for msg, want := range map[string]int{
		"api server unreachable, serving last snapshot": 2,
		"api server reachable again":                    2,
		"api server refused watch":                      1,
	} {
		if n := strings.Count(logs, msg); n != want {
			t.Errorf("%q logged %d times, want %d:\n%s", msg, n, want, logs)
		}
	}
	if !strings.Contains(logs, "snapshot_version=1") {
		t.Errorf("outage log without the snapshot version:\n%s", logs)
	}
}

func TestWatcherProbe(t *testing.T) {
	t.Parallel()
	cfg := Config{Client: fake.NewClientset(), Logger: slog.New(slog.DiscardHandler)}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var fail atomic.Bool
	fail.Store(true)
	w.probeEach = time.Millisecond
	w.probe = func(context.Context) error {
		if fail.Load() {
			return errors.New("timeout")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { w.probeLoop(ctx); close(done) }()
	waitFor(t, "down", func() bool {
		w.connMu.Lock()
		defer w.connMu.Unlock()
		return w.conn == connDown
	})
	fail.Store(false)
	waitFor(t, "up", func() bool { return testutil.ToFloat64(w.m.apiUp) == 1 && testutil.ToFloat64(w.m.lastContact) > 0 })
	cancel()
	<-done
	// The default probe works against the fake (which has no REST client).
	if err := w.defaultProbe(t.Context()); err != nil {
		t.Fatalf("defaultProbe: %v", err)
	}
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}); err == nil {
		t.Error("New without a client succeeded")
	}
	if _, err := New(Config{Client: fake.NewClientset(), CoalesceIdle: time.Second, CoalesceMax: time.Millisecond}); err == nil {
		t.Error("New with CoalesceMax < CoalesceIdle succeeded")
	}
	w, err := New(Config{Client: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.CoalesceIdle != DefaultCoalesceIdle || w.cfg.CoalesceMax != DefaultCoalesceMax || w.cfg.IngressClassName != DefaultIngressClassName {
		t.Fatalf("defaults not applied: %+v", w.cfg)
	}
	if len(w.Collectors()) != 9 {
		t.Fatalf("%d collectors", len(w.Collectors()))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Run with a done context: %v", err)
	}
	if err := w.Run(t.Context()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestStripObject(t *testing.T) {
	t.Parallel()
	ing := &netv1.Ingress{ObjectMeta: metav1.ObjectMeta{
		Annotations:   map[string]string{lastAppliedAnnotation: "{...}", annIngressClass: "edgegate"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
	}}
	orig := ing.Annotations
	out, err := stripObject(ing)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*netv1.Ingress)
	if got.ManagedFields != nil || len(got.Annotations) != 1 || got.Annotations[annIngressClass] != "edgegate" {
		t.Fatalf("not stripped: %+v", got.ObjectMeta)
	}
	if len(orig) != 2 {
		t.Fatal("the original annotation map was modified")
	}
	if o, _ := stripObject(cache.DeletedFinalStateUnknown{Key: "x"}); o == nil {
		t.Fatal("tombstone lost")
	}
}

// TestWatcherUnpublishedFullBuildKeepsLayout: incremental updates leave
// backends in the order they came (not sorted); a full build with the same
// content is not published, and the next incremental update must still
// address the backends of the snapshot that kept serving. (It once took the
// unpublished build's slots, and a route ended up on another backend.)
func TestWatcherUnpublishedFullBuildKeepsLayout(t *testing.T) {
	t.Parallel()
	h := start(t, Config{}, ourClass(), testService("default", "zeta"), testSlice("default", "zeta-1", "zeta", "10.0.0.1"))
	ctx := t.Context()
	ings := h.client.NetworkingV1().Ingresses("default")
	// zeta first, then alpha (missing Service): slots zeta=0, alpha=1,
	// the reverse of the sorted order a full build uses.
	if _, err := ings.Create(ctx, testIngress("default", "z", "z.example.com", "zeta"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "z routed", func() bool { return match(h.w.Snapshot(), "z.example.com") != nil })
	if _, err := ings.Create(ctx, testIngress("default", "a", "a.example.com", "alpha"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a routed", func() bool { return match(h.w.Snapshot(), "a.example.com") != nil })
	version := h.w.Snapshot().Version
	// An IngressClass of another controller: a full build, same content.
	full := h.builds("full")
	ic := &netv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: netv1.IngressClassSpec{Controller: "example.com/other"}}
	if _, err := h.client.NetworkingV1().IngressClasses().Create(ctx, ic, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a full build", func() bool { return h.builds("full") > full })
	if v := h.w.Snapshot().Version; v != version {
		t.Fatalf("version %d after a full build with the same content, want %d", v, version)
	}
	// A younger Ingress claiming z's path: an incremental update of z's host.
	y := testIngress("default", "y", "z.example.com", "alpha")
	y.CreationTimestamp = metav1.Unix(5, 0)
	incr := h.builds("ingresses")
	if _, err := ings.Create(ctx, y, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an ingresses build", func() bool { return h.builds("ingresses") > incr })
	s := h.w.Snapshot()
	r := match(s, "z.example.com")
	if r == nil || r.Ingress.Name != "z" {
		t.Fatalf("z.example.com routed by %+v, want ingress z (older)", r)
	}
	if be := s.Backends[r.Backend]; be == nil || be.Service != "zeta" || len(be.Endpoints) != 1 {
		t.Fatalf("z.example.com goes to backend %+v, want zeta with its endpoint", be)
	}
}

// TestWatcherServiceChanges: a Service change goes through the endpoint
// path: one that does not change what its backends resolve to publishes
// nothing; a port rename that moves the endpoints' port re-resolves them;
// one that breaks the backend (its port gone) takes a full build, so the
// route answers 503 and the Problem is logged; restoring it routes again.
func TestWatcherServiceChanges(t *testing.T) {
	t.Parallel()
	h := start(t, Config{}, ourClass(), testIngress("default", "web", "a.example.com", "web"), testService("default", "web"),
		testSlice("default", "web-1", "web", "10.0.0.1"))
	ctx := t.Context()
	svcs := h.client.CoreV1().Services("default")
	backend := func() *route.Backend {
		s := h.w.Snapshot()
		if r := match(s, "a.example.com"); r != nil {
			return s.Backends[r.Backend]
		}
		return nil
	}
	if be := backend(); be == nil || len(be.Addrs) != 1 || be.Addrs[0] != "10.0.0.1:8080" {
		t.Fatalf("initial backend %+v", be)
	}

	// An annotation: nothing to publish, no full build.
	full, eps, pubs := h.builds("full"), h.builds("endpoints"), h.pubs.Load()
	svc := testService("default", "web")
	svc.Annotations = map[string]string{"note": "x"}
	svc.ResourceVersion = "2"
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an endpoints build", func() bool { return h.builds("endpoints") > eps })
	if h.builds("full") != full || h.pubs.Load() != pubs {
		t.Errorf("annotation change: full builds %v -> %v, publishes %d -> %d; want neither", full, h.builds("full"), pubs, h.pubs.Load())
	}

	// The Service port 80 loses its name: the slice's port "http" no longer
	// matches it, so the backend has no endpoints (not an error).
	svc = svc.DeepCopy()
	svc.Spec.Ports[0].Name = ""
	svc.ResourceVersion = "3"
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the endpoints gone", func() bool { be := backend(); return be != nil && len(be.Addrs) == 0 && be.Error == "" })
	if h.builds("full") != full {
		t.Errorf("port rename took a full build")
	}

	// Port 80 gone: the backend's error changes, a full build reports it.
	svc = svc.DeepCopy()
	svc.Spec.Ports[0].Port = 81
	svc.ResourceVersion = "4"
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the backend error", func() bool { be := backend(); return be != nil && strings.Contains(be.Error, "has no port 80") })
	if h.builds("full") <= full {
		t.Error("a backend error appeared without a full build")
	}
	waitFor(t, "the problem logged", func() bool { return strings.Contains(h.logs.String(), "has no port 80") })

	// Restored: routed again.
	svc = testService("default", "web")
	svc.ResourceVersion = "5"
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the backend restored", func() bool { be := backend(); return be != nil && be.Error == "" && len(be.Addrs) == 1 })
}
