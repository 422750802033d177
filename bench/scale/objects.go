package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/edgegate/edgegate/internal/podnet"
)

const (
	// className is the IngressClass every generated Ingress names.
	className = "edgegate"
	// controllerName is edgegate's IngressClass controller.
	controllerName = "edgegate.io/ingress-controller"
	// maxSliceEndpoints is the endpointslice controller's default
	// --max-endpoints-per-slice.
	maxSliceEndpoints = 100
	// firstPort is the target port of the first EndpointSlice; each slice
	// has its own port, so every generated endpoint is a distinct ip:port
	// (as 50,000 pods would be) with at most 100 addresses of the /24.
	firstPort = 20000
	// firstHost is the last byte of the first generated address: podnet
	// hands out .10 upwards to real pods, the generated ones start above.
	firstHost = 100
	// probeHost is the host of the Ingress of the real pods.
	probeHost = "probe.scale.test"
	// createRate is the guess, in objects per second, for the first
	// estimate; later estimates use the rate measured so far.
	createRate = 700
)

// table is the size of one generated cluster.
type table struct {
	name       string
	ingresses  int
	services   int
	endpoints  int
	namespaces int
}

func (t table) check() error {
	switch {
	case t.ingresses < 1 || t.services < 1 || t.namespaces < 1:
		return errors.New("-ingresses, -services and -namespaces must be at least 1")
	case t.endpoints < 0:
		return errors.New("-endpoints must not be negative")
	case t.services > 99999 || t.ingresses > 99999:
		return errors.New("at most 99,999 Ingresses and Services")
	case t.slices() > 65535-firstPort:
		return fmt.Errorf("%d EndpointSlices: at most %d (one target port each)", t.slices(), 65535-firstPort)
	}
	return nil
}

// scaled is t divided by div, at least one of each object.
func (t table) scaled(name string, div int) table {
	s := table{
		name:      name,
		ingresses: max(t.ingresses/div, 1),
		services:  max(t.services/div, 1),
		endpoints: t.endpoints / div,
	}
	s.namespaces = min(t.namespaces, s.services)
	return s
}

// endpointsOf is the number of endpoints of Service s.
func (t table) endpointsOf(s int) int {
	n := t.endpoints / t.services
	if s < t.endpoints%t.services {
		n++
	}
	return n
}

// slicesOf is the number of EndpointSlices of a Service with n endpoints:
// at least one, as the endpointslice controller keeps an empty one.
func slicesOf(n int) int { return max(1, (n+maxSliceEndpoints-1)/maxSliceEndpoints) }

func (t table) slices() int {
	n := 0
	for s := range t.services {
		n += slicesOf(t.endpointsOf(s))
	}
	return n
}

// objects is the number of API objects of t: namespaces, the IngressClass,
// Services, EndpointSlices, Ingresses and the probe's Service, slice and
// Ingress.
func (t table) objects() int { return t.namespaces + 1 + t.services + t.slices() + t.ingresses + 3 }

// estimate is a rough duration of one table's run on this 2-core machine.
func (t table) estimate(changes, ingressChanges int) time.Duration {
	create := time.Duration(float64(t.objects()) / createRate * float64(time.Second))
	// control plane, gateway start and stop, then per endpoint change: a
	// probed one (10-60 ms), a quiet one and its share of the idle
	// baseline; per Ingress change a rebuild of its host.
	return 20*time.Second + create + time.Duration(changes)*(50*time.Millisecond+2*changeSpacing) +
		time.Duration(ingressChanges)*t.ingressChange()
}

// ingressChange is a rough guess of one Ingress change's write -> routed:
// the write, the watch event, the coalescing and a rebuild of one host.
func (t table) ingressChange() time.Duration {
	return 30*time.Millisecond + time.Duration(t.ingresses)*100*time.Nanosecond
}

// generator makes the objects of a table.
type generator struct {
	table
	base       [4]byte // first three bytes of the pod /24
	pods       [2]*podnet.Pod
	firstSlice []int // global index of Service s's first EndpointSlice
	// probeSlice is the latest stored version of the probe's EndpointSlice,
	// whose one endpoint is pods[probeOn].
	probeSlice *discoveryv1.EndpointSlice
	probeOn    int
}

func newGenerator(t table, podCIDR netip.Prefix, pods [2]*podnet.Pod) (*generator, error) {
	if !podCIDR.Addr().Is4() || podCIDR.Bits() != 24 {
		return nil, fmt.Errorf("pod network %s: want an IPv4 /24", podCIDR)
	}
	g := &generator{table: t, base: podCIDR.Addr().As4(), pods: pods, firstSlice: make([]int, t.services+1)}
	for s := range t.services {
		g.firstSlice[s+1] = g.firstSlice[s] + slicesOf(t.endpointsOf(s))
	}
	return g, nil
}

