package main

import (
	"testing"
	"time"
)

// TestNoLimitIfZero: "0s" in the config (no read or write timeout, no
// parking) is a negative duration for the proxy, whose 0 means its default.
func TestNoLimitIfZero(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{0, -1},
		{time.Second, time.Second},
		{50 * time.Millisecond, 50 * time.Millisecond},
	} {
		if got := noLimitIfZero(c.in); got != c.want {
			t.Errorf("noLimitIfZero(%v) = %v, want %v", c.in, got, c.want)
		}
		if got := parkIdleAfter(c.in); got != c.want {
			t.Errorf("parkIdleAfter(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
