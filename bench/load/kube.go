package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/edgegate/edgegate/internal/controlplane"
)

// kube writes the bench's objects to the API server.
type kube struct{ c kubernetes.Interface }

func newKube(cp *controlplane.ControlPlane) (*kube, error) {
	rc := cp.RESTConfig()
	rc.QPS, rc.Burst = 2000, 2000 // 1,000 Ingresses in a few seconds
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &kube{c: c}, nil
}

// createBase writes the namespace, the IngressClass "edgegate", the Service
// "svc" (port 80 -> 8080), an EndpointSlice with both pods and the Ingress for
// benchHost.
func (k *kube) createBase(ctx context.Context, pods []*pod) error {
	if _, err := k.c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := k.c.NetworkingV1().IngressClasses().Create(ctx, &netv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: "edgegate"},
		Spec:       netv1.IngressClassSpec{Controller: "edgegate.io/ingress-controller"},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create IngressClass: %w", err)
	}
	if _, err := k.c.CoreV1().Services(benchNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "svc"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	name, port, proto, ready := "http", int32(8080), corev1.ProtocolTCP, true
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "svc-1", Labels: map[string]string{discoveryv1.LabelServiceName: "svc"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	for _, p := range pods {
		host, _, _ := net.SplitHostPort(p.addr)
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	if _, err := k.c.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := k.c.NetworkingV1().Ingresses(benchNS).Create(ctx, ingress("bench", benchHost), metav1.CreateOptions{})
	return err
}

// createExtraIngresses writes extraN Ingresses, one host each, all to svc.
func (k *kube) createExtraIngresses(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range extraN {
		g.Go(func() error {
			_, err := k.c.NetworkingV1().Ingresses(benchNS).Create(ctx, ingress(fmt.Sprintf("h%04d", i), extraHost(i)), metav1.CreateOptions{})
			return err
		})
	}
	return g.Wait()
}

func ingress(name, host string) *netv1.Ingress {
	cls := "edgegate"
	pt := netv1.PathTypePrefix
	return &netv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: netv1.IngressSpec{IngressClassName: &cls, Rules: []netv1.IngressRule{{Host: host,
			IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{Paths: []netv1.HTTPIngressPath{
				{Path: "/", PathType: &pt, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{
					Name: "svc", Port: netv1.ServiceBackendPort{Number: 80}}}},
			}}}}}},
	}
}

// waitHosts polls edgegate until every extra host answers 200.
func waitHosts(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 2 * time.Second}
	for i := range extraN {
		for {
			code, _, err := get(ctx, c, addr, extraHost(i), "/small")
			if err == nil && code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("edgegate: host %s not routed after %s (last: %d %v)", extraHost(i), timeout, code, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// get sends one GET with the given Host and returns the status and body length.
func get(ctx context.Context, c *http.Client, addr, host, path string) (int, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, int(n), err
}
