package config

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

const minimal = `[kubernetes]
kubeconfig = "/etc/edgegate/kubeconfig"
`

// withKubeconfig is Default with the one key every file must set.
func withKubeconfig(path string) *Config {
	c := Default()
	c.Kubernetes.Kubeconfig = path
	return c
}

func TestMinimalFileGetsDefaults(t *testing.T) {
	t.Parallel()
	got, err := Parse([]byte(minimal), "gateway.toml")
	if err != nil {
		t.Fatal(err)
	}
	if want := withKubeconfig("/etc/edgegate/kubeconfig"); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// Only an https.listen the file does not write may be given up when it
// cannot be bound (run.go); one written out, even as the default, may not.
func TestHTTPSListenIsDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		extra string
		want  bool
	}{
		{"", true},
		{"[https]\nredirect = false\n", true},
		{"[https]\nlisten = \":443\"\n", false},
		{"[https]\nlisten = \"127.0.0.1:8443\"\n", false},
		{"[https]\nlisten = \"\"\n", false},
	} {
		c, err := Parse([]byte(minimal+tc.extra), "gateway.toml")
		if err != nil {
			t.Fatalf("%q: %v", tc.extra, err)
		}
		if got := c.HTTPS.ListenIsDefault(); got != tc.want {
			t.Errorf("%q: ListenIsDefault %v, want %v", tc.extra, got, tc.want)
		}
	}
	if c := Default(); !c.HTTPS.ListenIsDefault() {
		t.Error("Default: ListenIsDefault false")
	}
	c := Default()
	c.HTTPS.Listen = ":8443"
	if c.HTTPS.ListenIsDefault() {
		t.Error("a Default with another listen address still counts as the default")
	}
}

func TestDefaultIsFresh(t *testing.T) {
	t.Parallel()
	a := Default()
	a.Kubernetes.WatchNamespaces = append(a.Kubernetes.WatchNamespaces, "x")
	if b := Default(); len(b.Kubernetes.WatchNamespaces) != 0 {
		t.Errorf("Default shares its slice: %v", b.Kubernetes.WatchNamespaces)
	}
}

// TestSampleIsDefaults checks that the shipped gateway.toml documents the true
// defaults and every key.
func TestSampleIsDefaults(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../gateway.toml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data, "gateway.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := withKubeconfig("/etc/edgegate/kubeconfig")
	want.HTTPS.listenIsDefault = false // the sample writes https.listen out
	if !reflect.DeepEqual(got, want) {
		t.Errorf("gateway.toml does not document the defaults:\ngot  %+v\nwant %+v", got, want)
	}

	var raw map[string]any
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		t.Fatal(err)
	}
	var inSample []string
	for _, k := range md.Keys() {
		inSample = append(inSample, k.String())
	}
	if want := schemaKeys(); !slices.Equal(inSample, want) {
		t.Errorf("gateway.toml keys, in order:\n%v\nwant every section and key in struct order:\n%v", inSample, want)
	}
}

// schemaKeys lists every section and key of the file format in struct order.
func schemaKeys() []string {
	var keys []string
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		sec := ct.Field(i)
		keys = append(keys, sec.Tag.Get("toml"))
		for j := range sec.Type.NumField() {
			if f := sec.Type.Field(j); f.IsExported() {
				keys = append(keys, sec.Tag.Get("toml")+"."+f.Tag.Get("toml"))
			}
		}
	}
	return keys
}

