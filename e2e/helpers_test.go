package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"
	"github.com/edgegate/edgegate/internal/podnet"
)

// controllerName is the spec.controller of edgegate's IngressClasses.
const controllerName = "edgegate.io/ingress-controller"

// gatewayBin is the edgegate binary built once by TestMain.
var gatewayBin string

// The pod network is shared by every test of the package: each test gets its
// own pod IPs from it.
var podNet struct {
	once sync.Once
	n    *podnet.Network
	err  error
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	if !controlplane.SkipE2E() {
		dir, err := os.MkdirTemp("", "edgegate-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		start := time.Now()
		// Under go test -race the gateway is built with -race too, so a data
		// race in the real binary fails the test that triggered it (exit 66).
		gatewayBin, err = gatewayproc.Build(context.Background(), dir, buildFlags...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: built edgegate %v in %s\n", buildFlags, time.Since(start).Round(time.Millisecond))
	}
	code := controlplane.Run(m)
	if podNet.n != nil {
		if err := podNet.n.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: close pod network: %v\n", err)
		}
	}
	return code
}

// env is one test's world: its own namespace on the shared API server, its
// own IngressClass (of the same name) and its own gateway process watching
// that class.
type env struct {
	t      *testing.T
	ctx    context.Context
	cp     *controlplane.ControlPlane
	client kubernetes.Interface
	ns     string
	class  string
	gw     *gatewayproc.Gateway
	http   *http.Client
}

var envSeq atomic.Int64

// newEnv starts a gateway for a fresh namespace and IngressClass. Options
// go to the gateway process.
func newEnv(t *testing.T, opts ...func(*env, *gatewayproc.Options)) *env {
	t.Helper()
	return newEnvOn(t, controlplane.ForTest(t), opts...)
}

func newEnvOn(t *testing.T, cp *controlplane.ControlPlane, opts ...func(*env, *gatewayproc.Options)) *env {
	t.Helper()
	n := envSeq.Add(1)
	name := fmt.Sprintf("e2e-%d-%s", n, strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	if len(name) > 50 {
		name = strings.TrimRight(name[:50], "-")
	}
	e := &env{
		t: t, ctx: t.Context(), cp: cp, client: cp.Client(), ns: name, class: name,
		http: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: 16},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
	_, err := e.client.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	// The env's IngressClass: Ingresses naming it are routed only while it
	// exists with our controller.
	ic := &netv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: e.class}, Spec: netv1.IngressClassSpec{Controller: controllerName}}
	if _, err := e.client.NetworkingV1().IngressClasses().Create(e.ctx, ic, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ingressclass: %v", err)
	}
	o := gatewayproc.Options{
		Bin:             gatewayBin,
		Dir:             t.TempDir(),
		Kubeconfig:      cp.Kubeconfig(),
		KubernetesExtra: fmt.Sprintf("ingress_class = %q\n", e.class),
		EventLoops:      testEventLoops(t),
	}
	for _, f := range opts {
		f(e, &o)
	}
	gw, err := gatewayproc.Start(e.ctx, o)
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	e.gw = gw
	t.Cleanup(func() {
		if err := gw.Stop(15 * time.Second); err != nil {
			t.Errorf("gateway did not stop cleanly: %v\n%s", err, gw.LogTail(30))
		}
		if t.Failed() {
			t.Logf("gateway log tail:\n%s", gw.LogTail(60))
		}
	})
	return e
}

// testEventLoops is http.event_loops for every gateway the tests start:
// EDGEGATE_TEST_EVENT_LOOPS=N runs the whole suite with the plain-HTTP
// listener on N event loops, =-1 on the goroutine server (make test does,
// in a third pass); unset, the gateway's default (a loop per CPU). Tests
// that write a config file of their own add the key with eventLoopsKey.
func testEventLoops(t testing.TB) int {
	t.Helper()
	v := os.Getenv("EDGEGATE_TEST_EVENT_LOOPS")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < -1 {
		t.Fatalf("EDGEGATE_TEST_EVENT_LOOPS=%q: want a number of event loops, or -1 for none", v)
	}
	return n
}

// eventLoopsKey is the [http] line for testEventLoops, or "" when it is 0.
func eventLoopsKey(t testing.TB) string {
	t.Helper()
	if n := testEventLoops(t); n != 0 {
		return fmt.Sprintf("event_loops = %d\n", n)
	}
	return ""
}

// network returns the shared pod network, or skips the test loudly when it
// cannot exist (not root).
func network(t *testing.T) *podnet.Network {
	t.Helper()
	podNet.once.Do(func() { podNet.n, podNet.err = podnet.New(podnet.Config{}) })
	if podNet.err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("SKIPPING %s: the pod network namespace needs root (%v)", t.Name(), podNet.err)
		}
		t.Fatalf("pod network: %v", podNet.err)
	}
	return podNet.n
}

// pod is a real HTTP server listening on its own IP inside the pod network.
type pod struct {
	name string
	ip   netip.Addr
	port int
	hits atomic.Int64
	srv  *http.Server
}

