//go:build !race

package balancer

import "testing"

// TestPickAllocs locks in Policy's contract: a pick never allocates.
func TestPickAllocs(t *testing.T) {
	for _, n := range []int{0, 1, 3, 64} {
		var rr RoundRobin
		eps := endpoints(n)
		if allocs := testing.AllocsPerRun(1000, func() { rr.Pick(eps) }); allocs != 0 {
			t.Errorf("RoundRobin.Pick over %d endpoints: %v allocs/op, want 0", n, allocs)
		}
	}
}