func namespaceName(i int) string { return fmt.Sprintf("scale-%02d", i) }
func serviceName(s int) string   { return fmt.Sprintf("svc-%05d", s) }

// namespaceOf is the namespace of Service s.
func (g *generator) namespaceOf(s int) string { return namespaceName(s % g.namespaces) }

// service is Service s: headless (the test API server has a /24 service
// CIDR, too small for 2,000 ClusterIPs, and edgegate never uses ClusterIPs),
// with a named http port and a metrics port like a typical workload.
func (g *generator) service(s int) *corev1.Service {
	name := serviceName(s)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: g.namespaceOf(s), Name: name},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{"app.kubernetes.io/name": name},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")},
				{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9090)},
			},
		},
	}
}

// slice is EndpointSlice k (global index) as the endpointslice controller
// writes it. Endpoint notReady (-1: none) has conditions.ready false.
func (g *generator) slice(k, notReady int) *discoveryv1.EndpointSlice {
	s := sort.SearchInts(g.firstSlice, k+1) - 1
	chunk := k - g.firstSlice[s]
	n := min(g.endpointsOf(s)-chunk*maxSliceEndpoints, maxSliceEndpoints)
	name, ns := serviceName(s), g.namespaceOf(s)
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name + "-" + strconv.Itoa(chunk),
			Labels: map[string]string{
				discoveryv1.LabelServiceName: name,
				discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr("http"), Port: ptr(int32(firstPort + k)), Protocol: ptr(corev1.ProtocolTCP)},
			{Name: ptr("metrics"), Port: ptr(int32(9090)), Protocol: ptr(corev1.ProtocolTCP)},
		},
		Endpoints: make([]discoveryv1.Endpoint, 0, max(n, 0)),
	}
	ip := g.base
	for e := range n {
		ip[3] = byte(firstHost + e)
		ready := e != notReady
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{netip.AddrFrom4(ip).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready), Serving: ptr(ready), Terminating: ptr(false)},
			NodeName:   ptr(fmt.Sprintf("node-%02d", e%20)),
			Zone:       ptr(fmt.Sprintf("zone-%c", 'a'+e%3)),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns,
				Name: fmt.Sprintf("%s-%d-%d", name, chunk, e)},
		})
	}
	return sl
}

// ingress is Ingress i: one host, "/" to the Service's http port by name and
// "/api" to it by number, routing to Service i mod services.
func (g *generator) ingress(i int) *netv1.Ingress {
	s := i % g.services
	svc := serviceName(s)
	prefix := netv1.PathTypePrefix
	backend := func(port netv1.ServiceBackendPort) netv1.IngressBackend {
		return netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: svc, Port: port}}
	}
	return &netv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: g.namespaceOf(s), Name: fmt.Sprintf("ing-%05d", i),
			Labels: map[string]string{"app.kubernetes.io/name": svc}},
		Spec: netv1.IngressSpec{
			IngressClassName: ptr(className),
			Rules: []netv1.IngressRule{{
				Host: fmt.Sprintf("ing-%05d.scale.test", i),
				IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{Paths: []netv1.HTTPIngressPath{
					{Path: "/", PathType: &prefix, Backend: backend(netv1.ServiceBackendPort{Name: "http"})},
					{Path: "/api", PathType: &prefix, Backend: backend(netv1.ServiceBackendPort{Number: 80})},
				}}},
			}},
		},
	}
}

// probeSliceFor is the probe Service's EndpointSlice with the single
// endpoint pod.
func (g *generator) probeSliceFor(pod *podnet.Pod) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespaceName(0), Name: "probe-0",
			Labels: map[string]string{discoveryv1.LabelServiceName: "probe"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(pod.Port)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{pod.IP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}
}

