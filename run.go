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
)

// run wires discovery -> route snapshot -> proxy, starts the admin server and
// blocks until ctx is cancelled, then drains in-flight requests.
func run(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	restCfg, err := restConfig(cfg.Kubernetes)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	// The proxy reads the watcher's snapshot; the watcher binds endpoints
	// through a registry whose transports the proxy creates. The pointer
	// breaks the construction cycle.
	var watcher *discovery.Watcher
	var readyOnce sync.Once // tell systemd once the first snapshot routes
	snapshot := func() *route.Snapshot { return watcher.Snapshot() }

	px, err := proxy.New(proxy.Config{
		Listen:              cfg.HTTP.Listen,
		ReadTimeout:         time.Duration(cfg.HTTP.ReadTimeout),
		WriteTimeout:        time.Duration(cfg.HTTP.WriteTimeout),
		IdleTimeout:         time.Duration(cfg.HTTP.IdleTimeout),
		MaxHeaderBytes:      cfg.HTTP.MaxHeaderBytes,
		ConnectTimeout:      time.Duration(cfg.Upstream.ConnectTimeout),
		ResponseTimeout:     time.Duration(cfg.Upstream.ResponseTimeout),
		UpstreamIdleTimeout: time.Duration(cfg.Upstream.IdleTimeout),
		MaxConnsPerEndpoint: cfg.Upstream.MaxConnsPerEndpoint,
		AccessLog:           cfg.HTTP.AccessLog,
		Logger:              logger.With("component", "proxy"),
		Snapshot:            snapshot,
	})
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
	})
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(px.Collectors()...)
	reg.MustRegister(watcher.Collectors()...)
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

	// Bind both listeners before anything runs so a port clash fails fast.
	httpLn, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		httpLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	logger.Info("edgegate starting", "version", buildVersion(), "http", httpLn.Addr().String(),
		"admin", adminLn.Addr().String(), "apiserver", restCfg.Host, "ingress_class", cfg.Kubernetes.IngressClass)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return watcher.Run(gctx) })
	g.Go(func() error { return serveUntil(gctx, "proxy", func() error { return px.Serve(httpLn) }) })
	g.Go(func() error { return serveUntil(gctx, "admin", func() error { return adm.Serve(adminLn) }) })
	g.Go(func() error {
		<-gctx.Done()
		_ = sdNotify("STOPPING=1")
		logger.Info("shutting down: draining in-flight requests", "timeout", time.Duration(cfg.HTTP.ShutdownTimeout).String())
		sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.HTTP.ShutdownTimeout))
		defer cancel()
		perr := px.Shutdown(sctx)
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
