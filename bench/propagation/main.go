// Command propagation measures how long a change written to the API server
// takes to reach edgegate's data path: the time from the write (an
// EndpointSlice that moves traffic to another pod, or an Ingress that adds a
// path) to the first request the gateway routes the new way. It starts a real
// etcd + kube-apiserver, pods in a network namespace (needs root) and the
// edgegate binary, then prints p50/p90/p99/max per kind of change and writes
// them to bench/results/propagation.md.
//
//	go run ./bench/propagation -changes 200
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"
	"github.com/edgegate/edgegate/internal/podnet"
)

const ns = "prop"

func main() {
	changes := flag.Int("changes", 200, "changes of each kind to measure")
	out := flag.String("out", "", "markdown results file (default bench/results/propagation.md)")
	flag.Parse()
	if err := run(*changes, *out); err != nil {
		log.Fatal(err)
	}
}

func run(changes int, out string) error {
	ctx := context.Background()
	start := time.Now()
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

	dir, err := os.MkdirTemp("", "edgegate-prop-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log.Printf("building edgegate")
	bin, err := gatewayproc.Build(ctx, dir)
	if err != nil {
		return err
	}
	c := cp.Client()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := c.NetworkingV1().IngressClasses().Create(ctx, &netv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: "edgegate"},
		Spec:       netv1.IngressClassSpec{Controller: "edgegate.io/ingress-controller"},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create IngressClass: %w", err)
	}
	podA, err := startPod(pn, "a")
	if err != nil {
		return err
	}
	podB, err := startPod(pn, "b")
	if err != nil {
		return err
	}
	if _, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "svc"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	slice, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, sliceFor(podA), metav1.CreateOptions{})
	if err != nil {
		return err
	}
	cls := "edgegate"
	pt := netv1.PathTypePrefix
	ing := &netv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "prop"},
		Spec: netv1.IngressSpec{IngressClassName: &cls, Rules: []netv1.IngressRule{{Host: "prop.test",
			IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{Paths: []netv1.HTTPIngressPath{
				{Path: "/", PathType: &pt, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: "svc", Port: netv1.ServiceBackendPort{Number: 80}}}},
			}}}}}},
	}
	if ing, err = c.NetworkingV1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		return err
	}
	gw, err := gatewayproc.Start(ctx, gatewayproc.Options{Bin: bin, Dir: dir, Kubeconfig: cp.Kubeconfig(), LogLevel: "warn"})
	if err != nil {
		return err
	}
	defer gw.Stop(10 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	probe := func(path string) (string, int) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+gw.HTTPAddr+path, nil)
		req.Host = "prop.test"
		resp, err := client.Do(req)
		if err != nil {
			return "", 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Pod"), resp.StatusCode
	}
	waitFor := func(cond func() bool) (time.Duration, error) {
		t0 := time.Now()
		for time.Since(t0) < 10*time.Second {
			if cond() {
				return time.Since(t0), nil
			}
		}
		return 0, fmt.Errorf("change not visible after 10s")
	}
	if _, err := waitFor(func() bool { p, _ := probe("/"); return p == "a" }); err != nil {
		return fmt.Errorf("initial route: %w", err)
	}
	log.Printf("setup done in %s; measuring %d EndpointSlice and %d Ingress changes", time.Since(start).Round(time.Millisecond), changes, changes)

	var epLat, ingLat []time.Duration
	cur := podA
	for i := 0; i < changes; i++ {
		next := podB
		if cur == podB {
			next = podA
		}
		s := sliceFor(next)
		s.ResourceVersion = slice.ResourceVersion
		t0 := time.Now()
		if slice, err = c.DiscoveryV1().EndpointSlices(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			return err
		}
		if _, err := waitFor(func() bool { p, _ := probe("/"); return p == next.name }); err != nil {
			return fmt.Errorf("endpoint change %d: %w", i, err)
		}
		epLat = append(epLat, time.Since(t0))
		cur = next
	}
	// From here on the Ingress has only Exact paths, so a new /pN answers 404
	// until the change that adds it has reached the data path.
	et := netv1.PathTypeExact
	ing.Spec.Rules[0].HTTP.Paths[0].Path = "/root-only"
	ing.Spec.Rules[0].HTTP.Paths[0].PathType = &et
	if ing, err = c.NetworkingV1().Ingresses(ns).Update(ctx, ing, metav1.UpdateOptions{}); err != nil {
		return err
	}
	for i := 0; i < changes; i++ {
		path := "/p" + strconv.Itoa(i)
		ing.Spec.Rules[0].HTTP.Paths = append(ing.Spec.Rules[0].HTTP.Paths, netv1.HTTPIngressPath{Path: path, PathType: &et,
			Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: "svc", Port: netv1.ServiceBackendPort{Number: 80}}}})
		t0 := time.Now()
		if ing, err = c.NetworkingV1().Ingresses(ns).Update(ctx, ing, metav1.UpdateOptions{}); err != nil {
			return err
		}
		if _, err := waitFor(func() bool { _, code := probe(path); return code == 200 }); err != nil {
			return fmt.Errorf("ingress change %d: %w", i, err)
		}
		ingLat = append(ingLat, time.Since(t0))
	}

	host, _ := os.Hostname()
	var b strings.Builder
	fmt.Fprintf(&b, "# Propagation latency\n\n%s, %s, %d cores (%s/%s), %s. Reproduce: `make bench-propagation`.\n\n",
		time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	b.WriteString("Time from issuing the API write (the request to the API server included) to the first request edgegate routes the new way; the probe is a request every few hundred microseconds.\n\n")
	b.WriteString("| change | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n")
	row := func(name string, d []time.Duration) {
		slices.Sort(d)
		q := func(p float64) string {
			return d[min(len(d)-1, int(p*float64(len(d))))].Round(10 * time.Microsecond).String()
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", name, len(d), q(0.50), q(0.90), q(0.99), d[len(d)-1].Round(10*time.Microsecond))
	}
	row("EndpointSlice update (traffic moves to another pod)", epLat)
	row("Ingress update (new Exact path)", ingLat)
	fmt.Print(b.String())
	if out == "" {
		root, err := gatewayproc.ModuleRoot(ctx)
		if err != nil {
			return err
		}
		out = filepath.Join(root, "bench", "results", "propagation.md")
	}
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

type pod struct {
	name string
	ip   netip.Addr
}

func startPod(pn *podnet.Network, name string) (*pod, error) {
	ip := pn.AllocIP()
	ln, err := pn.Listen("tcp", net.JoinHostPort(ip.String(), "8080"))
	if err != nil {
		return nil, err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pod", name)
		io.WriteString(w, name)
	}))
	return &pod{name: name, ip: ip}, nil
}

func sliceFor(p *pod) *discoveryv1.EndpointSlice {
	name, port, proto, ready := "http", int32(8080), corev1.ProtocolTCP, true
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "svc-1", Labels: map[string]string{discoveryv1.LabelServiceName: "svc"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{p.ip.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
}
