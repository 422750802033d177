package childproc

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestStopKillAndLogTail(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, err := Start("sleeper", "/bin/sh", []string{"-c", "echo child-$((40+2)); exec sleep 60"}, Options{LogPath: filepath.Join(dir, "log"), Env: []string{"X=1"}})
	if err != nil {
		t.Fatal(err)
	}
	// Readiness: the child has written its line.
	if err := WaitReady(context.Background(), p, 10*time.Millisecond, func() bool {
		return strings.Contains(p.LogTail(), "child-42")
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatalf("sleep should stop on SIGTERM: %v", err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill after exit: %v", err)
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	t.Parallel()
	p, err := Start("stubborn", "/bin/sh", []string{"-c", "trap '' TERM; echo ready-$((40+2)); while :; do sleep 1; done"}, Options{LogPath: filepath.Join(t.TempDir(), "log")})
	if err != nil {
		t.Fatal(err)
	}
	WaitReady(context.Background(), p, 10*time.Millisecond, func() bool { return strings.Contains(p.LogTail(), "ready-42") })
	if err := p.Stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop of a process ignoring SIGTERM: %v, want killed", err)
	}
}

func TestWaitReadyReportsExitAndAddrInUse(t *testing.T) {
	t.Parallel()
	p, err := Start("binder", "/bin/sh", []string{"-c", "echo 'listen tcp 127.0.0.1:1: bind: address already in use'; exit 1"}, Options{LogPath: filepath.Join(t.TempDir(), "log")})
	if err != nil {
		t.Fatal(err)
	}
	err = WaitReady(context.Background(), p, 10*time.Millisecond, func() bool { return false })
	if !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), "binder exited during startup") {
		t.Fatalf("got %v, want an exit error wrapping ErrAddrInUse", err)
	}
}

func TestStartMissingBinary(t *testing.T) {
	t.Parallel()
	if _, err := Start("nope", filepath.Join(t.TempDir(), "missing"), nil, Options{LogPath: filepath.Join(t.TempDir(), "log")}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}

func TestCheckExecutablesAndCacheDir(t *testing.T) {
	dir := t.TempDir()
	missing := errors.New("missing")
	os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644)
	if err := CheckExecutables(missing, dir, "tool"); err != nil {
		t.Errorf("executable present: %v", err)
	}
	for _, name := range []string{"data", "absent"} {
		if err := CheckExecutables(missing, dir, "tool", name); !errors.Is(err, missing) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v, want the sentinel naming it", name, err)
		}
	}
	t.Setenv("EDGEGATE_TEST_DIR", "/somewhere")
	if got := CacheDir("EDGEGATE_TEST_DIR", "x"); got != "/somewhere" {
		t.Errorf("CacheDir with env = %q", got)
	}
	t.Setenv("EDGEGATE_TEST_DIR", "")
	t.Setenv("XDG_CACHE_HOME", "/cache")
	if got := CacheDir("EDGEGATE_TEST_DIR", "x-v1"); got != "/cache/edgegate/x-v1" {
		t.Errorf("CacheDir = %q", got)
	}
}

// TestFreePortOutsideEphemeralRange: the port can be bound, and it is not
// one the kernel could hand out as an outgoing connection's source port.
func TestFreePortOutsideEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if low > freePortMin+1000 && (port < freePortMin || port >= low) {
			t.Fatalf("port %d outside [%d, %d)", port, freePortMin, low)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", port, err)
		}
		l.Close()
	}
}
