package balancer

import (
	"fmt"
	"sync"
	"testing"
)

func endpoints(n int) []*Endpoint {
	eps := make([]*Endpoint, n)
	for i := range eps {
		eps[i] = &Endpoint{Addr: fmt.Sprintf("10.0.0.%d:8080", i+1)}
	}
	return eps
}

func TestRoundRobinEmptyAndOne(t *testing.T) {
	t.Parallel()
	var rr RoundRobin
	if ep := rr.Pick(nil); ep != nil {
		t.Errorf("Pick(nil) = %v, want nil", ep)
	}
	if ep := rr.Pick([]*Endpoint{}); ep != nil {
		t.Errorf("Pick(empty) = %v, want nil", ep)
	}
	one := endpoints(1)
	for i := range 5 {
		if ep := rr.Pick(one); ep != one[0] {
			t.Fatalf("pick %d of one endpoint = %v, want %v", i, ep, one[0])
		}
	}
}

// TestRoundRobinSequence: consecutive picks visit the endpoints in order.
func TestRoundRobinSequence(t *testing.T) {
	t.Parallel()
	var rr RoundRobin
	eps := endpoints(3)
	for i := range 7 {
		if got, want := rr.Pick(eps), eps[i%3]; got != want {
			t.Fatalf("pick %d = %s, want %s", i, got.Addr, want.Addr)
		}
	}
}

// TestRoundRobinEvenUnderConcurrency: every counter value is handed out
// exactly once, so picks from many goroutines split exactly evenly when
// their total is a multiple of the endpoint count.
func TestRoundRobinEvenUnderConcurrency(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                  string
		endpoints, goroutines int
		perGoroutine          int
	}{
		{"two endpoints", 2, 8, 1000},
		{"three endpoints", 3, 6, 999},
		{"seven endpoints", 7, 7, 700},
		{"64 endpoints", 64, 16, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var rr RoundRobin
			eps := endpoints(tc.endpoints)
			counts := make([][]int, tc.goroutines)
			var wg sync.WaitGroup
			for g := range tc.goroutines {
				counts[g] = make([]int, tc.endpoints)
				index := make(map[*Endpoint]int, len(eps))
				for i, ep := range eps {
					index[ep] = i
				}
				wg.Go(func() {
					for range tc.perGoroutine {
						ep := rr.Pick(eps)
						i, ok := index[ep]
						if !ok {
							t.Errorf("picked %v, not in the list", ep)
							return
						}
						counts[g][i]++
					}
				})
			}
			wg.Wait()
			total := tc.goroutines * tc.perGoroutine
			if total%tc.endpoints != 0 {
				t.Fatalf("bad case: %d picks over %d endpoints", total, tc.endpoints)
			}
			want := total / tc.endpoints
			for i := range eps {
				got := 0
				for g := range counts {
					got += counts[g][i]
				}
				if got != want {
					t.Errorf("endpoint %d picked %d times, want %d", i, got, want)
				}
			}
		})
	}
}

func TestEndpointCounters(t *testing.T) {
	t.Parallel()
	ep := &Endpoint{Addr: "10.0.0.1:80"}
	ep.Begin()
	ep.Begin()
	if got := ep.InFlight(); got != 2 {
		t.Errorf("InFlight = %d, want 2", got)
	}
	ep.End(false)
	ep.End(true)
	if ep.InFlight() != 0 || ep.Requests() != 2 || ep.Failures() != 1 {
		t.Errorf("InFlight %d Requests %d Failures %d, want 0 2 1", ep.InFlight(), ep.Requests(), ep.Failures())
	}
}