// addr is ip:port as it appears in routes.
func (p *pod) addr() string { return net.JoinHostPort(p.ip.String(), strconv.Itoa(p.port)) }

// echo is what every pod answers: who it is and what it received.
type echo struct {
	Pod     string              `json:"pod"`
	Method  string              `json:"method"`
	Host    string              `json:"host"`
	Path    string              `json:"path"`
	URI     string              `json:"uri"`
	Headers map[string][]string `json:"headers"`
}

// startPod starts a pod on a fresh IPv4 (or IPv6) address of the pod network.
func (e *env) startPod(name string, port int, ipv6 bool) *pod {
	e.t.Helper()
	n := network(e.t)
	var ip netip.Addr
	if ipv6 {
		ip = n.AllocIPv6()
	} else {
		ip = n.AllocIP()
	}
	ln, err := n.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	if err != nil {
		e.t.Fatalf("pod %s listen: %v", name, err)
	}
	p := &pod{name: name, ip: ip, port: port}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Pod", name)
		json.NewEncoder(w).Encode(echo{Pod: name, Method: r.Method, Host: r.Host, Path: r.URL.Path, URI: r.RequestURI, Headers: r.Header})
	})
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	e.t.Cleanup(func() { p.srv.Close() })
	return p
}

// service creates a Service with the given ports.
func (e *env) service(name string, ports ...corev1.ServicePort) {
	e.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec:       corev1.ServiceSpec{Ports: ports, Selector: map[string]string{"app": name}},
	}
	if _, err := e.client.CoreV1().Services(e.ns).Create(e.ctx, svc, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create service %s: %v", name, err)
	}
}

// svcPort is a ServicePort named name with port and targetPort.
func svcPort(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

// ep is one endpoint of a slice.
type ep struct {
	p       *pod
	ready   *bool
	serving *bool
	term    bool
}

func ready(p *pod) ep    { t := true; return ep{p: p, ready: &t} }
func notReady(p *pod) ep { f := false; return ep{p: p, ready: &f} }

// slice writes (creates or updates) an EndpointSlice for svc the way the
// endpointslice controller would: labelled with the service name, one port
// named portName with the pods' port.
func (e *env) slice(svc, name, portName string, eps ...ep) {
	e.t.Helper()
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "e2e.edgegate.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	var port int32
	for _, x := range eps {
		if x.p.ip.Is6() {
			s.AddressType = discoveryv1.AddressTypeIPv6
		}
		port = int32(x.p.port)
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{x.p.ip.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: x.ready, Serving: x.serving, Terminating: &x.term},
		})
	}
	pn, proto := portName, corev1.ProtocolTCP
	s.Ports = []discoveryv1.EndpointPort{{Name: &pn, Port: &port, Protocol: &proto}}
	cur, err := e.client.DiscoveryV1().EndpointSlices(e.ns).Get(e.ctx, name, metav1.GetOptions{})
	if err == nil {
		s.ResourceVersion = cur.ResourceVersion
		_, err = e.client.DiscoveryV1().EndpointSlices(e.ns).Update(e.ctx, s, metav1.UpdateOptions{})
	} else {
		_, err = e.client.DiscoveryV1().EndpointSlices(e.ns).Create(e.ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		e.t.Fatalf("write endpointslice %s: %v", name, err)
	}
}

// ingress creates or replaces an Ingress of this env's class (unless the spec
// names a class itself or noClass is set).
func (e *env) ingress(ing *netv1.Ingress) {
	e.t.Helper()
	ing.Namespace = e.ns
	cur, err := e.client.NetworkingV1().Ingresses(e.ns).Get(e.ctx, ing.Name, metav1.GetOptions{})
	if err == nil {
		ing.ResourceVersion = cur.ResourceVersion
		_, err = e.client.NetworkingV1().Ingresses(e.ns).Update(e.ctx, ing, metav1.UpdateOptions{})
	} else {
		_, err = e.client.NetworkingV1().Ingresses(e.ns).Create(e.ctx, ing, metav1.CreateOptions{})
	}
	if err != nil {
		e.t.Fatalf("write ingress %s: %v", ing.Name, err)
	}
}

func (e *env) deleteIngress(name string) {
	e.t.Helper()
	if err := e.client.NetworkingV1().Ingresses(e.ns).Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatalf("delete ingress %s: %v", name, err)
	}
}

// ing builds an Ingress of this env's class.
func (e *env) ing(name string, rules ...netv1.IngressRule) *netv1.Ingress {
	cls := e.class
	return &netv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       netv1.IngressSpec{IngressClassName: &cls, Rules: rules},
	}
}

// rule is a host rule with paths.
func rule(host string, paths ...netv1.HTTPIngressPath) netv1.IngressRule {
	return netv1.IngressRule{Host: host, IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{Paths: paths}}}
}

func pathOf(typ netv1.PathType, path, svc string, port any) netv1.HTTPIngressPath {
	t := typ
	return netv1.HTTPIngressPath{Path: path, PathType: &t, Backend: backend(svc, port)}
}

