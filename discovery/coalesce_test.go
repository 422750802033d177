package discovery

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// signal is how the watcher's event handlers signal: never blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// The tests run in a synctest bubble: time is virtual and advances only when
// every goroutine is blocked, so the timing assertions are exact, not flaky.

func TestCoalesceIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		in := make(chan struct{}, 1)
		var fired []time.Duration
		start := time.Now()
		go coalesce(ctx, in, 3*time.Millisecond, 20*time.Millisecond, func() {
			fired = append(fired, time.Since(start))
		})

		// A burst of 5 signals 1ms apart: one build, 3ms after the last.
		for range 5 {
			signal(in)
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if len(fired) != 1 || fired[0] != 7*time.Millisecond {
			t.Fatalf("fired at %v, want once at 7ms", fired)
		}

		// Quiet: nothing more.
		time.Sleep(time.Second)
		synctest.Wait()
		if len(fired) != 1 {
			t.Fatalf("fired at %v without a signal", fired)
		}
	})
}

func TestCoalesceMax(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		in := make(chan struct{}, 1)
		var fired []time.Duration
		start := time.Now()
		go coalesce(ctx, in, 3*time.Millisecond, 20*time.Millisecond, func() {
			fired = append(fired, time.Since(start))
		})
		// A signal every 2ms for 50ms never leaves 3ms of quiet: builds
		// happen every 20ms anyway.
		for range 25 {
			signal(in)
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		// Signals at 0, 2, ... 48ms: max cuts at 20 and 40, the last burst ends 3ms after 48.
		want := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 51 * time.Millisecond}
		if len(fired) != len(want) {
			t.Fatalf("fired at %v, want %v", fired, want)
		}
		for i := range want {
			if fired[i] != want[i] {
				t.Fatalf("fired at %v, want %v", fired, want)
			}
		}
	})
}

func TestCoalesceSignalDuringFire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		in := make(chan struct{}, 1)
		n := 0
		go coalesce(ctx, in, time.Millisecond, 5*time.Millisecond, func() {
			n++
			if n == 1 {
				signal(in) // a change that arrives while building
			}
		})
		signal(in)
		time.Sleep(time.Second)
		synctest.Wait()
		if n != 2 {
			t.Fatalf("fired %d times, want 2 (the change during the first build needs a second)", n)
		}
	})
}

func TestCoalesceStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		in := make(chan struct{}, 1)
		done := make(chan struct{})
		go func() {
			coalesce(ctx, in, time.Millisecond, 5*time.Millisecond, func() { t.Error("fired after cancel") })
			close(done)
		}()
		signal(in)
		cancel()
		<-done
	})
}
