package route

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func viewSnapshot() *Snapshot {
	backends := []*Backend{
		{Namespace: "shop", Service: "web", Port: "80", Addrs: []string{"10.1.2.4:8080", "10.1.2.3:8080"}},
		{Namespace: "shop", Service: "api", Port: "http", Addrs: []string{"10.1.3.1:9000"}},
		{Namespace: "shop", Service: "gone", Port: "80", Error: `service "shop/gone" not found`},
		{Namespace: "default", Service: "fallback", Port: "80", Addrs: []string{"[fd00::1]:8080"}},
	}
	routes := []Route{
		{Host: "shop.example.com", Path: "/", Type: Prefix, Ingress: IngressRef{"shop", "web"}, Backend: 0, RedirectHTTPS: true},
		{Host: "shop.example.com", Path: "/api/", Type: Prefix, Ingress: IngressRef{"shop", "api"}, Backend: 1},
		{Host: "shop.example.com", Path: "/healthz", Type: Exact, Ingress: IngressRef{"shop", "api"}, Backend: 1},
		{Host: "*.example.com", Path: "/old", Type: Prefix, Ingress: IngressRef{"shop", "gone"}, Backend: 2},
		{Host: "", Path: "/", Type: Prefix, Ingress: IngressRef{"default", "catch-all"}, Backend: 3},
	}
	def := &Route{Ingress: IngressRef{"default", "catch-all"}, Backend: 3}
	s, _ := New(routes, backends, def)
	s.SetTLS(map[string]*Cert{
		"shop.example.com": {
			Secret: SecretRef{"shop", "web-tls"}, Ingress: IngressRef{"shop", "web"},
			NotAfter: time.Date(2124, 1, 1, 1, 0, 0, 0, time.FixedZone("CET", 3600)), Fingerprint: 7,
		},
		"*.example.com": {
			Secret: SecretRef{"shop", "wild-tls"}, Ingress: IngressRef{"shop", "gone"},
			Error: "key does not match certificate",
		},
	}, []string{"b.example.com", "A.example.com"})
	s.Version = 42
	s.Built = time.Date(2026, 3, 4, 5, 6, 7, 890, time.FixedZone("CET", 3600))
	return s
}