// nonDefault sets every key to a valid value different from its default.
func nonDefault() *Config {
	return &Config{
		Kubernetes: KubernetesConfig{
			Server:          "https://10.0.0.1:6443",
			TokenFile:       "/var/run/token",
			CAFile:          "/var/run/ca.crt",
			IngressClass:    "edge.example.com",
			WatchNamespaces: []string{"a", "b-2"},
			CoalesceIdle:    Duration(5 * time.Millisecond),
			CoalesceMax:     Duration(50 * time.Millisecond),
			QPS:             12.5,
			Burst:           7,
		},
		HTTP: HTTPConfig{
			Listen:          "0.0.0.0:8080",
			ReadTimeout:     0,
			WriteTimeout:    Duration(90 * time.Second),
			IdleTimeout:     Duration(time.Minute),
			EventLoops:      4,
			MaxHeaderBytes:  32768,
			ShutdownTimeout: Duration(5 * time.Second),
			AccessLog:       true,
		},
		Upstream: UpstreamConfig{
			ConnectTimeout:      Duration(250 * time.Millisecond),
			ResponseTimeout:     Duration(2 * time.Minute),
			IdleTimeout:         Duration(10 * time.Second),
			MaxConnsPerEndpoint: 64,
		},
		HTTPS: HTTPSConfig{
			Listen:      "0.0.0.0:8443",
			DefaultCert: "/etc/tls/default.crt",
			DefaultKey:  "/etc/tls/default.key",
			Redirect:    false,
		},
		Admin:    AdminConfig{Listen: "[::1]:9000", Pprof: true},
		Balancer: BalancerConfig{Policy: PolicyRoundRobin, DrainGrace: 0},
		ACME: ACMEConfig{
			Enabled:     true,
			Email:       "ops@example.com",
			Directory:   "https://acme.example.com/directory",
			CAFile:      "/etc/tls/acme-ca.pem",
			CacheDir:    "/var/cache/acme",
			RenewBefore: Duration(240 * time.Hour),
			Hosts:       ACMEHostsAll,
		},
		Log: LogConfig{Level: "debug", Format: "json"},
	}
}

func TestEveryKeyRoundTrips(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  func() *Config
	}{
		{"server", nonDefault},
		{"kubeconfig", func() *Config {
			c := nonDefault()
			c.Kubernetes.Server, c.Kubernetes.TokenFile, c.Kubernetes.CAFile = "", "", ""
			c.Kubernetes.Kubeconfig, c.Kubernetes.Context = "/root/.kube/config", "prod"
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := tc.cfg()
			var buf bytes.Buffer
			if err := toml.NewEncoder(&buf).Encode(want); err != nil {
				t.Fatal(err)
			}
			got, err := Parse(buf.Bytes(), "rt.toml")
			if err != nil {
				t.Fatalf("%v\nfile:\n%s", err, buf.String())
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v\nfile:\n%s", got, want, buf.String())
			}
		})
	}

	// Every field differs from its default, so a key that failed to decode
	// would show up above; the exceptions have only one valid value or are
	// set by the kubeconfig case.
	same := []string{"Kubernetes.Kubeconfig", "Kubernetes.Context", "Balancer.Policy"}
	d, n := reflect.ValueOf(Default()).Elem(), reflect.ValueOf(nonDefault()).Elem()
	for i := range d.NumField() {
		for j := range d.Field(i).NumField() {
			f := d.Field(i).Type().Field(j)
			if !f.IsExported() {
				continue // state, not a key
			}
			name := d.Type().Field(i).Name + "." + f.Name
			if !slices.Contains(same, name) && reflect.DeepEqual(d.Field(i).Field(j).Interface(), n.Field(i).Field(j).Interface()) {
				t.Errorf("nonDefault leaves %s at its default", name)
			}
		}
	}
}

