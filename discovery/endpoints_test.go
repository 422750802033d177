package discovery

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestResolveEndpointConditions checks which endpoints receive new
// requests: ready (unset counts as ready) ones, terminating or not; without
// any ready endpoint for the Service port, over all its slices, the serving
// terminating ones (kube-proxy's fallback); otherwise none (503).
func TestResolveEndpointConditions(t *testing.T) {
	t.Parallel()
	type cond struct {
		addr                        string
		ready, serving, terminating *bool
	}
	yes, no := ptr(true), ptr(false)
	// slice is an EndpointSlice of Service "web" whose port is named port.
	slice := func(name, port string, eps ...cond) *discoveryv1.EndpointSlice {
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{labelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr(port), Port: ptr(int32(8080))}},
		}
		for _, e := range eps {
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{e.addr},
				Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating},
			})
		}
		return sl
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "metrics", Port: 9090}}},
	}
	for _, tc := range []struct {
		name   string
		port   string // the Ingress backend port; "80" unless set
		slices []*discoveryv1.EndpointSlice
		want   []string
	}{
		{"unset conditions count as ready", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1"}),
		}, []string{"10.0.0.1:8080"}},
		{"ready kept, not ready dropped", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: yes}, cond{addr: "10.0.0.2", ready: no}),
		}, []string{"10.0.0.1:8080"}},
		{"ready and terminating kept (publishNotReadyAddresses)", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: yes, serving: yes, terminating: yes}),
		}, []string{"10.0.0.1:8080"}},
		{"ready unset and terminating kept", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", terminating: yes}),
		}, []string{"10.0.0.1:8080"}},
		{"serving terminating not used while one is ready", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: yes, serving: yes, terminating: no},
				cond{addr: "10.0.0.2", ready: no, serving: yes, terminating: yes}),
		}, []string{"10.0.0.1:8080"}},
		{"no ready: serving terminating used", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: no, serving: yes, terminating: yes},
				cond{addr: "10.0.0.2", ready: no, serving: yes, terminating: yes},
				cond{addr: "10.0.0.3", ready: no, serving: no, terminating: yes}),
		}, []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{"no ready: serving but not terminating is not used", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: no, serving: yes, terminating: no},
				cond{addr: "10.0.0.2", ready: no, serving: yes}),
		}, nil},
		{"no ready and none serving: none", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: no, serving: no, terminating: yes},
				cond{addr: "10.0.0.2", ready: no}),
		}, nil},
		{"serving unset is as ready: not serving", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: no, terminating: yes}),
		}, nil},
		{"a ready endpoint in another slice wins over the fallback", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: no, serving: yes, terminating: yes}),
			slice("b", "http", cond{addr: "10.0.0.2", ready: yes}),
			slice("c", "http", cond{addr: "10.0.0.3", ready: no, serving: yes, terminating: yes}),
		}, []string{"10.0.0.2:8080"}},
		{"fallback over all slices", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: no, serving: yes, terminating: yes}),
			slice("b", "http", cond{addr: "10.0.0.2", ready: no}),
			slice("c", "http", cond{addr: "10.0.0.3", ready: no, serving: yes, terminating: yes}),
		}, []string{"10.0.0.1:8080", "10.0.0.3:8080"}},
		{"fallback is per Service port: http has a ready endpoint", "80", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: yes}),
			slice("b", "metrics", cond{addr: "10.0.0.2", ready: no, serving: yes, terminating: yes}),
		}, []string{"10.0.0.1:8080"}},
		{"fallback is per Service port: metrics has none", "metrics", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "10.0.0.1", ready: yes}),
			slice("b", "metrics", cond{addr: "10.0.0.2", ready: no, serving: yes, terminating: yes}),
		}, []string{"10.0.0.2:8080"}},
		{"a ready endpoint without a usable address does not count", "", []*discoveryv1.EndpointSlice{
			slice("a", "http", cond{addr: "not-an-ip", ready: yes},
				cond{addr: "10.0.0.2", ready: no, serving: yes, terminating: yes}),
		}, []string{"10.0.0.2:8080"}},
		{"no slices: none", "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			port := tc.port
			if port == "" {
				port = "80"
			}
			got, errMsg := ResolveEndpoints("default", "web", port, svc, tc.slices)
			if errMsg != "" {
				t.Fatalf("error %q", errMsg)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			// The order of the slices does not matter.
			rev := slices.Clone(tc.slices)
			slices.Reverse(rev)
			if got, _ := ResolveEndpoints("default", "web", port, svc, rev); !slices.Equal(got, tc.want) {
				t.Fatalf("slices reversed: got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestResolveEndpointsDualStack: a dual-stack Service has every pod in an
// IPv4 and an IPv6 slice; its primary family (spec.ipFamilies[0]) is used,
// the other only when the primary has no endpoints. Single-stack Services
// use what their slices hold.
func TestResolveEndpointsDualStack(t *testing.T) {
	t.Parallel()
	slice := func(name string, typ discoveryv1.AddressType, addrs ...string) *discoveryv1.EndpointSlice {
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{labelServiceName: "web"}},
			AddressType: typ,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		}
		for _, a := range addrs {
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
		}
		return sl
	}
	svc := func(fams ...corev1.IPFamily) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
			Spec:       corev1.ServiceSpec{IPFamilies: fams, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}
	}
	v4, v6 := corev1.IPv4Protocol, corev1.IPv6Protocol
	both4 := slice("v4", discoveryv1.AddressTypeIPv4, "10.0.0.1", "10.0.0.2")
	both6 := slice("v6", discoveryv1.AddressTypeIPv6, "fd00::1", "fd00::2")
	empty4 := slice("v4", discoveryv1.AddressTypeIPv4)
	for _, tc := range []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   []string
	}{
		{"IPv4 primary", svc(v4, v6), []*discoveryv1.EndpointSlice{both4, both6}, []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{"IPv6 primary", svc(v6, v4), []*discoveryv1.EndpointSlice{both4, both6}, []string{"[fd00::1]:8080", "[fd00::2]:8080"}},
		{"primary without endpoints: the other family", svc(v4, v6), []*discoveryv1.EndpointSlice{empty4, both6}, []string{"[fd00::1]:8080", "[fd00::2]:8080"}},
		{"single-stack IPv6", svc(v6), []*discoveryv1.EndpointSlice{both6}, []string{"[fd00::1]:8080", "[fd00::2]:8080"}},
		{"families unset: every slice", svc(), []*discoveryv1.EndpointSlice{both4, both6}, []string{"10.0.0.1:8080", "10.0.0.2:8080", "[fd00::1]:8080", "[fd00::2]:8080"}},
	} {
		got, msg := ResolveEndpoints("default", "web", "80", tc.svc, tc.slices)
		if msg != "" || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v %q, want %v", tc.name, got, msg, tc.want)
		}
	}
}
