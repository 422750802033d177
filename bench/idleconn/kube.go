package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/edgegate/edgegate/internal/podnet"
)

const (
	ns   = "idleconn"
	host = "idle.test"
)

// pod is an HTTP server in the pod network namespace; open counts the
// gateway's connections to it (its upstream pool), which must be back to
// zero when memory is measured.
type pod struct {
	ip   netip.Addr
	open atomic.Int64
}

func startPod(pn *podnet.Network) (*pod, error) {
	p := &pod{ip: pn.AllocIP()}
	ln, err := pn.Listen("tcp", net.JoinHostPort(p.ip.String(), "8080"))
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Pod", "a")
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "ok\n")
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				p.open.Add(1)
			case http.StateClosed, http.StateHijacked:
				p.open.Add(-1)
			}
		},
	}
	go srv.Serve(ln)
	return p, nil
}

// createObjects creates the namespace, the IngressClass, the Service, the
// EndpointSlice (the pod) and the Ingress routing host to it.
func createObjects(ctx context.Context, c kubernetes.Interface, p *pod) error {
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := c.NetworkingV1().IngressClasses().Create(ctx, &netv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: "edgegate"},
		Spec:       netv1.IngressClassSpec{Controller: "edgegate.io/ingress-controller"},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create IngressClass: %w", err)
	}
	if _, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "svc"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	name, port, proto, ready := "http", int32(8080), corev1.ProtocolTCP, true
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "svc-1", Labels: map[string]string{discoveryv1.LabelServiceName: "svc"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{p.ip.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	cls := "edgegate"
	pt := netv1.PathTypePrefix
	_, err := c.NetworkingV1().Ingresses(ns).Create(ctx, &netv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "idle"},
		Spec: netv1.IngressSpec{IngressClassName: &cls, Rules: []netv1.IngressRule{{Host: host,
			IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{Paths: []netv1.HTTPIngressPath{
				{Path: "/", PathType: &pt, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: "svc", Port: netv1.ServiceBackendPort{Number: 80}}}},
			}}}}}},
	}, metav1.CreateOptions{})
	return err
}
