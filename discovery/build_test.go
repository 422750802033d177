package discovery

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/edgegate/edgegate/route"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// buildConfig is a test-only document (kind: BuildConfig) setting the Input
// fields that are not Kubernetes objects.
type buildConfig struct {
	IngressClassName string     `json:"ingressClassName"`
	TLS              TLSConfig  `json:"tls"` // redirect, acme, acmeAllHosts
	Now              *time.Time `json:"now"`
}

// decodeInput decodes a multi-document YAML (or JSON) stream of Ingress,
// IngressClass, Service, EndpointSlice and Secret objects, plus an optional
// BuildConfig. Secret stringData is merged into data as the API server
// does; a stringData value "@tls/shop.crt" is replaced by the contents of
// that file under testdata. Input.Now is goldenNow unless the BuildConfig
// sets it. Documents of other kinds are errors when strict, skipped
// otherwise.
func decodeInput(data []byte, strict bool) (Input, error) {
	in := Input{Now: goldenNow}
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var tm struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			if strict {
				return in, fmt.Errorf("document %d: %w", i, err)
			}
			continue
		}
		var err error
		switch tm.Kind {
		case "Ingress":
			o := new(netv1.Ingress)
			if err = yaml.Unmarshal([]byte(doc), o); err == nil {
				in.Ingresses = append(in.Ingresses, o)
			}
		case "IngressClass":
			o := new(netv1.IngressClass)
			if err = yaml.Unmarshal([]byte(doc), o); err == nil {
				in.Classes = append(in.Classes, o)
			}
		case "Service":
			o := new(corev1.Service)
			if err = yaml.Unmarshal([]byte(doc), o); err == nil {
				in.Services = append(in.Services, o)
			}
		case "EndpointSlice":
			o := new(discoveryv1.EndpointSlice)
			if err = yaml.Unmarshal([]byte(doc), o); err == nil {
				in.Slices = append(in.Slices, o)
			}
		case "Secret":
			o := new(corev1.Secret)
			if err = yaml.Unmarshal([]byte(doc), o); err == nil {
				err = mergeStringData(o)
				in.Secrets = append(in.Secrets, o)
			}
		case "BuildConfig":
			var c buildConfig
			if err = yaml.UnmarshalStrict([]byte(doc), &struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				*buildConfig
			}{buildConfig: &c}); err == nil {
				in.IngressClassName, in.TLS = c.IngressClassName, c.TLS
				if c.Now != nil {
					in.Now = *c.Now
				}
			}
		default:
			err = fmt.Errorf("unknown kind %q", tm.Kind)
		}
		if err != nil && strict {
			return in, fmt.Errorf("document %d: %w", i, err)
		}
	}
	return in, nil
}

