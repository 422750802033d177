package podnet_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/podnet"
)

func TestPodAnswersFromHost(t *testing.T) {
	n := podnet.ForTest(t)
	for _, tc := range []struct {
		name   string
		newPod func(string, int) (*podnet.Pod, error)
	}{
		{"ipv4", n.NewPod},
		{"ipv6", n.NewPod6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.newPod("web-"+tc.name, 8080)
			if err != nil {
				t.Fatal(err)
			}
			if p.IP.IsLoopback() || !(n.PodCIDR().Contains(p.IP) || n.PodCIDR6().Contains(p.IP)) {
				t.Fatalf("pod IP %v not in the pod networks", p.IP)
			}
			client := &http.Client{Timeout: 5 * time.Second}
			defer client.CloseIdleConnections()
			req, err := http.NewRequest(http.MethodPost, p.URL()+"/a/b?x=1", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "example.test"
			req.Header.Set("X-Forwarded-For", "192.0.2.7")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e podnet.Echo
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatal(err)
			}
			if resp.Header.Get("X-Pod") != p.Name || e.Pod != p.Name {
				t.Errorf("answered by %q / %q, want %q", resp.Header.Get("X-Pod"), e.Pod, p.Name)
			}
			if e.Method != "POST" || e.Path != "/a/b" || e.Query != "x=1" || e.Host != "example.test" {
				t.Errorf("echo %+v", e)
			}
			if got := e.Headers["X-Forwarded-For"]; len(got) != 1 || got[0] != "192.0.2.7" {
				t.Errorf("X-Forwarded-For %v", got)
			}
			// The request came from the host's end of the veth pair.
			host, _, _ := net.SplitHostPort(e.RemoteAddr)
			if want := n.HostIP(); p.IP.Is6() {
				if want = n.HostIP6(); host != want.String() {
					t.Errorf("remote %s, want %s", host, want)
				}
			} else if host != want.String() {
				t.Errorf("remote %s, want %s", host, want)
			}
			if p.Requests() != 1 {
				t.Errorf("Requests() = %d", p.Requests())
			}

			// A closed pod refuses connections at once.
			p.Close()
			c, err := net.DialTimeout("tcp", p.Addr, 2*time.Second)
			if err == nil {
				c.Close()
				t.Fatal("dial to a closed pod succeeded")
			}
		})
	}
}

func TestListenIsInsideNamespace(t *testing.T) {
	n := podnet.ForTest(t)
	// A loopback listener in the namespace is not reachable from the host.
	l, err := n.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err == nil {
		c.Close()
		t.Fatal("namespace loopback listener reachable from the host")
	}
	// The calling goroutine is back in the host namespace.
	if _, err := net.InterfaceByName(n.HostInterface()); err != nil {
		t.Fatalf("host interface not visible after Listen: %v", err)
	}
}

func TestCloseRemovesNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("podnet: needs root")
	}
	n, err := podnet.New(podnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := n.NewPod("a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", n.Name())); !os.IsNotExist(err) {
		t.Errorf("netns %s still there: %v", n.Name(), err)
	}
	if _, err := net.InterfaceByName(n.HostInterface()); err == nil {
		t.Errorf("veth %s still there", n.HostInterface())
	}
	c, err := net.DialTimeout("tcp", p.Addr, 500*time.Millisecond)
	if err == nil {
		c.Close()
		t.Error("pod still reachable after Close")
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestParallelNetworks(t *testing.T) {
	a := podnet.ForTest(t)
	b := podnet.ForTest(t)
	if a.PodCIDR() == b.PodCIDR() {
		t.Fatalf("two networks share %v", a.PodCIDR())
	}
}
