// Package e2e drives a real edgegate binary through a real kube-apiserver and
// etcd, with backend pods listening inside a network namespace that the host
// routes to, the way an edge VM routes to a pod CIDR.
package e2e

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// app starts a pod and gives it a Service (port 80 named "http", target 8080)
// and an EndpointSlice, all named name.
func (e *env) app(name string) *pod {
	e.t.Helper()
	p := e.startPod(name, 8080, false)
	e.service(name, svcPort("http", 80, intstr.FromInt32(8080)))
	e.slice(name, name+"-1", "http", ready(p))
	return p
}

func TestIngressV1HostAndPathRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, n := range []string{"prefix-foo", "exact-foo", "foo-bar", "root", "long", "wild", "precise", "hostless"} {
		e.app(n)
	}
	h := "r." + e.ns + ".test"
	h2 := "r2." + e.ns + ".test"
	wild := "*.w." + e.ns + ".test"
	precise := "exact.w." + e.ns + ".test"
	e.ingress(e.ing("rules",
		rule(h,
			prefix("/foo", "prefix-foo", 80),
			exact("/foo", "exact-foo", 80),
			prefix("/foo/bar/", "foo-bar", "http"),
		),
		rule(h2,
			prefix("/", "root", 80),
			prefix("/long/path", "long", 80),
		),
		rule(wild, prefix("/", "wild", 80)),
		rule(precise, prefix("/only", "precise", 80)),
		rule("", prefix("/zzz/a/much/longer/path", "hostless", 80)),
	))

	cases := []struct {
		name, host, path string
		want             want
	}{
		{"exact beats prefix at equal length", h, "/foo", want{pod: "exact-foo"}},
		{"prefix matches with trailing slash", h, "/foo/", want{pod: "prefix-foo"}},
		{"prefix matches sub path", h, "/foo/baz", want{pod: "prefix-foo"}},
		{"prefix is element-wise: /foo does not match /foobar", h, "/foobar", want{status: 404}},
		{"rule trailing slash ignored: /foo/bar/ matches /foo/bar", h, "/foo/bar", want{pod: "foo-bar"}},
		{"longest prefix wins", h, "/foo/bar/baz", want{pod: "foo-bar"}},
		{"element-wise again: /foo/barbaz is /foo", h, "/foo/barbaz", want{pod: "prefix-foo"}},
		{"query string ignored for matching", h, "/foo?x=/foo/bar", want{pod: "exact-foo"}},
		{"host header port ignored", h + ":8080", "/foo", want{pod: "exact-foo"}},
		{"host matching is case-insensitive", "R." + e.ns + ".TEST", "/foo", want{pod: "exact-foo"}},
		{"root prefix catches the rest", h2, "/anything/else", want{pod: "root"}},
		{"longer prefix beats root", h2, "/long/path/x", want{pod: "long"}},
		{"wildcard matches one label", "x.w." + e.ns + ".test", "/", want{pod: "wild"}},
		{"wildcard does not match two labels", "a.b.w." + e.ns + ".test", "/", want{status: 404}},
		{"wildcard does not match the bare domain", "w." + e.ns + ".test", "/", want{status: 404}},
		{"precise host beats wildcard", precise, "/only/x", want{pod: "precise"}},
		{"precise host beats wildcard even when its paths miss", precise, "/", want{status: 404}},
		{"hostless rule serves unknown hosts", "unknown." + e.ns + ".test", "/zzz/a/much/longer/path", want{pod: "hostless"}},
		{"a host rule beats a hostless rule whatever the path length", h, "/zzz/a/much/longer/path", want{status: 404}},
		{"no rule at all: 404", "unknown." + e.ns + ".test", "/nothing", want{status: 404}},
	}
	// The first case waits for the routes to arrive.
	e.expect(h, "/foo", want{pod: "exact-foo"})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := e.get(c.host, c.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.want.check(r); err != nil {
				t.Errorf("GET %s%s: %v", c.host, c.path, err)
			}
		})
	}
}

