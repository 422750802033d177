package controlplane_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/edgegate/edgegate/internal/controlplane"
)

func TestMain(m *testing.M) { controlplane.Main(m) }

func TestSharedServesObjects(t *testing.T) {
	t.Parallel()
	cp := controlplane.ForTest(t)
	if again := controlplane.ForTest(t); again != cp {
		t.Fatal("ForTest returned a second control plane")
	}
	ctx := t.Context()

	// The kubeconfig file works on its own.
	rc, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != cp.URL() {
		t.Errorf("kubeconfig server %q, want %q", rc.Host, cp.URL())
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != controlplane.Version {
		t.Errorf("server version %q, want %q (rebuild with hack/controlplane.sh)", v.GitVersion, controlplane.Version)
	}
	createObjects(ctx, t, cs, "shared")
}

func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	cp := controlplane.NewForTest(t)
	ctx := t.Context()
	cs := cp.Client()
	createObjects(ctx, t, cs, "restart")
	url := cp.URL()

	began := time.Now()
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("StopAPIServer took %v", time.Since(began))
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := cs.CoreV1().Namespaces().Get(rctx, "restart", metav1.GetOptions{})
	cancel()
	if err == nil {
		t.Fatal("API server still answers after StopAPIServer")
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if cp.URL() != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, cp.URL())
	}
	// The clientset made before the restart works against the new process.
	if _, err := cs.CoreV1().Services("restart").Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("service lost across restart: %v", err)
	}
	es, err := cs.DiscoveryV1().EndpointSlices("restart").Get(ctx, "web-abc", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("endpointslice lost across restart: %v", err)
	}
	if got := es.Endpoints[0].Addresses[0]; got != "10.244.7.10" {
		t.Errorf("endpoint address %q after restart", got)
	}
	if err := cp.StartAPIServer(ctx); err == nil {
		t.Error("StartAPIServer on a running API server did not fail")
	}

	dir := cp.Dir()
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("work dir %s not removed: %v", dir, err)
	}
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestMissingBinaries(t *testing.T) {
	t.Parallel()
	_, err := controlplane.Start(t.Context(), controlplane.Config{BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make controlplane") {
		t.Fatalf("Start without binaries: %v, want a hint to run make controlplane", err)
	}
}

// createObjects creates namespace ns with a Service "web" and its
// EndpointSlice "web-abc", as a controller would.
func createObjects(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	ready, portName, port := true, "http", int32(8080)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "web-abc",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.7.10"},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
