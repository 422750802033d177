// Command demo is `make demo`: it starts a real etcd + kube-apiserver, small
// HTTP "pods" that say who they are, applies examples/demo.yaml, starts the
// edgegate binary against that API server and prints curl commands that show
// host and path routing. Ctrl-C stops everything it started.
//
// With root, the pods listen inside a network namespace that the host routes
// to, exactly as an edge VM routes to a pod CIDR, and the EndpointSlices are
// written through the API server. Without root, the pods listen on 127.0.0.N
// and, because the API server refuses loopback endpoint addresses, the demo
// stores its EndpointSlices in its own etcd directly, the way a custom
// endpoint controller with etcd access could.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/edgegate/edgegate/internal/controlplane"
	"github.com/edgegate/edgegate/internal/gatewayproc"
	"github.com/edgegate/edgegate/internal/podnet"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:8080", "gateway HTTP listen address")
	adminAddr := flag.String("admin", "127.0.0.1:9901", "gateway admin listen address")
	manifest := flag.String("f", "", "objects to apply (default examples/demo.yaml)")
	loopback := flag.Bool("loopback", false, "put pods on 127.0.0.N even as root (what happens without root)")
	flag.Parse()
	log.SetFlags(log.Ltime)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *httpAddr, *adminAddr, *manifest, *loopback); err != nil {
		log.Fatalf("demo: %v", err)
	}
}