func TestProblems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want []string // every problem, in order
	}{
		{
			name: "unknown key",
			in:   minimal + "\n[http]\nlistne = \":8080\"\n",
			want: []string{`gateway.toml:5: unknown key "http.listne" (did you mean "listen"?)`},
		},
		{
			name: "unknown key without suggestion",
			in:   minimal + "[http]\nfoo = 1\n",
			want: []string{`gateway.toml:4: unknown key "http.foo"`},
		},
		{
			name: "unknown key in dotted form at the root",
			in:   "# comment\nhttp.listne = 1\n" + minimal,
			want: []string{`gateway.toml:2: unknown key "http.listne" (did you mean "listen"?)`},
		},
		{
			name: "unknown key in an inline table",
			in:   "kubernetes = { kubeconfig = \"/k\", nope = true }\n",
			want: []string{`gateway.toml:1: unknown key "kubernetes.nope"`},
		},
		{
			name: "unknown dotted key inside a section",
			in:   minimal + "[admin]\npprof = true\nx.y.z = 1\n",
			want: []string{`gateway.toml:5: unknown key "admin.x"`},
		},
		{
			name: "unknown nested table",
			in:   minimal + "[kubernetes.tls]\nx = 1\n",
			want: []string{`gateway.toml:3: unknown key "kubernetes.tls"`},
		},
		{
			name: "unknown quoted key",
			in:   minimal + "\"kube config\" = \"x\"\n",
			want: []string{`gateway.toml:3: unknown key kubernetes."kube config" (did you mean "kubeconfig"?)`},
		},
		{
			name: "key text inside a multi-line string is not a key",
			in:   "[kubernetes]\nkubeconfig = \"\"\"/k\nlistne = 1\n\"\"\"\nlistne = 2\n",
			want: []string{`gateway.toml:5: unknown key "kubernetes.listne"`},
		},
		{
			name: "unknown section",
			in:   minimal + "[metrics]\nlisten = \":9100\"\n",
			want: []string{`gateway.toml:3: unknown section "metrics"`},
		},
		{
			name: "unknown section by typo",
			in:   minimal + "\n\n[upstrem]\n",
			want: []string{`gateway.toml:5: unknown section "upstrem" (did you mean "upstream"?)`},
		},
		{
			name: "unknown implicit section placed at its first key",
			in:   minimal + "[foo.bar]\nx = 1\n",
			want: []string{`gateway.toml:3: unknown section "foo"`},
		},
		{
			name: "unknown array of tables",
			in:   minimal + "[[routes]]\nhost = \"a\"\n",
			want: []string{`gateway.toml:3: unknown section "routes"`},
		},
		{
			name: "unknown top-level key",
			in:   "listen = \":80\"\n" + minimal,
			want: []string{`gateway.toml:1: unknown key "listen"`},
		},
		{
			name: "key in a reserved section, typo in acme",
			in:   minimal + "[cluster]\nbind = \":7946\"\n[acme]\nemal = \"a@b.c\"\n",
			want: []string{
				`gateway.toml:4: unknown key "cluster.bind"`,
				`gateway.toml:6: unknown key "acme.emal" (did you mean "email"?)`,
			},
		},
		{
			name: "section of the wrong type",
			in:   "http = 80\n" + minimal,
			want: []string{`gateway.toml:1: http: expected a table, got integer`},
		},
		{
			name: "wrong type",
			in:   "[kubernetes]\nkubeconfig = \"/k\"\ningress_class = 5\n",
			want: []string{`gateway.toml:3: kubernetes.ingress_class: expected a string, got integer`},
		},
		{
			name: "duplicate key",
			in:   minimal + "[http]\nlisten = \":1\"\nlisten = \":2\"\n",
			want: []string{`gateway.toml:5: syntax error: Key 'http.listen' has already been defined.`},
		},
		{
			name: "wrong types",
			in: "[kubernetes]\nkubeconfig = \"/k\"\nqps = \"fast\"\nwatch_namespaces = \"a\"\nburst = 1.5\n" +
				"[http]\nmax_header_bytes = \"16k\"\naccess_log = \"yes\"\nread_timeout = 5\nlisten = [\":80\"]\n",
			want: []string{
				`gateway.toml:3: kubernetes.qps: expected a number, got string`,
				`gateway.toml:4: kubernetes.watch_namespaces: expected an array of strings, got string`,
				`gateway.toml:5: kubernetes.burst: expected an integer, got float`,
				`gateway.toml:7: http.max_header_bytes: expected an integer, got string`,
				`gateway.toml:8: http.access_log: expected a boolean, got string`,
				`gateway.toml:9: http.read_timeout: expected a duration string like "5s", got integer`,
				`gateway.toml:10: http.listen: expected a string, got array`,
			},
		},
		{
			name: "array element of the wrong type, multi-line",
			in:   minimal + "watch_namespaces = [\n  \"a\",\n  3,\n]\n",
			want: []string{`gateway.toml:3: kubernetes.watch_namespaces: expected an array of strings`},
		},
		{
			name: "bad duration",
			in:   minimal + "[http]\n\n\n\n\n\n\n\nread_timeout = \"5 seconds\"\n",
			want: []string{`gateway.toml:11: http.read_timeout: invalid duration "5 seconds" (use Go syntax like "5s")`},
		},
		{
			name: "negative duration",
			in:   minimal + "[upstream]\nconnect_timeout = \"-1s\"\n",
			want: []string{`gateway.toml:4: upstream.connect_timeout: invalid duration "-1s": must not be negative`},
		},
		{
			name: "event loops out of range",
			in:   minimal + "[http]\nlisten = \":8080\"\nevent_loops = 257\n",
			want: []string{`gateway.toml:5: http.event_loops: must be from -1 to 256, got 257`},
		},
		{
			name: "event loops of the wrong type",
			in:   minimal + "[http]\nevent_loops = \"2\"\n",
			want: []string{`gateway.toml:4: http.event_loops: expected an integer, got string`},
		},
		{
			name: "syntax error",
			in:   minimal + "[http]\nlisten = \n",
			want: []string{`gateway.toml:4: syntax error: expected value but found '\n' instead`},
		},
		{
			name: "unterminated table header",
			in:   minimal + "\n[http\nlisten = \":80\"\n",
			want: []string{`gateway.toml:4: syntax error: expected '.' or ']' to end table name, but got '\n' instead`},
		},
		{
			name: "unterminated string",
			in:   minimal + "[http]\nlisten = \":80\n\n",
			want: []string{`gateway.toml:4: syntax error: strings cannot contain newlines`},
		},
		{
			name: "syntax error after a byte order mark",
			in:   "\xef\xbb\xbf[k\n",
			want: []string{`gateway.toml:1: syntax error`},
		},
		{
			name: "UTF-16",
			in:   "\xff\xfe[\x00k\x00]\x00",
			want: []string{`gateway.toml:1: syntax error: files cannot contain NULL bytes`},
		},
		{
			name: "missing kubernetes",
			in:   "[http]\nlisten = \":8080\"\n",
			want: []string{`gateway.toml: set kubernetes.kubeconfig or kubernetes.server`},
		},
		{
			name: "empty file",
			in:   "",
			want: []string{`gateway.toml: set kubernetes.kubeconfig or kubernetes.server`},
		},
		{
			name: "missing kubernetes placed at its section",
			in:   "\n[kubernetes]\ncontext = \"prod\"\n",
			want: []string{`gateway.toml:2: set kubernetes.kubeconfig or kubernetes.server`},
		},
		{
			name: "a value that failed to decode is not validated again",
			in:   "[kubernetes]\nkubeconfig = \"/k\"\ningress_class = 5\nqps = -1.0\n",
			want: []string{
				`gateway.toml:3: kubernetes.ingress_class: expected a string, got integer`,
				`gateway.toml:4: kubernetes.qps: must be positive, got -1`,
			},
		},
		{
			name: "several problems of every kind",
			in: "[kubernetes]\n" + // 1
				"kubeconfig = \"/k\"\n" + // 2
				"server = \"https://api:6443\"\n" + // 3
				"ingress_class = \"Edge_Gate\"\n" + // 4
				"watch_namespaces = [\"a\", \"a\", \"B\"]\n" + // 5
				"coalesce_idle = \"10ms\"\n" + // 6
				"coalesce_max = \"5ms\"\n" + // 7
				"[http]\n" + // 8
				"listne = \":80\"\n" + // 9
				"listen = \"80\"\n" + // 10
				"read_timeout = \"soon\"\n" + // 11
				"[https]\n" + // 12
				"listen = \"443\"\n" + // 13
				"[admin]\n" + // 14
				"listen = \"0.0.0.0:80\"\n" + // 15
				"[balancer]\n" + // 16
				"policy = \"least_conn\"\n" + // 17
				"[log]\n" + // 18
				"level = \"verbose\"\n" + // 19
				"format = \"xml\"\n" + // 20
				"[bogus]\n", // 21
			want: []string{
				`gateway.toml:3: kubernetes.server: set kubernetes.kubeconfig or kubernetes.server, not both`,
				`gateway.toml:4: kubernetes.ingress_class: "Edge_Gate" is not a valid IngressClass name: `,
				`gateway.toml:5: kubernetes.watch_namespaces: "a" is listed twice`,
				`gateway.toml:5: kubernetes.watch_namespaces: "B" is not a valid namespace name: `,
				`gateway.toml:7: kubernetes.coalesce_max: 5ms is shorter than kubernetes.coalesce_idle 10ms`,
				`gateway.toml:9: unknown key "http.listne" (did you mean "listen"?)`,
				`gateway.toml:10: http.listen: "80" is not a host:port address: missing port in address`,
				`gateway.toml:11: http.read_timeout: invalid duration "soon" (use Go syntax like "5s")`,
				`gateway.toml:13: https.listen: "443" is not a host:port address: missing port in address`,
				`gateway.toml:17: balancer.policy: unknown policy "least_conn" (want "round_robin")`,
				`gateway.toml:19: log.level: unknown level "verbose" (want debug, info, warn or error)`,
				`gateway.toml:20: log.format: unknown format "xml" (want text or json)`,
				`gateway.toml:21: unknown section "bogus"`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse([]byte(tc.in), "gateway.toml")
			if err == nil {
				t.Fatalf("no error; got %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("got a Config with an error")
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error %T is not an *Error: %v", err, err)
			}
			var got []string
			for _, p := range cerr.Problems {
				got = append(got, p.Error())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems:\n%s\nwant %d:\n%s", len(got), strings.Join(got, "\n"), len(tc.want), strings.Join(tc.want, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("problem %d:\ngot  %s\nwant %s", i, got[i], tc.want[i])
				}
			}
			if err.Error() != strings.Join(got, "\n") {
				t.Errorf("Error() does not join the problems:\n%s", err)
			}
		})
	}
}

