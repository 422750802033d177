package pebble

import (
	"os"
	"sync/atomic"
	"testing"
)

// ForTest starts a Pebble of the test's own on free loopback ports (see
// HTTPPort and TLSPort), stopped when the test ends. Logs go to t.Logf.
//
// It skips the test when EDGEGATE_SKIP_E2E=1 or -short is set, and fails it
// with a hint to run `make pebble` when the binaries are missing.
func ForTest(t testing.TB) *Pebble {
	t.Helper()
	if SkipE2E() {
		t.Skip("Pebble test skipped (EDGEGATE_SKIP_E2E=1 or -short)")
	}
	if err := CheckBinaries(DefaultBinDir()); err != nil {
		t.Fatalf("%v\nthe ACME tests need Pebble: run `make pebble` (or hack/pebble.sh; set "+
			"EDGEGATE_PEBBLE_DIR if the binaries live elsewhere), or set EDGEGATE_SKIP_E2E=1 to skip these tests", err)
	}
	var done atomic.Bool // t.Logf panics after the test ends
	p, err := Start(t.Context(), Config{Logf: func(format string, args ...any) {
		if !done.Load() {
			t.Logf(format, args...)
		}
	}})
	if err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	t.Cleanup(func() {
		done.Store(true)
		if t.Failed() {
			t.Logf("pebble log:%s", p.LogTail())
		}
		if err := p.Stop(); err != nil {
			t.Errorf("stop pebble: %v", err)
		}
	})
	return p
}

// SkipE2E reports whether end-to-end tests are switched off
// (EDGEGATE_SKIP_E2E=1 or go test -short).
func SkipE2E() bool {
	return os.Getenv("EDGEGATE_SKIP_E2E") == "1" || testing.Short()
}