func prefix(path, svc string, port any) netv1.HTTPIngressPath {
	return pathOf(netv1.PathTypePrefix, path, svc, port)
}
func exact(path, svc string, port any) netv1.HTTPIngressPath {
	return pathOf(netv1.PathTypeExact, path, svc, port)
}

// backend is a service backend; port is an int (number) or a string (name).
func backend(svc string, port any) netv1.IngressBackend {
	b := netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: svc}}
	switch p := port.(type) {
	case int:
		b.Service.Port.Number = int32(p)
	case string:
		b.Service.Port.Name = p
	}
	return b
}

// response is what a request through the gateway returned.
type response struct {
	status int
	pod    string // X-Pod of the answering pod, "" when the gateway answered
	body   string
	echo   echo
	header http.Header
}

// get sends GET path with the given Host header through the gateway.
func (e *env) get(host, path string) (response, error) {
	return e.do(http.MethodGet, host, path, nil, nil)
}

func (e *env) do(method, host, path string, hdr http.Header, body io.Reader) (response, error) {
	req, err := http.NewRequestWithContext(e.ctx, method, "http://"+e.gw.HTTPAddr+path, body)
	if err != nil {
		return response{}, err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	r := response{status: resp.StatusCode, pod: resp.Header.Get("X-Pod"), body: string(b), header: resp.Header}
	if r.pod != "" {
		_ = json.Unmarshal(b, &r.echo)
	}
	return r, nil
}

// want is the expected outcome of a request: a pod name, or a bare status
// when the gateway itself answers.
type want struct {
	pod    string
	status int
}

func (w want) String() string {
	if w.pod != "" {
		return "pod " + w.pod
	}
	return "status " + strconv.Itoa(w.status)
}

func (w want) check(r response) error {
	if w.pod != "" {
		if r.pod != w.pod || r.status != http.StatusOK {
			return fmt.Errorf("got status %d from pod %q, want pod %q (body %.120q)", r.status, r.pod, w.pod, r.body)
		}
		return nil
	}
	if r.status != w.status || r.pod != "" {
		return fmt.Errorf("got status %d from pod %q, want status %d from the gateway (body %.120q)", r.status, r.pod, w.status, r.body)
	}
	return nil
}

// expect waits (polling, with a deadline) until host+path is answered as w.
func (e *env) expect(host, path string, w want) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("%s%s -> %s", host, path, w), func() error {
		r, err := e.get(host, path)
		if err != nil {
			return err
		}
		return w.check(r)
	})
}

// eventually polls fn until it returns nil or 15 s pass.
func (e *env) eventually(what string, fn func() error) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) || e.ctx.Err() != nil {
			e.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// admin GETs a path on the gateway's admin listener.
func (e *env) admin(path string) (int, string) {
	e.t.Helper()
	resp, err := e.http.Get("http://" + e.gw.AdminAddr + path)
	if err != nil {
		e.t.Fatalf("admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logContains waits until the gateway's log has a line containing every
// fragment.
func (e *env) logContains(fragments ...string) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("gateway log line with %q", fragments), func() error {
		for _, line := range strings.Split(e.gw.Log(), "\n") {
			all := true
			for _, f := range fragments {
				if !strings.Contains(line, f) {
					all = false
					break
				}
			}
			if all {
				return nil
			}
		}
		return fmt.Errorf("no such line in %d bytes of log", len(e.gw.Log()))
	})
}

// rawRequest writes raw bytes to the gateway's HTTP port and returns what it
// answers (until it closes or 3 s pass).
func (e *env) rawRequest(raw string) string {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.gw.HTTPAddr, 3*time.Second)
	if err != nil {
		e.t.Fatalf("dial gateway: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(raw)); err != nil {
		e.t.Fatalf("write: %v", err)
	}
	var buf bytes.Buffer
	io.Copy(&buf, c)
	return buf.String()
}

func ptr[T any](v T) *T { return &v }

func intstrFrom(port int32) intstr.IntOrString { return intstr.FromInt32(port) }

// olderThanNext waits until an object created now gets a later
// creationTimestamp than Ingress name (timestamps have one-second
// resolution), so "oldest wins" rules are decided by age, not by name.
func (e *env) olderThanNext(name string) {
	e.t.Helper()
	ing, err := e.client.NetworkingV1().Ingresses(e.ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	time.Sleep(time.Until(ing.CreationTimestamp.Add(time.Second + 50*time.Millisecond)))
}

// waitCleanExit waits (up to 15 s) for the gateway, sent SIGINT or SIGTERM,
// to exit with status 0.
func (e *env) waitCleanExit() {
	e.t.Helper()
	select {
	case <-e.gw.Done():
		if err := e.gw.Err(); err != nil {
			e.t.Fatalf("gateway exit: %v, want 0\n%s", err, e.gw.LogTail(20))
		}
	case <-time.After(15 * time.Second):
		e.t.Fatal("gateway did not exit after the signal")
	}
}