func TestProblemKeys(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte("[kubernetes]\nkubeconfig = \"/k\"\nburst = \"x\"\n[http]\nlistne = 1\n"), "g.toml")
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("got %v", err)
	}
	want := []Problem{
		{File: "g.toml", Line: 3, Key: "kubernetes.burst", Msg: "kubernetes.burst: expected an integer, got string"},
		{File: "g.toml", Line: 5, Key: "http.listne", Msg: `unknown key "http.listne" (did you mean "listen"?)`},
	}
	if !reflect.DeepEqual(cerr.Problems, want) {
		t.Errorf("got %+v\nwant %+v", cerr.Problems, want)
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string // appended after a [kubernetes] header
		want string // "" = valid; else a substring of the only problem
	}{
		{"kubeconfig", `kubeconfig = "/k"`, ""},
		{"kubeconfig with context", "kubeconfig = \"/k\"\ncontext = \"prod\"", ""},
		{"server", "server = \"https://api:6443\"\nca_file = \"/ca\"\ntoken_file = \"/t\"", ""},
		{"server without token", "server = \"https://api:6443\"\nca_file = \"/ca\"", ""},
		{"plain http server", `server = "http://127.0.0.1:8080"`, ""},
		{"https server without ca", `server = "https://api:6443"`, "kubernetes.ca_file: required"},
		{"token over http", "server = \"http://api:8080\"\ntoken_file = \"/t\"", "kubernetes.token_file: would send"},
		{"server not a URL", "server = \"api:6443\"\nca_file = \"/ca\"", "kubernetes.server: \"api:6443\" is not an API server URL"},
		{"server ftp", "server = \"ftp://api\"\nca_file = \"/ca\"", "is not an API server URL"},
		{"context with server", "server = \"https://api:6443\"\nca_file = \"/ca\"\ncontext = \"x\"", "kubernetes.context: only with kubernetes.kubeconfig"},
		{"token with kubeconfig", "kubeconfig = \"/k\"\ntoken_file = \"/t\"", "kubernetes.token_file: only with kubernetes.server"},
		{"ca with kubeconfig", "kubeconfig = \"/k\"\nca_file = \"/ca\"", "kubernetes.ca_file: only with kubernetes.server"},
		{"empty ingress class", "kubeconfig = \"/k\"\ningress_class = \"\"", "kubernetes.ingress_class"},
		{"dotted ingress class", "kubeconfig = \"/k\"\ningress_class = \"a.b-c\"", ""},
		{"namespaces", "kubeconfig = \"/k\"\nwatch_namespaces = [\"default\", \"kube-system\"]", ""},
		{"namespace with dot", "kubeconfig = \"/k\"\nwatch_namespaces = [\"a.b\"]", "kubernetes.watch_namespaces: \"a.b\""},
		{"zero coalesce_idle", "kubeconfig = \"/k\"\ncoalesce_idle = \"0s\"", "kubernetes.coalesce_idle: must be positive"},
		{"equal coalesce", "kubeconfig = \"/k\"\ncoalesce_idle = \"20ms\"", ""},
		{"zero qps", "kubeconfig = \"/k\"\nqps = 0", "kubernetes.qps: must be positive"},
		{"nan qps", "kubeconfig = \"/k\"\nqps = nan", "kubernetes.qps: must be positive"},
		{"integer qps", "kubeconfig = \"/k\"\nqps = 20", ""},
		{"zero burst", "kubeconfig = \"/k\"\nburst = 0", "kubernetes.burst: must be positive"},
		{"zero read timeout", "kubeconfig = \"/k\"\n[http]\nread_timeout = \"0s\"", ""},
		{"zero idle timeout", "kubeconfig = \"/k\"\n[http]\nidle_timeout = \"0s\"", "http.idle_timeout: must be positive"},
		{"parking off", "kubeconfig = \"/k\"\n[http]\npark_idle_after = \"0s\"", ""},
		{"negative park", "kubeconfig = \"/k\"\n[http]\npark_idle_after = \"-1s\"", "http.park_idle_after"},
		{"event loops per CPU", "kubeconfig = \"/k\"\n[http]\nevent_loops = 0", ""},
		{"event loops off", "kubeconfig = \"/k\"\n[http]\nevent_loops = -1", ""},
		{"event loops", "kubeconfig = \"/k\"\n[http]\nevent_loops = 2", ""},
		{"most event loops", "kubeconfig = \"/k\"\n[http]\nevent_loops = 256", ""},
		{"too many event loops", "kubeconfig = \"/k\"\n[http]\nevent_loops = 257", "http.event_loops: must be from -1 to 256, got 257"},
		{"negative event loops", "kubeconfig = \"/k\"\n[http]\nevent_loops = -2", "http.event_loops: must be from -1 to 256, got -2"},
		{"zero shutdown", "kubeconfig = \"/k\"\n[http]\nshutdown_timeout = \"0s\"", "http.shutdown_timeout: must be positive"},
		{"zero header bytes", "kubeconfig = \"/k\"\n[http]\nmax_header_bytes = 0", "http.max_header_bytes: must be positive"},
		{"named port", "kubeconfig = \"/k\"\n[http]\nlisten = \":http\"", `http.listen: ":http": port "http" is not a number`},
		{"port too big", "kubeconfig = \"/k\"\n[http]\nlisten = \":65536\"", "is not a number from 0 to 65535"},
		{"ipv6 listen", "kubeconfig = \"/k\"\n[http]\nlisten = \"[::]:8080\"", ""},
		{"admin same as http", "kubeconfig = \"/k\"\n[admin]\nlisten = \":80\"", "admin.listen: \":80\" conflicts with http.listen"},
		{"admin on ipv6 wildcard", "kubeconfig = \"/k\"\n[http]\nlisten = \"10.0.0.1:80\"\n[admin]\nlisten = \"[::]:80\"", "conflicts"},
		{"same port other host", "kubeconfig = \"/k\"\n[http]\nlisten = \"10.0.0.1:9901\"", ""},
		{"both port 0", "kubeconfig = \"/k\"\n[http]\nlisten = \":0\"\n[admin]\nlisten = \":0\"", ""},
		{"zero connect timeout", "kubeconfig = \"/k\"\n[upstream]\nconnect_timeout = \"0s\"", "upstream.connect_timeout: must be positive"},
		{"zero max conns", "kubeconfig = \"/k\"\n[upstream]\nmax_conns_per_endpoint = -1", "upstream.max_conns_per_endpoint: must be positive"},
		{"zero drain grace", "kubeconfig = \"/k\"\n[balancer]\ndrain_grace = \"0s\"", ""},
		{"https", "kubeconfig = \"/k\"\n[https]\nlisten = \"127.0.0.1:8443\"", ""},
		{"https disabled", "kubeconfig = \"/k\"\n[https]\nlisten = \"\"", ""},
		{"https bad address", "kubeconfig = \"/k\"\n[https]\nlisten = \"443\"", "https.listen: \"443\" is not a host:port address"},
		{"https same as http", "kubeconfig = \"/k\"\n[http]\nlisten = \":8080\"\n[https]\nlisten = \"0.0.0.0:8080\"", "https.listen: \"0.0.0.0:8080\" conflicts with http.listen"},
		{"https same as admin", "kubeconfig = \"/k\"\n[https]\nlisten = \":9901\"", "https.listen: \":9901\" conflicts with admin.listen"},
		{"default cert and key", "kubeconfig = \"/k\"\n[https]\ndefault_cert = \"c.pem\"\ndefault_key = \"k.pem\"", ""},
		{"default cert without key", "kubeconfig = \"/k\"\n[https]\ndefault_cert = \"c.pem\"", "https.default_key: required with https.default_cert"},
		{"default key without cert", "kubeconfig = \"/k\"\n[https]\ndefault_key = \"k.pem\"", "https.default_cert: required with https.default_key"},
		{"redirect off", "kubeconfig = \"/k\"\n[https]\nredirect = false", ""},
		{"acme", "kubeconfig = \"/k\"\n[acme]\nenabled = true\nemail = \"a@b.c\"", ""},
		{"acme without https", "kubeconfig = \"/k\"\n[https]\nlisten = \"\"\n[acme]\nenabled = true", "acme.enabled: requires https.listen"},
		{"acme http directory on loopback", "kubeconfig = \"/k\"\n[acme]\nenabled = true\ndirectory = \"http://127.0.0.1:14000/dir\"", ""},
		{"acme http directory on localhost", "kubeconfig = \"/k\"\n[acme]\nenabled = true\ndirectory = \"http://localhost:14000/dir\"", ""},
		{"acme http directory remote", "kubeconfig = \"/k\"\n[acme]\nenabled = true\ndirectory = \"http://acme.example.com/dir\"", "acme.directory: \"http://acme.example.com/dir\" must be https"},
		{"acme directory not a URL", "kubeconfig = \"/k\"\n[acme]\ndirectory = \"acme.example.com\"", "acme.directory: \"acme.example.com\" is not an ACME directory URL"},
		{"acme empty directory", "kubeconfig = \"/k\"\n[acme]\nenabled = true\ndirectory = \"\"", "acme.directory"},
		{"acme empty directory when disabled", "kubeconfig = \"/k\"\n[acme]\ndirectory = \"\"", ""},
		{"acme empty cache dir", "kubeconfig = \"/k\"\n[acme]\nenabled = true\ncache_dir = \"\"", "acme.cache_dir: required"},
		{"acme zero renew_before", "kubeconfig = \"/k\"\n[acme]\nrenew_before = \"0s\"", "acme.renew_before: must be positive"},
		{"acme all hosts", "kubeconfig = \"/k\"\n[acme]\nhosts = \"all-ingress-hosts\"", ""},
		{"acme unknown hosts policy", "kubeconfig = \"/k\"\n[acme]\nhosts = \"all\"", "acme.hosts: unknown policy \"all\""},
		{"empty reserved sections", "kubeconfig = \"/k\"\n[cluster]\n[acme]", ""},
		{"upper-case log level", "kubeconfig = \"/k\"\n[log]\nlevel = \"INFO\"", "log.level: unknown level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse([]byte("[kubernetes]\n"+tc.in+"\n"), "g.toml")
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want == "":
				if err := cfg.Validate(); err != nil {
					t.Errorf("Validate after Parse: %v", err)
				}
			case err == nil:
				t.Fatalf("no error, want %q", tc.want)
			default:
				var cerr *Error
				if !errors.As(err, &cerr) || len(cerr.Problems) != 1 || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got %v\nwant one problem containing %q", err, tc.want)
				}
			}
		})
	}
}