// TestViewGolden checks the JSON served on /routes against
// testdata/view.golden.json; run with -update to rewrite it.
func TestViewGolden(t *testing.T) {
	t.Parallel()
	got, err := json.MarshalIndent(viewSnapshot().View(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "view.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestViewGolden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("View JSON differs from %s:\n%s", golden, got)
	}
}

func TestView(t *testing.T) {
	t.Parallel()
	s := viewSnapshot()
	v := s.View()
	if v.Version != 42 || v.Built != "2026-03-04T04:06:07.00000089Z" {
		t.Errorf("version/built = %d %q", v.Version, v.Built)
	}
	if len(v.Hash) != 16 {
		t.Errorf("hash %q is not 16 hex digits", v.Hash)
	}
	var hosts []string
	for _, h := range v.Hosts {
		hosts = append(hosts, h.Host)
	}
	if want := []string{"", "*.example.com", "shop.example.com"}; !equalStrings(hosts, want) {
		t.Errorf("hosts = %q, want %q", hosts, want)
	}
	shop := v.Hosts[2].Routes
	if len(shop) != 3 || shop[0].Path != "/healthz" || shop[0].Type != "Exact" || shop[0].Backend != "shop/api:http" ||
		shop[1].Path != "/api/" || shop[2].Path != "/" || shop[2].Ingress != "shop/web" {
		t.Errorf("shop routes not in precedence order: %+v", shop)
	}
	if v.Default == nil || v.Default.Backend != "default/fallback:80" {
		t.Errorf("default = %+v", v.Default)
	}
	var ids []string
	for _, b := range v.Backends {
		ids = append(ids, b.ID)
	}
	if want := []string{"default/fallback:80", "shop/api:http", "shop/gone:80", "shop/web:80"}; !equalStrings(ids, want) {
		t.Errorf("backend ids = %q, want sorted %q", ids, want)
	}
	web := v.Backends[3]
	if web.Service != "shop/web" || web.Port != "80" || !equalStrings(web.Endpoints, []string{"10.1.2.3:8080", "10.1.2.4:8080"}) {
		t.Errorf("web backend = %+v", web)
	}
	if s.Backends[0].Addrs[0] != "10.1.2.4:8080" {
		t.Error("View sorted the snapshot's own Addrs")
	}
	if len(v.TLS) != 2 || v.TLS[0].Host != "*.example.com" || v.TLS[0].Error == "" || v.TLS[0].NotAfter != "" ||
		v.TLS[1] != (CertView{Host: "shop.example.com", Source: "secret", Secret: "shop/web-tls", Ingress: "shop/web", NotAfter: "2124-01-01T00:00:00Z"}) {
		t.Errorf("tls = %+v", v.TLS)
	}
	if !equalStrings(v.ACMEHosts, []string{"a.example.com", "b.example.com"}) {
		t.Errorf("acme hosts = %q", v.ACMEHosts)
	}
	if !shop[2].RedirectHTTPS || shop[0].RedirectHTTPS {
		t.Errorf("redirect_https not carried: %+v", shop)
	}
	gone := v.Backends[2]
	if gone.Error == "" || gone.Endpoints == nil {
		t.Errorf("gone backend = %+v (endpoints must be [] not null)", gone)
	}

	// Same snapshot, same bytes.
	a, _ := json.Marshal(s.View())
	b, _ := json.Marshal(s.View())
	if !bytes.Equal(a, b) {
		t.Error("View is not deterministic")
	}
}

func TestViewEmpty(t *testing.T) {
	t.Parallel()
	s, _ := New(nil, nil, nil)
	got, err := json.Marshal(s.View())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":0,"hash":"` + s.View().Hash + `","built":"0001-01-01T00:00:00Z","hosts":[],"default":null,"backends":[],"tls":[],"acme_hosts":[]}`
	if string(got) != want {
		t.Errorf("empty view = %s, want %s", got, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestViewForHost: /routes?host= shows one host's table, the backends its
// rules and the default route use, and its certificate and ACME entry.
func TestViewForHost(t *testing.T) {
	v := viewSnapshot().View()
	ids := func(bs []BackendView) (out []string) {
		for _, b := range bs {
			out = append(out, b.ID)
		}
		return out
	}
	for _, tc := range []struct {
		host     string
		hosts    int
		backends []string
		tls      int
		acme     []string
	}{
		{"Shop.Example.com", 1, []string{"default/fallback:80", "shop/api:http", "shop/web:80"}, 1, nil},
		{"*.example.com", 1, []string{"default/fallback:80", "shop/gone:80"}, 1, nil},
		{"", 1, []string{"default/fallback:80"}, 0, nil},
		{"b.example.com", 0, []string{"default/fallback:80"}, 0, []string{"b.example.com"}},
		{"nowhere.test", 0, []string{"default/fallback:80"}, 0, nil},
	} {
		f := v.ForHost(tc.host)
		if len(f.Hosts) != tc.hosts || (tc.hosts == 1 && f.Hosts[0].Host != strings.ToLower(tc.host)) {
			t.Errorf("%q: hosts %+v", tc.host, f.Hosts)
		}
		if !equalStrings(ids(f.Backends), tc.backends) {
			t.Errorf("%q: backends %v, want %v", tc.host, ids(f.Backends), tc.backends)
		}
		if len(f.TLS) != tc.tls || f.TLS == nil {
			t.Errorf("%q: tls %+v, want %d", tc.host, f.TLS, tc.tls)
		}
		if !equalStrings(f.ACMEHosts, tc.acme) || f.ACMEHosts == nil {
			t.Errorf("%q: acme hosts %v, want %v", tc.host, f.ACMEHosts, tc.acme)
		}
		if f.Version != v.Version || f.Hash != v.Hash || f.Default == nil {
			t.Errorf("%q: version/hash/default not kept", tc.host)
		}
	}
	if n := len(v.Hosts); n != 3 {
		t.Errorf("ForHost changed the view it narrowed: %d hosts", n)
	}
}
