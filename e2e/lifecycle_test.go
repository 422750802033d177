package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"
)

func containsMetric(text, name string) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name) {
			return true
		}
	}
	return false
}

func TestForwardedHeadersAndHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.app("echo")
	host := "fwd." + e.ns + ".test"
	e.ingress(e.ing("fwd", rule(host, prefix("/", "echo", 80))))
	e.expect(host, "/", want{pod: "echo"})

	hdr := http.Header{
		"X-Forwarded-For": {"203.0.113.7"},
		"Connection":      {"X-Hop"},
		"X-Hop":           {"must not reach the pod"},
		"X-Keep":          {"kept"},
	}
	r, err := e.do(http.MethodGet, host+":8443", "/p/a%20th?q=1&r=%2F", hdr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := (want{pod: "echo"}).check(r); err != nil {
		t.Fatal(err)
	}
	got := r.echo
	_, gwPort, _ := strings.Cut(e.gw.HTTPAddr, ":")
	checks := []struct{ name, got, want string }{
		{"Host passed through unchanged", got.Host, host + ":8443"},
		{"X-Forwarded-For appends the client", strings.Join(got.Headers["X-Forwarded-For"], ","), "203.0.113.7, 127.0.0.1"},
		{"X-Forwarded-Proto", strings.Join(got.Headers["X-Forwarded-Proto"], ","), "http"},
		{"X-Forwarded-Host", strings.Join(got.Headers["X-Forwarded-Host"], ","), host + ":8443"},
		{"X-Forwarded-Port", strings.Join(got.Headers["X-Forwarded-Port"], ","), gwPort},
		{"end-to-end header kept", strings.Join(got.Headers["X-Keep"], ","), "kept"},
		{"header named in Connection removed", strings.Join(got.Headers["X-Hop"], ","), ""},
		{"request URI passed through", got.URI, "/p/a%20th?q=1&r=%2F"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestUpstreamErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(_ *env, o *gatewayproc.Options) {
		o.Extra += "\n[upstream]\nresponse_timeout = \"500ms\"\nconnect_timeout = \"1s\"\n"
	})
	e.app("slow")
	closed := e.startPod("closed", 8080, false)
	closed.srv.Close() // the IP exists but nothing listens: connection refused
	e.service("closed", svcPort("http", 80, intstrFrom(8080)))
	e.slice("closed", "closed-1", "http", ready(closed))
	host := "errs." + e.ns + ".test"
	e.ingress(e.ing("errs", rule(host, prefix("/slow", "slow", 80), prefix("/refused", "closed", 80))))
	e.expect(host, "/slow", want{pod: "slow"})
	e.expect(host, "/refused", want{status: 502})
	e.expect(host, "/slow?sleep=3s", want{status: 504})
	r, err := e.get(host, "/refused")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.body) > 200 || strings.Contains(r.body, "goroutine") {
		t.Errorf("error body should be short and plain, got %q", r.body)
	}
}

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.app("app")
	host := "adm." + e.ns + ".test"
	e.ingress(e.ing("adm", rule(host, prefix("/", "app", 80))))
	e.expect(host, "/", want{pod: "app"})

	if code, body := e.admin("/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := e.admin("/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q", code, body)
	}
	code, body := e.admin("/routes")
	if code != 200 || !strings.Contains(body, `"version"`) || !strings.Contains(body, host) || !strings.Contains(body, e.ns+"/app:80") {
		t.Errorf("/routes = %d, want JSON naming version, host and backend:\n%.800s", code, body)
	}
	_, m := e.admin("/metrics")
	for _, name := range []string{"edgegate_http_requests_total", "edgegate_snapshot_version", "edgegate_informer_synced", "edgegate_http_upstream_duration_seconds"} {
		if !containsMetric(m, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestCheckConfigAndBadConfig(t *testing.T) {
	t.Parallel()
	if controlplane.SkipE2E() {
		t.Skip("needs the gateway binary built by the e2e TestMain")
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	// The event_loops key goes last, so that the bad key stays on line 6.
	loops := eventLoopsKey(t)
	os.WriteFile(good, []byte("[kubernetes]\nkubeconfig = \"/nonexistent/kubeconfig\"\n[http]\n"+loops), 0o600)
	os.WriteFile(bad, []byte("[kubernetes]\nkubeconfig = \"/k\"\n\n[http]\nlisten = \":80\"\nlisten_typo = 3\n"+loops), 0o600)

	out, err := exec.Command(gatewayBin, "-check-config", "-config", good).CombinedOutput()
	if err != nil {
		t.Errorf("-check-config good: %v\n%s", err, out)
	}
	out, err = exec.Command(gatewayBin, "-check-config", "-config", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("-check-config bad: exit %v, want 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "bad.toml:6") || !strings.Contains(string(out), "listen_typo") {
		t.Errorf("-check-config bad: want the file, line 6 and the key, got:\n%s", out)
	}
	// Running with the bad file refuses to start, with the same message.
	cmd := exec.Command(gatewayBin, "-config", bad)
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "listen_typo") {
		t.Errorf("start with bad config: exit %v, output:\n%s", err, out)
	}
	out, err = exec.Command(gatewayBin, "-version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "edgegate ") {
		t.Errorf("-version: %v %q", err, out)
	}
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	slow := e.app("slow")
	host := "drain." + e.ns + ".test"
	e.ingress(e.ing("drain", rule(host, prefix("/", "slow", 80))))
	e.expect(host, "/", want{pod: "slow"})

	before := slow.hits.Load()
	done := make(chan response, 1)
	go func() {
		r, err := e.get(host, "/?sleep=1500ms")
		if err != nil {
			r.body = err.Error()
		}
		done <- r
	}()
	e.eventually("the slow request reaches the pod", func() error {
		if slow.hits.Load() == before {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if err := e.gw.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if err := (want{pod: "slow"}).check(r); err != nil {
		t.Fatalf("in-flight request during shutdown: %v", err)
	}
	e.waitCleanExit()
}

func TestAPIServerLostKeepsRouting(t *testing.T) {
	t.Parallel()
	cp := controlplane.NewForTest(t)
	e := newEnvOn(t, cp)
	e.app("app")
	host := "lost." + e.ns + ".test"
	e.ingress(e.ing("lost", rule(host, prefix("/v1", "app", 80))))
	e.expect(host, "/v1", want{pod: "app"})

	// Traffic flows the whole time; every request must be routed.
	var failures, total atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := e.get(host, "/v1")
			total.Add(1)
			if err == nil {
				err = (want{pod: "app"}).check(r)
			}
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	e.logContains("unreachable")
	time.Sleep(2 * time.Second) // keep the outage going while traffic flows
	if code, _ := e.admin("/healthz"); code != 200 {
		t.Errorf("/healthz during outage = %d", code)
	}
	_, m := e.admin("/metrics")
	if !strings.Contains(m, "edgegate_apiserver_up 0") {
		t.Errorf("/metrics should report edgegate_apiserver_up 0 during the outage")
	}
	if err := cp.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d requests failed while the API server was away; first: %v", failures.Load(), total.Load(), firstErr.Load())
	}
	t.Logf("%d requests routed during the outage", total.Load())

	// Changes flow again after the restart.
	e.ingress(e.ing("lost", rule(host, prefix("/v2", "app", 80))))
	e.expect(host, "/v2", want{pod: "app"})
	e.expect(host, "/v1", want{status: 404})
}
