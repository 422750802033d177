package main

import (
	"bytes"
	"log/slog"
	"runtime"
	"strings"
	"testing"
)

func TestProcsForLoops(t *testing.T) {
	for _, c := range []struct{ loops, procs, want int }{
		{0, 1, 1}, // loops off: untouched
		{0, 64, 64},
		{2, 1, 3}, // one P per loop plus a spare
		{2, 2, 3},
		{2, 3, 3}, // enough already
		{2, 8, 8}, // never lowered
		{256, 4, 257},
	} {
		if got := procsForLoops(c.loops, c.procs); got != c.want {
			t.Errorf("procsForLoops(%d, %d) = %d, want %d", c.loops, c.procs, got, c.want)
		}
	}
}

// TestRaiseProcsForLoops changes GOMAXPROCS (restored after), so it does
// not run in parallel.
func TestRaiseProcsForLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the event loops are Linux only")
	}
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))

	raiseProcsForLoops(0, logger)
	if got := runtime.GOMAXPROCS(0); got != 1 || log.Len() != 0 {
		t.Fatalf("loops off: GOMAXPROCS %d, log %q", got, log.String())
	}
	raiseProcsForLoops(2, logger)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("2 loops: GOMAXPROCS %d, want 3", got)
	}
	if s := log.String(); !strings.Contains(s, "level=INFO") || !strings.Contains(s, "from=1 to=3 event_loops=2") {
		t.Errorf("log: %q", s)
	}
	log.Reset()
	raiseProcsForLoops(2, logger)
	if log.Len() != 0 {
		t.Errorf("logged with GOMAXPROCS already enough: %q", log.String())
	}
}
