package main

import (
	"testing"
	"time"
)

// TestParkIdleAfter: "0s" in the config turns parking off, which the proxy
// spells as a negative duration (its 0 means the default).
func TestParkIdleAfter(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{0, -1},
		{time.Second, time.Second},
		{50 * time.Millisecond, 50 * time.Millisecond},
	} {
		if got := parkIdleAfter(c.in); got != c.want {
			t.Errorf("parkIdleAfter(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
