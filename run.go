package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/edgegate/edgegate/admin"
	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/config"
	"github.com/edgegate/edgegate/discovery"
	"github.com/edgegate/edgegate/proxy"
	"github.com/edgegate/edgegate/route"
	"github.com/edgegate/edgegate/tlsmgr"
)

// run wires discovery -> route snapshot -> proxy (HTTP and HTTPS, with
// tlsmgr's certificates), starts the admin server and blocks until ctx is
// cancelled, then drains in-flight requests.
func run(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	restCfg, err := restConfig(cfg.Kubernetes)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	// Bind every listener before anything runs so a port clash fails fast
	// (and the HTTPS port is known for redirects). Until the servers own
	// them, they are closed on error.
	lns, err := listen(cfg, logger)
	if err != nil {
		return err
	}
	serving := false
	defer func() {
		if !serving {
			lns.close()
		}
	}()
	httpsOn := lns.https != nil

	// The proxy reads the watcher's snapshot; the watcher binds endpoints
	// through a registry whose transports the proxy creates. The pointer
	// breaks the construction cycle.
	var watcher *discovery.Watcher
	var readyOnce sync.Once // tell systemd once the first snapshot routes
	snapshot := func() *route.Snapshot { return watcher.Snapshot() }

	// Certificates come from the snapshot (Secrets) and from ACME.
	var tm *tlsmgr.Manager
	if httpsOn {
		tm, err = tlsmgr.New(tlsmgr.Config{
			Snapshot:        snapshot,
			DefaultCertFile: cfg.HTTPS.DefaultCert,
			DefaultKeyFile:  cfg.HTTPS.DefaultKey,
			ACME:            acmeConfig(cfg.ACME),
			Logger:          logger.With("component", "tlsmgr"),
		})
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}

	pcfg := proxy.Config{
		Listen:              cfg.HTTP.Listen,
		ReadTimeout:         noLimitIfZero(time.Duration(cfg.HTTP.ReadTimeout)),
		WriteTimeout:        noLimitIfZero(time.Duration(cfg.HTTP.WriteTimeout)),
		IdleTimeout:         time.Duration(cfg.HTTP.IdleTimeout),
		ParkIdleAfter:       parkIdleAfter(time.Duration(cfg.HTTP.ParkIdleAfter)),
		EventLoops:          cfg.HTTP.Loops(runtime.GOMAXPROCS(0)),
		MaxHeaderBytes:      cfg.HTTP.MaxHeaderBytes,
		ConnectTimeout:      time.Duration(cfg.Upstream.ConnectTimeout),
		ResponseTimeout:     time.Duration(cfg.Upstream.ResponseTimeout),
		UpstreamIdleTimeout: time.Duration(cfg.Upstream.IdleTimeout),
		MaxConnsPerEndpoint: cfg.Upstream.MaxConnsPerEndpoint,
		AccessLog:           cfg.HTTP.AccessLog,
		Logger:              logger.With("component", "proxy"),
		Snapshot:            snapshot,
	}
	if httpsOn {
		pcfg.RedirectHTTPS = cfg.HTTPS.Redirect
		pcfg.HTTPSPort = lns.https.Addr().(*net.TCPAddr).Port
		pcfg.HandshakeError = tm.HandshakeError
		if h := tm.HTTPHandler(); h != nil {
			// The adaptor makes fasthttp's RequestCtx the request context;
			// autocert derives a timeout context from it, whose watcher
			// goroutine would read RequestCtx.Done() while a graceful
			// shutdown resets it (a data race). The challenge answer needs
			// no cancellation, so detach it.
			pcfg.ACMEChallenge = fasthttpadaptor.NewFastHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.ServeHTTP(w, r.WithContext(context.WithoutCancel(r.Context())))
			}))
		}
	}
	px, err := proxy.New(pcfg)
	if err != nil {
		return err
	}
	registry := balancer.NewRegistry(balancer.RegistryConfig{
		NewTransport:   px.NewTransport,
		CloseTransport: px.CloseTransport,
		DrainGrace:     time.Duration(cfg.Balancer.DrainGrace),
	})
	watcher, err = discovery.New(discovery.Config{
		Client:           client,
		IngressClassName: cfg.Kubernetes.IngressClass,
		Namespaces:       cfg.Kubernetes.WatchNamespaces,
		CoalesceIdle:     time.Duration(cfg.Kubernetes.CoalesceIdle),
		CoalesceMax:      time.Duration(cfg.Kubernetes.CoalesceMax),
		Registry:         registry,
		OnPublish: func(s *route.Snapshot) {
			px.Prune(s)
			readyOnce.Do(func() {
				if err := sdNotify("READY=1"); err != nil {
					logger.Warn("systemd notification failed", "err", err)
				}
			})
		},
		Logger: logger.With("component", "discovery"),
		TLS: discovery.TLSConfig{
			Redirect:     httpsOn && cfg.HTTPS.Redirect,
			ACME:         httpsOn && cfg.ACME.Enabled,
			ACMEAllHosts: cfg.ACME.Hosts == config.ACMEHostsAll,
		},
	})
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(px.Collectors()...)
	reg.MustRegister(watcher.Collectors()...)
	if tm != nil {
		reg.MustRegister(tm.Collectors()...)
	}
	reg.MustRegister(buildInfo())

	adm, err := admin.New(admin.Config{
		Listen:   cfg.Admin.Listen,
		Snapshot: watcher.Snapshot,
		Ready:    watcher.Ready,
		Gatherer: reg,
		Pprof:    cfg.Admin.Pprof,
		Logger:   logger.With("component", "admin"),
	})
	if err != nil {
		return err
	}

	httpsAddr := ""
	if httpsOn {
		httpsAddr = lns.https.Addr().String()
	}
	logger.Info("edgegate starting", "version", buildVersion(), "http", lns.http.Addr().String(), "https", httpsAddr,
		"admin", lns.admin.Addr().String(), "acme", httpsOn && cfg.ACME.Enabled, "apiserver", restCfg.Host,
		"ingress_class", cfg.Kubernetes.IngressClass, "event_loops", cfg.HTTP.Loops(runtime.GOMAXPROCS(0)))

	serving = true
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return watcher.Run(gctx) })
	g.Go(func() error { return serveUntil(gctx, "proxy", func() error { return px.Serve(lns.http) }) })
	if httpsOn {
		tlsCfg := tm.TLSConfig()
		g.Go(func() error {
			return serveUntil(gctx, "https proxy", func() error { return px.ServeTLS(lns.https, tlsCfg) })
		})
	}
	g.Go(func() error { return serveUntil(gctx, "admin", func() error { return adm.Serve(lns.admin) }) })
	g.Go(func() error {
		<-gctx.Done()
		_ = sdNotify("STOPPING=1")
		logger.Info("shutting down: draining in-flight requests", "timeout", time.Duration(cfg.HTTP.ShutdownTimeout).String())
		sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.HTTP.ShutdownTimeout))
		defer cancel()
		perr := px.Shutdown(sctx) // both the HTTP and the HTTPS listener
		aerr := adm.Shutdown(sctx)
		return errors.Join(perr, aerr)
	})
	err = g.Wait()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = nil
	}
	if err == nil {
		logger.Info("edgegate stopped")
	}
	return err
}

