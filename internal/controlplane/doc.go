// Package controlplane starts a real Kubernetes control plane, etcd plus
// kube-apiserver v1.36.3, as child processes on free loopback ports, for
// edgegate's end-to-end tests and the demo.
//
// The binaries are built from tools/controlplane by hack/controlplane.sh
// (`make controlplane`) into a cache directory outside the repository; see
// DefaultBinDir. Nothing else of Kubernetes runs: no controller manager, no
// scheduler, no kubelet. Objects that a controller would normally write
// (EndpointSlices, status) are written by the tests themselves, which is what
// edgegate watches anyway.
//
// The API server serves HTTPS on 127.0.0.1 with a self-signed CA and accepts
// a static bearer token for an admin in group system:masters (RBAC is on;
// system:masters bypasses it). Kubeconfig returns the path of a kubeconfig
// file with those credentials, RESTConfig and Client the same for Go code.
//
// Starting one takes a few seconds, so tests share one per test binary:
//
//	func TestMain(m *testing.M) { controlplane.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		cp := controlplane.ForTest(t) // started on first use, stopped by Main
//		...
//	}
//
// Tests that stop the API server (StopAPIServer/StartAPIServer) must not
// disturb the shared one: they take a private control plane with NewForTest.
// Without the binaries these helpers fail the test with a hint to run
// `make controlplane`; with EDGEGATE_SKIP_E2E=1 (or -short) they skip it.
//
// The children get SIGKILL when the process that started them dies
// (Pdeathsig), so a crashed test binary does not leave them running.
package controlplane
