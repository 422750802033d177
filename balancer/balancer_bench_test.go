package balancer

import (
	"fmt"
	"testing"
)

func BenchmarkRoundRobinPick(b *testing.B) {
	for _, n := range []int{1, 3, 64} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			var rr RoundRobin
			eps := endpoints(n)
			b.ReportAllocs()
			for b.Loop() {
				if rr.Pick(eps) == nil {
					b.Fatal("nil pick")
				}
			}
		})
	}
}

func BenchmarkRoundRobinPickParallel(b *testing.B) {
	var rr RoundRobin
	eps := endpoints(8)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if rr.Pick(eps) == nil {
				b.Fatal("nil pick")
			}
		}
	})
}
