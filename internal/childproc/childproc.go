// Package childproc runs the helper servers of edgegate's tests and demo
// (etcd, kube-apiserver, Pebble) as child processes: output to a log file,
// death with the parent, SIGTERM-then-SIGKILL stops, readiness polling and
// log tails for error messages. It exists so each of those harnesses keeps
// only what is specific to its server.
package childproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrAddrInUse is wrapped by WaitReady's error when the child's log says it
// could not bind its address; callers pick new ports and retry.
var ErrAddrInUse = errors.New("address already in use")

// Options configures Start.
type Options struct {
	// LogPath receives the child's stdout and stderr (appended). Required.
	LogPath string
	// Env is added to the parent's environment.
	Env []string
	// Dir is the working directory; default the parent's.
	Dir string
}

// Proc is a running child process. Its methods may be called concurrently.
type Proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // exit error, valid after done
}

// Start starts bin with args. The child dies with the parent (a crashed or
// killed test binary) and runs in its own process group, so terminal signals
// (Ctrl-C) reach only the parent, which stops children in order.
func Start(name, bin string, args []string, o Options) (*Proc, error) {
	logFile, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	fmt.Fprintf(logFile, "\n==== %s %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = o.Dir
	if len(o.Env) > 0 {
		cmd.Env = append(os.Environ(), o.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// The signal is tied to the thread that forked; Go only ends
		// threads of goroutines that exit while locked to them.
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{name: name, cmd: cmd, logPath: o.LogPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Name is the name given to Start.
func (p *Proc) Name() string { return p.name }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the exit error; valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Stop sends SIGTERM, then SIGKILL after timeout, and waits for the exit. It
// reports an error only when the child had to be killed.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil // already gone; its exit was reported by whoever noticed
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.name, timeout)
	}
}

// Kill stops the process with SIGKILL and waits for it.
func (p *Proc) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	<-p.done
	return nil
}

// WaitReady polls ready every interval until it reports true, the process
// exits (the error then carries the log tail, and wraps ErrAddrInUse when
// the child could not bind) or ctx ends.
func WaitReady(ctx context.Context, p *Proc, interval time.Duration, ready func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if ready() {
			return nil
		}
		select {
		case <-p.done:
			tail := p.LogTail()
			err := fmt.Errorf("%s exited during startup: %v%s", p.name, p.err, tail)
			if strings.Contains(tail, "address already in use") {
				err = fmt.Errorf("%w (%w)", err, ErrAddrInUse)
			}
			return err
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w%s", p.name, ctx.Err(), p.LogTail())
		case <-t.C:
		}
	}
}

// LogTail returns the last lines of the log, formatted for an error message
// ("" when the log cannot be read).
func (p *Proc) LogTail() string {
	const maxBytes, maxLines = 6 << 10, 30
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-maxBytes, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // first line is likely cut
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return fmt.Sprintf("\n--- last lines of %s:\n%s", p.logPath, strings.Join(lines, "\n"))
}

// FreePort returns a loopback TCP port that was free a moment ago. Callers
// retry when a child then fails to bind it (see ErrAddrInUse).
//
// It picks at random below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range): a port the kernel hands out (":0") can be
// taken, between this check and the child's bind, as the source port of
// any outgoing connection on the machine (client-go, etcd, a test's HTTP
// client), which made tests fail with "address already in use".
func FreePort() (int, error) {
	low := ephemeralLow()
	if low > freePortMin+1000 {
		for range 200 {
			port := freePortMin + rand.IntN(low-freePortMin)
			if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				l.Close()
				return port, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePortMin is the lowest port FreePort picks.
const freePortMin = 10000

// ephemeralLow returns the first port of the kernel's ephemeral range
// (32768 when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// CacheDir is where a harness keeps binaries it builds: $envVar when set,
// else $XDG_CACHE_HOME/edgegate/name, else $HOME/.cache/edgegate/name.
func CacheDir(envVar, name string) string {
	if d := os.Getenv(envVar); d != "" {
		return d
	}
	cache, err := os.UserCacheDir() // $XDG_CACHE_HOME or $HOME/.cache
	if err != nil {
		cache = filepath.Join(os.TempDir(), "edgegate-cache")
	}
	return filepath.Join(cache, "edgegate", name)
}

// CheckExecutables returns an error wrapping missing, naming the first of
// names that is not an executable file in dir.
func CheckExecutables(missing error, dir string, names ...string) error {
	for _, name := range names {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%w: no executable %s in %s", missing, name, dir)
		}
	}
	return nil
}