// create writes the whole table through the API server with workers
// concurrent requests and records the timings in r.
func (g *generator) create(ctx context.Context, rc *rest.Config, workers int, r *result) error {
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	began := time.Now()
	rate := float64(createRate)
	phase := func(what string, n int, create func(ctx context.Context, i int) error) error {
		est := time.Duration(float64(n) / rate * float64(time.Second))
		log.Printf("creating %s %s with %d clients (~%s)", commas(n), what, min(workers, n), roundEstimate(est))
		d, err := createAll(ctx, what, n, workers, create)
		if err != nil {
			return err
		}
		if d > 0 {
			rate = float64(n) / d.Seconds()
		}
		log.Printf("  %s %s in %s (%.0f/s)", commas(n), what, d.Round(time.Millisecond), rate)
		r.phases = append(r.phases, phaseTime{what: what, n: n, took: d})
		return nil
	}
	create := metav1.CreateOptions{}
	err = phase("namespaces", g.namespaces, func(ctx context.Context, i int) error {
		_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespaceName(i)}}, create)
		return err
	})
	if err != nil {
		return err
	}
	_, err = c.NetworkingV1().IngressClasses().Create(ctx, &netv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: className},
		Spec:       netv1.IngressClassSpec{Controller: controllerName},
	}, create)
	if err != nil {
		return fmt.Errorf("create IngressClass: %w", err)
	}
	err = phase("Services", g.services, func(ctx context.Context, s int) error {
		svc := g.service(s)
		_, err := c.CoreV1().Services(svc.Namespace).Create(ctx, svc, create)
		return err
	})
	if err != nil {
		return err
	}
	err = phase("EndpointSlices", g.slices(), func(ctx context.Context, k int) error {
		sl := g.slice(k, -1)
		_, err := c.DiscoveryV1().EndpointSlices(sl.Namespace).Create(ctx, sl, create)
		return err
	})
	if err != nil {
		return err
	}
	err = phase("Ingresses", g.ingresses, func(ctx context.Context, i int) error {
		ing := g.ingress(i)
		_, err := c.NetworkingV1().Ingresses(ing.Namespace).Create(ctx, ing, create)
		return err
	})
	if err != nil {
		return err
	}
	if err := g.createProbe(ctx, c); err != nil {
		return err
	}
	r.create = time.Since(began)
	return nil
}

// createProbe creates the Service, EndpointSlice (pod a) and Ingress whose
// changes are timed with real requests.
func (g *generator) createProbe(ctx context.Context, c kubernetes.Interface) error {
	ns := namespaceName(0)
	_, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(int32(g.pods[0].Port))}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create probe Service: %w", err)
	}
	if g.probeSlice, err = c.DiscoveryV1().EndpointSlices(ns).Create(ctx, g.probeSliceFor(g.pods[0]), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create probe EndpointSlice: %w", err)
	}
	// "/" is Exact, so that a path the Ingress changes add answers 404
	// until the change has reached the data path.
	_, err = c.NetworkingV1().Ingresses(ns).Create(ctx, &netv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		Spec: netv1.IngressSpec{IngressClassName: ptr(className), Rules: []netv1.IngressRule{{Host: probeHost,
			IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{Paths: []netv1.HTTPIngressPath{
				probePath("/", netv1.PathTypeExact),
			}}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create probe Ingress: %w", err)
	}
	return nil
}

// probePath is a path of the probe Ingress to the probe Service's port 80
// (by number, so every path shares the probe's one backend).
func probePath(path string, pt netv1.PathType) netv1.HTTPIngressPath {
	return netv1.HTTPIngressPath{Path: path, PathType: ptr(pt), Backend: netv1.IngressBackend{
		Service: &netv1.IngressServiceBackend{Name: "probe", Port: netv1.ServiceBackendPort{Number: 80}}}}
}

// createAll calls create for 0..n-1 from up to workers goroutines, logging
// progress every few seconds, and returns how long it took.
func createAll(ctx context.Context, what string, n, workers int, create func(ctx context.Context, i int) error) (time.Duration, error) {
	start := time.Now()
	var next, done atomic.Int64
	eg, ectx := errgroup.WithContext(ctx)
	for range min(workers, n) {
		eg.Go(func() error {
			for ectx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				if err := create(ectx, i); err != nil {
					return fmt.Errorf("create %s #%d: %w", what, i, err)
				}
				done.Add(1)
			}
			return ectx.Err()
		})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			d, el := int(done.Load()), time.Since(start)
			rate := float64(d) / el.Seconds()
			left := "?"
			if rate > 0 {
				left = roundEstimate(time.Duration(float64(n-d) / rate * float64(time.Second)))
			}
			log.Printf("  %s: %s/%s (%.0f/s, ~%s left)", what, commas(d), commas(n), rate, left)
		}
	})
	err := eg.Wait()
	close(stop)
	wg.Wait()
	return time.Since(start), err
}

func ptr[T any](v T) *T { return &v }

// commas formats n with thousands separators.
func commas(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + commas(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// roundEstimate rounds a time estimate to what it is worth.
func roundEstimate(d time.Duration) string {
	switch {
	case d < time.Second:
		return "1s"
	case d < 10*time.Second:
		return d.Round(time.Second).String()
	case d < 2*time.Minute:
		return d.Round(5 * time.Second).String()
	default:
		return d.Round(30 * time.Second).String()
	}
}