func TestDefaultBackend(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.app("site")
	e.app("fallback-old")
	e.app("fallback-new")
	host := "site." + e.ns + ".test"
	e.ingress(e.ing("site", rule(host, prefix("/app", "site", 80))))
	e.expect(host, "/nowhere", want{status: 404})
	e.expect("other."+e.ns+".test", "/", want{status: 404})

	old := e.ing("default-old")
	old.Spec.DefaultBackend = ptr(backend("fallback-old", 80))
	e.ingress(old)
	e.expect("other."+e.ns+".test", "/", want{pod: "fallback-old"})
	e.expect(host, "/nowhere", want{pod: "fallback-old"})
	e.expect(host, "/app/x", want{pod: "site"})

	// A younger Ingress's defaultBackend loses to the oldest one, although
	// its name sorts first.
	e.olderThanNext("default-old")
	younger := e.ing("default-new")
	younger.Spec.DefaultBackend = ptr(backend("fallback-new", 80))
	e.ingress(younger)
	e.logContains("default-new", "default")
	for i := 0; i < 5; i++ {
		r, err := e.get("other."+e.ns+".test", "/")
		if err != nil {
			t.Fatal(err)
		}
		if err := (want{pod: "fallback-old"}).check(r); err != nil {
			t.Fatalf("oldest defaultBackend must win: %v", err)
		}
	}
	e.deleteIngress("default-old")
	e.expect("other."+e.ns+".test", "/", want{pod: "fallback-new"})
	e.deleteIngress("default-new")
	e.expect("other."+e.ns+".test", "/", want{status: 404})
}

func TestServicePortsNamedNumberedAndTargetPort(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	web := e.startPod("web", 8081, false)
	metrics := e.startPod("metrics", 9091, false)
	single := e.startPod("single", 8082, false)
	e.service("multi",
		svcPort("web", 80, intstr.FromString("http-alt")), // named targetPort
		svcPort("metrics", 9090, intstr.FromInt32(9091)),  // differing numeric targetPort
	)
	e.slice("multi", "multi-web", "web", ready(web))
	e.slice("multi", "multi-metrics", "metrics", ready(metrics))
	e.service("single", corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(8082), Protocol: corev1.ProtocolTCP}) // unnamed port
	e.slice("single", "single-1", "", ready(single))

	host := "ports." + e.ns + ".test"
	e.ingress(e.ing("ports", rule(host,
		prefix("/by-name", "multi", "web"),
		prefix("/by-number", "multi", 9090),
		prefix("/web-by-number", "multi", 80),
		prefix("/unnamed", "single", 80),
		prefix("/no-such-port", "multi", 1234),
	)))
	e.expect(host, "/by-name", want{pod: "web"})
	e.expect(host, "/by-number", want{pod: "metrics"})
	e.expect(host, "/web-by-number", want{pod: "web"})
	e.expect(host, "/unnamed", want{pod: "single"})
	e.expect(host, "/no-such-port", want{status: 503})
	e.logContains(e.ns+"/ports", "1234")
}

func TestEndpointsReadyRemovedAndBalanced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.startPod("pod-a", 8080, false)
	b := e.startPod("pod-b", 8080, false)
	e.service("svc", svcPort("http", 80, intstr.FromInt32(8080)))
	e.slice("svc", "svc-1", "http", ready(a), ready(b))
	host := "eps." + e.ns + ".test"
	e.ingress(e.ing("eps", rule(host, prefix("/", "svc", 80))))
	e.expect(host, "/", want{pod: "pod-a"}) // eventually both: see below

	seen := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for i := 0; i < n; i++ {
			r, err := e.get(host, "/")
			if err != nil {
				t.Fatal(err)
			}
			got[r.pod]++
		}
		return got
	}
	e.eventually("both endpoints receive traffic", func() error {
		if got := seen(20); got["pod-a"] == 0 || got["pod-b"] == 0 {
			return fmt.Errorf("distribution %v", got)
		}
		return nil
	})

	// Not ready: no new requests.
	e.slice("svc", "svc-1", "http", ready(a), notReady(b))
	e.eventually("not-ready endpoint drained", func() error {
		if got := seen(10); got["pod-b"] != 0 || got["pod-a"] != 10 {
			return fmt.Errorf("distribution %v", got)
		}
		return nil
	})
	if got := seen(30); got["pod-a"] != 30 {
		t.Fatalf("not-ready pod still receives traffic: %v", got)
	}

	// Terminating (ready=false, terminating=true) while another is ready: no
	// new requests either.
	term := notReady(a)
	term.term = true
	e.slice("svc", "svc-1", "http", term, ready(b))
	e.eventually("terminating endpoint drained", func() error {
		if got := seen(10); got["pod-b"] != 10 {
			return fmt.Errorf("distribution %v", got)
		}
		return nil
	})

	// Removed from the slice entirely.
	e.slice("svc", "svc-1", "http", ready(b))
	before := a.hits.Load()
	seen(20)
	if a.hits.Load() != before {
		t.Fatalf("removed endpoint got %d requests", a.hits.Load()-before)
	}

	// No ready endpoint at all: 503.
	e.slice("svc", "svc-1", "http", notReady(b))
	e.expect(host, "/", want{status: 503})

	// Still none ready, but a serving terminating one (the last pod of a
	// rolling update draining): it takes the requests (KEP-1669).
	serving := true
	drain := notReady(b)
	drain.serving, drain.term = &serving, true
	e.slice("svc", "svc-1", "http", drain, notReady(a))
	e.expect(host, "/", want{pod: "pod-b"})
	if got := seen(10); got["pod-b"] != 10 {
		t.Fatalf("serving terminating endpoint: distribution %v", got)
	}
}