func mergeStringData(s *corev1.Secret) error {
	for k, v := range s.StringData {
		if rel, ok := strings.CutPrefix(v, "@"); ok {
			b, err := os.ReadFile(filepath.Join("testdata", filepath.FromSlash(rel)))
			if err != nil {
				return err
			}
			v = string(b)
		}
		if s.Data == nil {
			s.Data = make(map[string][]byte)
		}
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
	return nil
}

// dump is the golden form of a Build result: deliberately independent of
// route's hash function and of Version/Built.
type dump struct {
	Hosts    []dumpHost    `json:"hosts"`
	Default  *dumpRoute    `json:"default"`
	Backends []dumpBackend `json:"backends"`
	// TLS and ACMEHosts are left out when empty, as RedirectHTTPS is when
	// false, so the cases without TLS need not mention them.
	TLS       []dumpCert `json:"tls,omitempty"`
	ACMEHosts []string   `json:"acme_hosts,omitempty"`
	Problems  []string   `json:"problems"`
}

type dumpCert struct {
	Host     string `json:"host"`
	Secret   string `json:"secret"`
	Ingress  string `json:"ingress"`
	Served   bool   `json:"served"` // a Certificate is set
	NotAfter string `json:"not_after,omitempty"`
	Error    string `json:"error,omitempty"`
}

type dumpHost struct {
	Host   string      `json:"host"`
	Routes []dumpRoute `json:"routes"`
}

type dumpRoute struct {
	Path     string `json:"path"`
	Type     string `json:"type"`
	Ingress  string `json:"ingress"`
	Backend  string `json:"backend"`
	Redirect bool   `json:"redirect_https,omitempty"`
}

type dumpBackend struct {
	ID    string   `json:"id"`
	Error string   `json:"error,omitempty"`
	Addrs []string `json:"addrs"`
}

func dumpOf(s *route.Snapshot, problems []Problem) dump {
	d := dump{Hosts: []dumpHost{}, Backends: []dumpBackend{}, Problems: []string{}}
	rv := func(r *route.Route) dumpRoute {
		return dumpRoute{Path: r.Path, Type: r.Type.String(), Ingress: r.Ingress.String(), Backend: s.Backends[r.Backend].ID(), Redirect: r.RedirectHTTPS}
	}
	for _, t := range s.Hosts() {
		h := dumpHost{Host: t.Host, Routes: []dumpRoute{}}
		for _, r := range t.Routes {
			h.Routes = append(h.Routes, rv(r))
		}
		d.Hosts = append(d.Hosts, h)
	}
	if s.Default != nil {
		r := rv(s.Default)
		d.Default = &r
	}
	for _, b := range s.Backends {
		a := b.Addrs
		if a == nil {
			a = []string{}
		}
		d.Backends = append(d.Backends, dumpBackend{ID: b.ID(), Error: b.Error, Addrs: a})
	}
	for _, h := range s.TLSHosts() {
		c := s.Certificate(h)
		dc := dumpCert{Host: h, Secret: c.Secret.String(), Ingress: c.Ingress.String(), Served: c.Certificate != nil, Error: c.Error}
		if !c.NotAfter.IsZero() {
			dc.NotAfter = c.NotAfter.UTC().Format(time.RFC3339)
		}
		d.TLS = append(d.TLS, dc)
	}
	d.ACMEHosts = s.ACMEHosts()
	for _, p := range problems {
		d.Problems = append(d.Problems, p.String())
	}
	return d
}

func TestBuildGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/build/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no test cases: %v", err)
	}
	for _, inPath := range ins {
		name := strings.TrimSuffix(filepath.Base(inPath), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(inPath)
			if err != nil {
				t.Fatal(err)
			}
			in, err := decodeInput(data, true)
			if err != nil {
				t.Fatal(err)
			}
			snap, problems := Build(in)
			got, err := json.MarshalIndent(dumpOf(snap, problems), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			outPath := strings.TrimSuffix(inPath, ".in.yaml") + ".out.json"
			if *update {
				if err := os.WriteFile(outPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(outPath)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Build(%s) differs from %s (run with -update to accept):\n%s", inPath, outPath, got)
			}

			// The result must not depend on the order of the objects.
			for seed := range uint64(5) {
				r := rand.New(rand.NewPCG(seed, 1))
				sh := Input{
					IngressClassName: in.IngressClassName,
					Ingresses:        shuffled(r, in.Ingresses),
					Classes:          shuffled(r, in.Classes),
					Services:         shuffled(r, in.Services),
					Slices:           shuffled(r, in.Slices),
					Secrets:          shuffled(r, in.Secrets),
					TLS:              in.TLS,
					Now:              in.Now,
				}
				s2, p2 := Build(sh)
				if s2.Hash() != snap.Hash() || !slices.Equal(p2, problems) {
					t.Fatalf("Build of shuffled input (seed %d) differs", seed)
				}
			}
		})
	}
}

func shuffled[T any](r *rand.Rand, s []T) []T {
	s = slices.Clone(s)
	r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

func TestBuildNilAndEmpty(t *testing.T) {
	t.Parallel()
	s, p := Build(Input{})
	if s == nil || len(s.Hosts()) != 0 || s.Default != nil || len(p) != 0 {
		t.Fatalf("Build(empty) = %v, %v", s.View(), p)
	}
	pt := netv1.PathTypeExact
	s, _ = Build(Input{
		Ingresses: []*netv1.Ingress{nil, {
			ObjectMeta: metav1ObjectMeta("default", "x"),
			Spec: netv1.IngressSpec{
				IngressClassName: ptr("edgegate"),
				DefaultBackend:   &netv1.IngressBackend{},
				Rules: []netv1.IngressRule{{}, {IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{
					Paths: []netv1.HTTPIngressPath{{PathType: &pt}, {Path: "/a", PathType: &pt, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: "s", Port: netv1.ServiceBackendPort{Number: 1}}}}},
				}}}},
			},
		}},
		Classes:  []*netv1.IngressClass{nil, {ObjectMeta: metav1ObjectMeta("", "edgegate"), Spec: netv1.IngressClassSpec{Controller: ControllerName}}},
		Services: []*corev1.Service{nil},
		Slices:   []*discoveryv1.EndpointSlice{nil, {}},
	})
	if got := len(s.Hosts()); got != 1 {
		t.Fatalf("got %d host tables, want 1", got)
	}
}

func TestProblemString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{Kind: KindIngress, Namespace: "ns", Name: "web", Msg: "bad"}, "ingress ns/web: bad"},
		{Problem{Kind: KindIngressClass, Name: "edgegate", Msg: "bad"}, "ingressclass edgegate: bad"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