func run(ctx context.Context, httpAddr, adminAddr, manifest string, loopback bool) error {
	root, err := gatewayproc.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	if manifest == "" {
		manifest = filepath.Join(root, "examples", "demo.yaml")
	}
	objs, err := readObjects(manifest)
	if err != nil {
		return err
	}
	for _, a := range []*string{&httpAddr, &adminAddr} {
		if ln, err := net.Listen("tcp", *a); err != nil {
			free := gatewayproc.FreeAddr()
			log.Printf("%s is taken, using %s instead", *a, free)
			*a = free
		} else {
			ln.Close()
		}
	}

	t0 := time.Now()
	log.Printf("starting etcd + kube-apiserver %s (a few seconds)...", controlplane.Version)
	cp, err := controlplane.Start(ctx, controlplane.Config{Logf: log.Printf})
	if err != nil {
		return err
	}
	defer func() {
		log.Printf("stopping the control plane")
		cp.Stop()
	}()
	log.Printf("control plane ready in %s: %s", time.Since(t0).Round(time.Millisecond), cp.URL())

	// Pods: one per EndpointSlice endpoint, on an address the host routes to.
	var pn *podnet.Network
	if os.Geteuid() == 0 && !loopback {
		if pn, err = podnet.New(podnet.Config{}); err != nil {
			log.Printf("no pod network namespace (%v); falling back to loopback pods", err)
			pn = nil
		} else {
			defer pn.Close()
		}
	}
	mode := "network namespace " + netnsName(pn) + " (routed from the host like a pod CIDR)"
	if pn == nil {
		mode = "127.0.0.N (no root: EndpointSlices stored in etcd directly)"
	}
	log.Printf("pods live in %s", mode)
	var servers []*http.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	for _, s := range objs.slices {
		for i := range s.Endpoints {
			ep := &s.Endpoints[i]
			name := s.Name
			if ep.TargetRef != nil {
				name = ep.TargetRef.Name
			}
			port := 8080
			if len(s.Ports) > 0 && s.Ports[0].Port != nil {
				port = int(*s.Ports[0].Port)
			}
			var ln net.Listener
			var ip string
			if pn != nil {
				ip = pn.AllocIP().String()
				ln, err = pn.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			} else {
				ip = loopbackFor(ep.Addresses[0])
				ln, err = net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			}
			if err != nil {
				return fmt.Errorf("pod %s: %w", name, err)
			}
			ep.Addresses = []string{ip}
			srv := &http.Server{Handler: podHandler(s.Namespace, name, ln.Addr().String()), ReadHeaderTimeout: 5 * time.Second}
			servers = append(servers, srv)
			go srv.Serve(ln)
			log.Printf("pod %s/%s listening on %s", s.Namespace, name, ln.Addr())
		}
	}

	c := cp.Client()
	if err := objs.apply(ctx, c); err != nil {
		return err
	}
	for _, s := range objs.slices {
		if pn != nil {
			_, err = c.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
		} else {
			err = putEtcd(ctx, cp.EtcdURL(), s)
		}
		if err != nil {
			return fmt.Errorf("endpointslice %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	log.Printf("applied %s", manifest)

	dir, err := os.MkdirTemp("", "edgegate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(root, "bin", "edgegate")
	if _, err := os.Stat(bin); err != nil {
		log.Printf("building edgegate")
		if bin, err = gatewayproc.Build(ctx, dir); err != nil {
			return err
		}
	}
	log.Printf("starting %s", bin)
	gw, err := gatewayproc.Start(ctx, gatewayproc.Options{
		Bin: bin, Dir: dir, Kubeconfig: cp.Kubeconfig(),
		HTTPListen: httpAddr, AdminListen: adminAddr,
		LogLevel: "info",
		Stdout:   prefixWriter("edgegate | ", os.Stderr),
	})
	if err != nil {
		return err
	}
	defer func() {
		log.Printf("stopping edgegate")
		gw.Stop(10 * time.Second)
	}()

	fmt.Printf(`
edgegate is routing on http://%[1]s  (admin on http://%[2]s)
Pods: %[3]s

Try:
  curl -s -H 'Host: hello.demo.test' http://%[1]s/            # round-robin over hello-a and hello-b
  curl -s -H 'Host: hello.demo.test' http://%[1]s/api/users   # longest prefix: the api pod
  curl -s -H 'Host: api.demo.test'   http://%[1]s/v1/items    # another host, Prefix /v1
  curl -s -H 'Host: api.demo.test'   http://%[1]s/healthz     # Exact path
  curl -s -H 'Host: x.apps.demo.test' http://%[1]s/           # wildcard host *.apps.demo.test
  curl -s -H 'Host: nowhere.test'    http://%[1]s/            # no rule: the defaultBackend (fallback)
  curl -sk -H 'Host: hello.demo.test' https://%[5]s/        # HTTPS (no Secret in the demo: the self-signed default certificate)
  curl -s http://%[2]s/routes                                 # the live route table
  curl -s http://%[2]s/metrics | grep edgegate_
  KUBECONFIG=%[4]s kubectl get ingress -A                      # if you have kubectl

Press Ctrl-C to stop everything.
`, httpAddr, adminAddr, mode, cp.Kubeconfig(), gw.HTTPSAddr)

	select {
	case <-ctx.Done():
		fmt.Println()
		return nil
	case <-gw.Done():
		return fmt.Errorf("edgegate exited: %v\n%s", gw.Err(), gw.LogTail(20))
	}
}

func netnsName(pn *podnet.Network) string {
	if pn == nil {
		return ""
	}
	return pn.Name()
}

// loopbackFor maps a sample address 10.244.250.N to 127.0.0.N.
func loopbackFor(addr string) string {
	if i := strings.LastIndexByte(addr, '.'); i >= 0 {
		return "127.0.0." + addr[i+1:]
	}
	return "127.0.0.1"
}

func podHandler(ns, name, addr string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Pod", name)
		fmt.Fprintf(w, "pod %s/%s at %s: %s %s (Host %s, X-Forwarded-For %q)\n",
			ns, name, addr, r.Method, r.URL.RequestURI(), r.Host, r.Header.Get("X-Forwarded-For"))
	})
}

type objects struct {
	namespaces []*corev1.Namespace
	classes    []*netv1.IngressClass
	services   []*corev1.Service
	slices     []*discoveryv1.EndpointSlice
	ingresses  []*netv1.Ingress
}

// readObjects decodes a multi-document YAML file of the kinds the demo uses.
func readObjects(path string) (*objects, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	o := &objects{}
	for i, doc := range bytes.Split(data, []byte("\n---")) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		var target any
		switch tm.Kind {
		case "":
			continue
		case "Namespace":
			x := &corev1.Namespace{}
			o.namespaces, target = append(o.namespaces, x), x
		case "IngressClass":
			x := &netv1.IngressClass{}
			o.classes, target = append(o.classes, x), x
		case "Service":
			x := &corev1.Service{}
			o.services, target = append(o.services, x), x
		case "EndpointSlice":
			x := &discoveryv1.EndpointSlice{}
			o.slices, target = append(o.slices, x), x
		case "Ingress":
			x := &netv1.Ingress{}
			o.ingresses, target = append(o.ingresses, x), x
		default:
			return nil, fmt.Errorf("%s: document %d: unsupported kind %q", path, i+1, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", path, i+1, tm.Kind, err)
		}
	}
	return o, nil
}

func (o *objects) apply(ctx context.Context, c kubernetes.Interface) error {
	for _, x := range o.namespaces {
		if _, err := c.CoreV1().Namespaces().Create(ctx, x, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("namespace %s: %w", x.Name, err)
		}
	}
	for _, x := range o.classes {
		if _, err := c.NetworkingV1().IngressClasses().Create(ctx, x, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("ingressclass %s: %w", x.Name, err)
		}
	}
	for _, x := range o.services {
		if _, err := c.CoreV1().Services(x.Namespace).Create(ctx, x, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("service %s/%s: %w", x.Namespace, x.Name, err)
		}
	}
	for _, x := range o.ingresses {
		if _, err := c.NetworkingV1().Ingresses(x.Namespace).Create(ctx, x, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("ingress %s/%s: %w", x.Namespace, x.Name, err)
		}
	}
	return nil
}

// putEtcd stores an EndpointSlice in etcd as JSON through etcd's HTTP gateway,
// under the key the API server reads it from.
func putEtcd(ctx context.Context, etcdURL string, s *discoveryv1.EndpointSlice) error {
	s = s.DeepCopy()
	s.APIVersion, s.Kind = "discovery.k8s.io/v1", "EndpointSlice"
	s.UID = types.UID(uuid.NewUUID())
	s.CreationTimestamp = metav1.Now()
	val, err := json.Marshal(s)
	if err != nil {
		return err
	}
	key := "/registry/endpointslices/" + s.Namespace + "/" + s.Name
	body, _ := json.Marshal(map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString(val),
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, etcdURL+"/v3/kv/put", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return errors.New("etcd put: " + resp.Status + ": " + string(b))
	}
	return nil
}

// prefixWriter prefixes every line written to w.
func prefixWriter(prefix string, w io.Writer) io.Writer {
	return &linePrefixer{prefix: prefix, w: w, bol: true}
}

type linePrefixer struct {
	prefix string
	w      io.Writer
	bol    bool
}

func (p *linePrefixer) Write(b []byte) (int, error) {
	var out bytes.Buffer
	for _, c := range b {
		if p.bol {
			out.WriteString(p.prefix)
		}
		out.WriteByte(c)
		p.bol = c == '\n'
	}
	_, err := p.w.Write(out.Bytes())
	return len(b), err
}
