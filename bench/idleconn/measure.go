package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// request is what each client sends: a typical small GET.
const request = "GET /idle HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: edgegate-idleconn/1\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n\r\n"

type result struct {
	mode          string
	conns         int
	base, after   sample
	nofile        uint64
	openTime      time.Duration // opening and using all connections
	upstreamOpen  int64         // gateway->pod connections open at the measurement
	verified      int           // connections that served a second request after the measurement
	oldestIdle    time.Duration // idle time of the oldest connection at verification
	top           string        // heap profile diff (inuse_space), top entries
	profileBefore string
	profileAfter  string
}

type client struct {
	addr string
	tls  *tls.Config // nil: plain HTTP
}

func (c *client) dial() (net.Conn, error) {
	nc, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if c.tls == nil {
		return nc, nil
	}
	tc := tls.Client(nc, c.tls)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// roundTrip sends one keep-alive request on nc and reads the whole
// response, leaving nothing buffered: the connection is then idle on both
// ends.
func roundTrip(nc net.Conn) error {
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	defer nc.SetDeadline(time.Time{})
	if _, err := io.WriteString(nc, request); err != nil {
		return err
	}
	br := bufio.NewReaderSize(nc, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK || resp.Header.Get("X-Pod") != "a":
		return fmt.Errorf("got %s (X-Pod %q) %q, want 200 from the pod", resp.Status, resp.Header.Get("X-Pod"), body)
	case resp.Close:
		return errors.New("gateway answered Connection: close")
	case br.Buffered() != 0:
		return fmt.Errorf("%d unexpected bytes after the response", br.Buffered())
	}
	return nil
}

// forEach runs fn(i) for i in [0, n) on parallel goroutines, logging
// progress; it stops at the first error.
func forEach(what string, n, parallel int, fn func(i int) error) error {
	var next, done atomic.Int64
	var errOnce sync.Once
	var firstErr error
	var failed atomic.Bool
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				log.Printf("  %s: %d/%d", what, done.Load(), n)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < min(parallel, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("%s, connection %d: %w", what, i, err) })
					failed.Store(true)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	return firstErr
}

func measure(ctx context.Context, o options, mode, kubeconfig, dir string, p *pod) (result, error) {
	r := result{mode: mode, conns: o.conns}
	log.Printf("[%s] starting edgegate %s", mode, o.bin)
	g, err := startGateway(ctx, o, kubeconfig, dir)
	if err != nil {
		return r, err
	}
	defer g.stop()
	if r.nofile, err = g.nofile(); err != nil {
		return r, err
	}
	if r.nofile < uint64(o.conns)+100 {
		return r, fmt.Errorf("gateway's RLIMIT_NOFILE is %d, too low for %d connections", r.nofile, o.conns)
	}
	c := &client{addr: g.HTTPAddr}
	if mode == "https" {
		c = &client{addr: g.HTTPSAddr, tls: &tls.Config{
			ServerName:         host,
			InsecureSkipVerify: true, // the gateway's self-signed default certificate
			NextProtos:         []string{"http/1.1"},
		}}
	}
	log.Printf("[%s] edgegate pid %d, RLIMIT_NOFILE %d; waiting for the route", mode, g.PID(), r.nofile)
	if err := waitRoute(c, 30*time.Second); err != nil {
		return r, err
	}

	log.Printf("[%s] warm-up: %d connections, one request each, closed", mode, o.warmup)
	if err := forEach("warm-up", o.warmup, o.parallel, func(int) error {
		nc, err := c.dial()
		if err != nil {
			return err
		}
		defer nc.Close()
		return roundTrip(nc)
	}); err != nil {
		return r, err
	}
	log.Printf("[%s] settling %s, then baseline", mode, o.settle)
	time.Sleep(o.settle)
	r.profileBefore = filepath.Join(o.profileDir, mode+"-before.pb.gz")
	if r.base, err = g.gcAndSample(r.profileBefore); err != nil {
		return r, err
	}
	log.Printf("[%s] baseline: RSS %s, heap in use %s, stacks %s, goroutines %.0f", mode,
		kib(r.base.rss), kib(int64(r.base.m["go_memstats_heap_inuse_bytes"])), kib(int64(r.base.m["go_memstats_stack_inuse_bytes"])), r.base.m["go_goroutines"])

	conns := make([]net.Conn, o.conns)
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	log.Printf("[%s] opening %d connections, one keep-alive request each, left open", mode, o.conns)
	t0 := time.Now()
	if err := forEach("open", o.conns, o.parallel, func(i int) error {
		nc, err := c.dial()
		if err != nil {
			return err
		}
		conns[i] = nc
		return roundTrip(nc)
	}); err != nil {
		return r, err
	}
	r.openTime = time.Since(t0)
	log.Printf("[%s] %d connections open and idle after %s; settling %s", mode, o.conns, r.openTime.Round(time.Millisecond), o.settle)
	time.Sleep(o.settle)
	if err := g.alive(); err != nil {
		return r, err
	}
	r.upstreamOpen = p.open.Load()
	r.profileAfter = filepath.Join(o.profileDir, mode+"-after.pb.gz")
	if r.after, err = g.gcAndSample(r.profileAfter); err != nil {
		return r, err
	}
	log.Printf("[%s] with %d idle connections: RSS %s, heap in use %s, stacks %s, goroutines %.0f; gateway->pod connections open: %d", mode, o.conns,
		kib(r.after.rss), kib(int64(r.after.m["go_memstats_heap_inuse_bytes"])), kib(int64(r.after.m["go_memstats_stack_inuse_bytes"])), r.after.m["go_goroutines"], r.upstreamOpen)

	log.Printf("[%s] verifying: a second request on every connection", mode)
	r.oldestIdle = time.Since(t0)
	var ok atomic.Int64
	verr := forEach("verify", o.conns, o.parallel, func(i int) error {
		if err := roundTrip(conns[i]); err != nil {
			return err
		}
		ok.Add(1)
		return nil
	})
	r.verified = int(ok.Load())
	if verr != nil {
		return r, fmt.Errorf("a connection did not survive the measurement: %w", verr)
	}
	if r.top, err = pprofTop(r.profileBefore, r.profileAfter); err != nil {
		log.Printf("[%s] heap profile diff unavailable: %v", mode, err)
	}
	log.Printf("[%s] all %d connections still open (oldest idle up to %s, idle timeout %s)", mode, r.verified, r.oldestIdle.Round(time.Second), o.idleTimeout)
	return r, nil
}

// waitRoute waits until the gateway routes host to the pod.
func waitRoute(c *client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		nc, err := c.dial()
		if err == nil {
			err = roundTrip(nc)
			nc.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("route to the pod not ready after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pprofTop is the top of the inuse_space difference between two heap
// profiles, by function (flat), from `go tool pprof`.
func pprofTop(before, after string) (string, error) {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=12", "-sample_index=inuse_space",
		"-base", before, after).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w\n%s", err, out)
	}
	s := string(out)
	if i := strings.Index(s, "      flat"); i >= 0 {
		s = s[i:]
	}
	return strings.TrimRight(s, "\n"), nil
}

func kib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