// listeners are the gateway's bound sockets; https is nil when HTTPS is off.
type listeners struct {
	http, https, admin net.Listener
}

func listen(cfg *config.Config, logger *slog.Logger) (*listeners, error) {
	var l listeners
	var err error
	if l.http, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	if cfg.HTTPS.Listen != "" {
		l.https, err = net.Listen("tcp", cfg.HTTPS.Listen)
		switch {
		case err != nil && cfg.HTTPS.ListenIsDefault() && !cfg.ACME.Enabled:
			// Not asked for in the file: an HTTP-only gateway must not fail
			// on a port it never mentioned. Said loudly, as HTTPS is off.
			logger.Error("https listener on the default address unavailable: HTTPS, its redirects and certificates are off; set [https] listen to require it, or listen = \"\" to silence this",
				"listen", cfg.HTTPS.Listen, "err", err)
			l.https = nil
		case err != nil:
			l.close()
			return nil, fmt.Errorf("https listener: %w", err)
		}
	}
	if l.admin, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
		l.close()
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	return &l, nil
}

func (l *listeners) close() {
	for _, ln := range []net.Listener{l.http, l.https, l.admin} {
		if ln != nil {
			ln.Close()
		}
	}
}

// acmeConfig is tlsmgr's ACME configuration from [acme], nil when it is
// off. Which hosts may order certificates is decided by discovery (the
// snapshot's ACME hosts, from acme.hosts).
func acmeConfig(a config.ACMEConfig) *tlsmgr.ACMEConfig {
	if !a.Enabled {
		return nil
	}
	return &tlsmgr.ACMEConfig{
		Email:        a.Email,
		DirectoryURL: a.Directory,
		CAFile:       a.CAFile,
		CacheDir:     a.CacheDir,
		RenewBefore:  time.Duration(a.RenewBefore),
	}
}

// serveUntil runs serve and treats its return before ctx is done as fatal.
func serveUntil(ctx context.Context, name string, serve func() error) error {
	err := serve()
	if ctx.Err() != nil || err == nil || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s server: %w", name, err)
}

// restConfig builds the client configuration for the remote API server from a
// kubeconfig file or from server + token_file + ca_file.
func restConfig(k config.KubernetesConfig) (*rest.Config, error) {
	var rc *rest.Config
	if k.Kubeconfig != "" {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: k.Kubeconfig}
		overrides := &clientcmd.ConfigOverrides{CurrentContext: k.Context}
		c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", k.Kubeconfig, err)
		}
		rc = c
	} else {
		rc = &rest.Config{Host: k.Server, BearerTokenFile: k.TokenFile}
		rc.TLSClientConfig.CAFile = k.CAFile
		if k.TokenFile != "" {
			if _, err := os.Stat(k.TokenFile); err != nil {
				return nil, fmt.Errorf("kubernetes.token_file: %w", err)
			}
		}
	}
	rc.QPS = float32(k.QPS)
	rc.Burst = k.Burst
	rc.UserAgent = "edgegate/" + buildVersion()
	rc.Timeout = 0 // watches are long-lived; requests carry their own contexts
	return rc, nil
}

// buildInfo is the edgegate_build_info gauge (always 1) labelled with the
// version.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "edgegate_build_info",
		Help:        "Always 1; labelled with the running edgegate version.",
		ConstLabels: prometheus.Labels{"version": buildVersion(), "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// parkIdleAfter maps http.park_idle_after to proxy.Config.ParkIdleAfter,
// where 0 means the default and a negative value disables parking.
func parkIdleAfter(d time.Duration) time.Duration { return noLimitIfZero(d) }

// noLimitIfZero maps a config duration where "0s" means none (no limit,
// never) to the proxy's convention, where 0 means the default and a
// negative value means none.
func noLimitIfZero(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