func TestIPv6Endpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.startPod("v6", 8080, true)
	e.service("v6", svcPort("http", 80, intstr.FromInt32(8080)))
	e.slice("v6", "v6-1", "http", ready(p))
	host := "v6." + e.ns + ".test"
	e.ingress(e.ing("v6", rule(host, prefix("/", "v6", 80))))
	e.expect(host, "/", want{pod: "v6"})
}

func TestIngressUpdateAndDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.app("app")
	host := "upd." + e.ns + ".test"
	e.ingress(e.ing("upd", rule(host, prefix("/v1", "app", 80))))
	e.expect(host, "/v1", want{pod: "app"})
	e.ingress(e.ing("upd", rule(host, prefix("/v2", "app", 80))))
	e.expect(host, "/v2", want{pod: "app"})
	e.expect(host, "/v1", want{status: 404})
	e.deleteIngress("upd")
	e.expect(host, "/v2", want{status: 404})
}

func TestIngressClassSelection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.app("app")
	classes := e.client.NetworkingV1().IngressClasses()

	// spec.ingressClassName names our IngressClass (newEnv created it).
	e.ingress(e.ing("named", rule("named."+e.ns+".test", prefix("/", "app", 80))))

	// Another class's Ingress is ignored.
	other := e.ing("other", rule("other."+e.ns+".test", prefix("/", "app", 80)))
	otherClass := "someone-else"
	other.Spec.IngressClassName = &otherClass
	e.ingress(other)

	// The legacy annotation selects us.
	legacy := e.ing("legacy", rule("legacy."+e.ns+".test", prefix("/", "app", 80)))
	legacy.Spec.IngressClassName = nil
	legacy.Annotations = map[string]string{"kubernetes.io/ingress.class": e.class}
	e.ingress(legacy)

	// A class-less Ingress is not ours until our IngressClass is the default.
	classless := e.ing("classless", rule("classless."+e.ns+".test", prefix("/", "app", 80)))
	classless.Spec.IngressClassName = nil
	e.ingress(classless)

	e.expect("named."+e.ns+".test", "/", want{pod: "app"})
	e.expect("legacy."+e.ns+".test", "/", want{pod: "app"})
	e.expect("classless."+e.ns+".test", "/", want{status: 404})
	e.expect("other."+e.ns+".test", "/", want{status: 404})

	ic, err := classes.Get(e.ctx, e.class, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ic.Annotations = map[string]string{netv1.AnnotationIsDefaultIngressClass: "true"}
	if _, err := classes.Update(e.ctx, ic, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.expect("classless."+e.ns+".test", "/", want{pod: "app"})
	e.expect("other."+e.ns+".test", "/", want{status: 404})
	e.expect("legacy."+e.ns+".test", "/", want{pod: "app"})

	// Without the IngressClass, spec.ingressClassName selects nothing (a
	// logged problem) and there is no default class; the legacy annotation
	// predates IngressClass objects and still selects us by name.
	if err := classes.Delete(e.ctx, e.class, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.expect("named."+e.ns+".test", "/", want{status: 404})
	e.expect("classless."+e.ns+".test", "/", want{status: 404})
	e.expect("legacy."+e.ns+".test", "/", want{pod: "app"})
	e.logContains(e.ns+"/named", "IngressClass "+e.class+" not found")

	// Created again: routed again.
	ic = &netv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: e.class}, Spec: netv1.IngressClassSpec{Controller: controllerName}}
	if _, err := classes.Create(e.ctx, ic, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.expect("named."+e.ns+".test", "/", want{pod: "app"})
	e.expect("classless."+e.ns+".test", "/", want{status: 404})
}

func TestBadInputIsIsolated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.app("good")
	host := "bad." + e.ns + ".test"
	e.ingress(e.ing("good", rule("good."+e.ns+".test", prefix("/", "good", 80))))

	// A missing Service: 503 for its paths and a log line naming the Ingress.
	e.ingress(e.ing("missing-svc", rule(host, prefix("/missing", "does-not-exist", 80), prefix("/fine", "good", 80))))
	// A path the API server accepts (ImplementationSpecific) that can never
	// match a normalised request path.
	weird := e.ing("weird-path", rule(host, pathOf(netv1.PathTypeImplementationSpecific, "/a/../b", "good", 80), prefix("/still-fine", "good", 80)))
	e.ingress(weird)

	e.expect(host, "/missing", want{status: 503})
	e.expect(host, "/fine", want{pod: "good"})
	e.expect(host, "/still-fine", want{pod: "good"})
	e.expect("good."+e.ns+".test", "/", want{pod: "good"})
	e.logContains(e.ns+"/missing-svc", "does-not-exist")
	e.logContains(e.ns+"/weird-path", "/a/../b")

	// Conflicting claims: the oldest Ingress keeps host+path, the loser is logged.
	e.app("second")
	e.olderThanNext("good")
	e.ingress(e.ing("aa-younger-claim", rule("good."+e.ns+".test", prefix("/", "second", 80))))
	e.logContains(e.ns+"/aa-younger-claim", e.ns+"/good")
	e.expect("good."+e.ns+".test", "/", want{pod: "good"})

	// A malformed request gets 400 and the gateway keeps serving.
	if got := e.rawRequest("THIS IS NOT HTTP\r\n\r\n"); len(got) < 12 || got[:12] != "HTTP/1.1 400" {
		t.Errorf("malformed request: got %.60q, want HTTP/1.1 400", got)
	}
	if got := e.rawRequest("GET / HTTP/1.1\r\nHost: good." + e.ns + ".test\r\nX-Big: " + string(make([]byte, 0)) + bigHeader() + "\r\n\r\n"); len(got) < 12 || (got[:12] != "HTTP/1.1 431" && got[:12] != "HTTP/1.1 400") {
		t.Errorf("oversized header: got %.60q, want 431 (or 400)", got)
	}
	e.expect("good."+e.ns+".test", "/", want{pod: "good"})

	// The problems are visible as a metric.
	e.eventually("problems metric", func() error {
		_, m := e.admin("/metrics")
		if !containsMetric(m, "edgegate_config_problems") {
			return fmt.Errorf("no edgegate_config_problems in /metrics")
		}
		return nil
	})
	_ = http.StatusOK
}

