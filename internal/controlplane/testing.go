package controlplane

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

// shared is the control plane that ForTest hands out, one per test binary.
var shared struct {
	once    sync.Once
	cp      *ControlPlane
	err     error
	running atomic.Bool // Run is active: someone will stop shared.cp
}

// Main is the TestMain of packages that use ForTest:
//
//	func TestMain(m *testing.M) { controlplane.Main(m) }
//
// It runs the tests, stops the shared control plane and exits.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain that does more: it runs the
// tests, stops the shared control plane if one was started and returns the
// exit code.
func Run(m *testing.M) int {
	shared.running.Store(true)
	code := m.Run()
	shared.running.Store(false)
	if shared.cp != nil {
		if err := shared.cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "controlplane: stop shared control plane: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// ForTest returns the control plane shared by the tests of this test binary,
// starting it on first use. The package's TestMain must be Main (or call
// Run), which stops it after the last test. Tests must not stop or restart
// the shared API server; use NewForTest for that. Each test should work in
// its own namespace.
//
// ForTest skips the test when EDGEGATE_SKIP_E2E=1 or -short is set, and
// fails it with a hint to run `make controlplane` when the binaries are
// missing.
func ForTest(t testing.TB) *ControlPlane {
	t.Helper()
	requireE2E(t)
	if !shared.running.Load() {
		t.Fatal("controlplane.ForTest needs the package's TestMain to be " +
			"`func TestMain(m *testing.M) { controlplane.Main(m) }` (or to call controlplane.Run)")
	}
	shared.once.Do(func() {
		shared.cp, shared.err = Start(context.Background(), Config{})
	})
	if shared.err != nil {
		t.Fatalf("start shared control plane: %v", shared.err)
	}
	return shared.cp
}

// NewForTest starts a control plane of the test's own, stopped when the test
// ends; for tests that stop and restart the API server. Logs go to t.Logf.
// It skips and fails like ForTest.
func NewForTest(t testing.TB) *ControlPlane {
	t.Helper()
	requireE2E(t)
	var done atomic.Bool // t.Logf panics after the test ends
	cp, err := Start(t.Context(), Config{Logf: func(format string, args ...any) {
		if !done.Load() {
			t.Logf(format, args...)
		}
	}})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		done.Store(true)
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}

// SkipE2E reports whether end-to-end tests are switched off
// (EDGEGATE_SKIP_E2E=1 or go test -short).
func SkipE2E() bool {
	return os.Getenv("EDGEGATE_SKIP_E2E") == "1" || testing.Short()
}

func requireE2E(t testing.TB) {
	t.Helper()
	if SkipE2E() {
		t.Skip("end-to-end test skipped (EDGEGATE_SKIP_E2E=1 or -short)")
	}
	if err := CheckBinaries(DefaultBinDir()); err != nil {
		t.Fatalf("%v\nthe end-to-end tests need the real kube-apiserver and etcd: run `make controlplane` "+
			"(or hack/controlplane.sh; set EDGEGATE_CP_DIR if they live elsewhere), "+
			"or set EDGEGATE_SKIP_E2E=1 to skip these tests", err)
	}
}