func TestValidateWithoutFile(t *testing.T) {
	t.Parallel()
	c := Default()
	err := c.Validate()
	if err == nil || err.Error() != "set kubernetes.kubeconfig or kubernetes.server" {
		t.Errorf("Default().Validate() = %v", err)
	}
	if err := nonDefault().Validate(); err != nil {
		t.Errorf("nonDefault().Validate() = %v", err)
	}
}

func TestRelativePaths(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "etc")
	for _, tc := range []struct {
		name, in string
		want     KubernetesConfig
	}{
		{"relative kubeconfig", `kubeconfig = "kube/config"`, KubernetesConfig{Kubeconfig: filepath.Join(dir, "kube/config")}},
		{"absolute kubeconfig", `kubeconfig = "/k"`, KubernetesConfig{Kubeconfig: "/k"}},
		{"server files", "server = \"https://api:6443\"\ntoken_file = \"token\"\nca_file = \"../ca.crt\"",
			KubernetesConfig{Server: "https://api:6443", TokenFile: filepath.Join(dir, "token"), CAFile: filepath.Join(dir, "../ca.crt")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse([]byte("[kubernetes]\n"+tc.in+"\n"), filepath.Join(dir, "gateway.toml"))
			if err != nil {
				t.Fatal(err)
			}
			k := cfg.Kubernetes
			if got := [4]string{k.Kubeconfig, k.Server, k.TokenFile, k.CAFile}; got != [4]string{tc.want.Kubeconfig, tc.want.Server, tc.want.TokenFile, tc.want.CAFile} {
				t.Errorf("got %q\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestRelativeTLSPaths(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "etc")
	in := minimal + "[https]\ndefault_cert = \"tls/c.pem\"\ndefault_key = \"/abs/k.pem\"\n" +
		"[acme]\nca_file = \"pebble.pem\"\ncache_dir = \"../acme\"\n"
	cfg, err := Parse([]byte(in), filepath.Join(dir, "gateway.toml"))
	if err != nil {
		t.Fatal(err)
	}
	got := [4]string{cfg.HTTPS.DefaultCert, cfg.HTTPS.DefaultKey, cfg.ACME.CAFile, cfg.ACME.CacheDir}
	want := [4]string{filepath.Join(dir, "tls/c.pem"), "/abs/k.pem", filepath.Join(dir, "pebble.pem"), filepath.Join(dir, "../acme")}
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	// The default cache_dir is absolute and stays as it is.
	cfg, err = Parse([]byte(minimal), filepath.Join(dir, "gateway.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ACME.CacheDir != "/var/lib/edgegate/acme" || cfg.HTTPS.DefaultCert != "" {
		t.Errorf("defaults changed by path resolution: %+v %+v", cfg.HTTPS, cfg.ACME)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.toml")
	if err := os.WriteFile(path, []byte("[kubernetes]\nkubeconfig = \"kc\"\n[http]\nlisten = \":8080\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubernetes.Kubeconfig != filepath.Join(dir, "kc") || cfg.HTTP.Listen != ":8080" {
		t.Errorf("got %+v", cfg)
	}

	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v, want fs.ErrNotExist", err)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[kubernetes]\nkubeconfig = \"kc\"\nfoo = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || err.Error() != bad+`:3: unknown key "kubernetes.foo"` {
		t.Errorf("bad file: got %v", err)
	}
}

func TestSlogLevel(t *testing.T) {
	t.Parallel()
	for level, want := range map[string]string{"debug": "DEBUG", "info": "INFO", "warn": "WARN", "error": "ERROR"} {
		c := Default()
		c.Log.Level = level
		if got := c.SlogLevel().String(); got != want {
			t.Errorf("%s: got %s", level, got)
		}
	}
}

func TestDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"250ms", 250 * time.Millisecond, ""},
		{"1m30s", 90 * time.Second, ""},
		{"0", 0, ""},
		{"5", 0, `invalid duration "5" (use Go syntax like "5s")`},
		{"", 0, `invalid duration ""`},
		{"-5s", 0, `invalid duration "-5s": must not be negative`},
	} {
		var d Duration
		err := d.UnmarshalText([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("%q: got %v, want %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || time.Duration(d) != tc.want {
			t.Errorf("%q: got %v, %v", tc.in, d, err)
		}
		text, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(text); err != nil || back != d {
			t.Errorf("%q: MarshalText %q does not round-trip", tc.in, text)
		}
	}
}

func TestLoops(t *testing.T) {
	for _, tc := range []struct{ eventLoops, procs, want int }{
		{0, 2, 2}, // default: one per CPU
		{0, 16, 16},
		{0, 0, 1},
		{EventLoopsOff, 2, 0},
		{1, 8, 1},
		{4, 2, 4},
	} {
		if got := (HTTPConfig{EventLoops: tc.eventLoops}).Loops(tc.procs); got != tc.want {
			t.Errorf("event_loops = %d with %d CPUs: %d loops, want %d", tc.eventLoops, tc.procs, got, tc.want)
		}
	}
}