func bigHeader() string {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = 'x'
	}
	return string(b)
}

func TestWatchNamespaces(t *testing.T) {
	t.Parallel()
	cp := controlplane.ForTest(t)
	other := newEnvOn(t, cp)
	// e's gateway watches only e.ns; other's namespace holds an Ingress of
	// e's class that it must ignore.
	e := newEnvOn(t, cp, func(e *env, o *gatewayproc.Options) {
		o.KubernetesExtra += fmt.Sprintf("watch_namespaces = [%q]\n", e.ns)
	})
	e.app("mine")
	e.ingress(e.ing("mine", rule("mine."+e.ns+".test", prefix("/", "mine", 80))))
	other.app("theirs")
	theirs := other.ing("theirs", rule("theirs."+e.ns+".test", prefix("/", "theirs", 80)))
	theirs.Spec.IngressClassName = &e.class
	other.ingress(theirs)

	e.expect("mine."+e.ns+".test", "/", want{pod: "mine"})
	e.expect("theirs."+e.ns+".test", "/", want{status: 404})
	// Sanity: the same Ingress moved into e's namespace is routed.
	mirror := e.ing("theirs", rule("theirs."+e.ns+".test", prefix("/", "mine", 80)))
	e.ingress(mirror)
	e.expect("theirs."+e.ns+".test", "/", want{pod: "mine"})
}
