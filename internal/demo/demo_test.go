package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"
)

// TestDemoLoopback runs the demo the way a user without root gets it (pods on
// 127.0.0.N, EndpointSlices stored in etcd) and follows its curl lines.
func TestDemoLoopback(t *testing.T) {
	if controlplane.SkipE2E() {
		t.Skip("end-to-end test skipped (EDGEGATE_SKIP_E2E=1 or -short)")
	}
	if err := controlplane.CheckBinaries(controlplane.DefaultBinDir()); err != nil {
		t.Fatalf("%v: run `make controlplane`", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	httpAddr, adminAddr := gatewayproc.FreeAddr(), gatewayproc.FreeAddr()
	done := make(chan error, 1)
	go func() { done <- run(ctx, httpAddr, adminAddr, "", true) }()
	exited := false
	defer func() {
		cancel()
		if exited {
			return
		}
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	}()
	client := &http.Client{Timeout: 5 * time.Second}

	get := func(host, path string) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+path, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.Status + " " + string(b), err
	}
	cases := []struct{ host, path, want string }{
		{"hello.demo.test", "/", "pod demo/hello-"},
		{"hello.demo.test", "/api/users", "pod demo/api-a"},
		{"api.demo.test", "/v1/items", "pod demo/api-a"},
		{"api.demo.test", "/healthz", "pod demo/api-a"},
		{"x.apps.demo.test", "/", "pod demo/hello-"},
		{"nowhere.test", "/", "pod demo/fallback-a"},
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, c := range cases {
		for {
			got, err := get(c.host, c.path)
			if err == nil && strings.HasPrefix(got, "200 OK "+c.want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("curl -H 'Host: %s' %s: got %q (%v), want a 200 from %s", c.host, c.path, got, err, c.want)
			}
			select {
			case err := <-done:
				exited = true
				t.Fatalf("demo exited early: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}
