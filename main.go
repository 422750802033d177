// Command edgegate is an edge gateway for Kubernetes: it runs outside the
// cluster, watches Ingress, Service, EndpointSlice and TLS Secret objects on
// the API server and proxies HTTP and HTTPS (certificates chosen by SNI from
// the Ingresses' Secrets, or ordered through ACME) straight to pod IPs.
//
// Usage:
//
//	edgegate [-config FILE]                 run the gateway
//	edgegate -check-config [-config FILE]   validate FILE and exit
//	edgegate -version                       print the version and exit
//
// The configuration format is documented in gateway.toml and package config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/edgegate/edgegate/config"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3". When it
// is empty, the module version stamped by the go command is used, or "dev".
var version string

const defaultConfigPath = "/etc/edgegate/gateway.toml"

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain is main without the process: it returns the exit status. Exit 2
// means bad command-line usage, 1 a bad config file or a failed run.
func realMain(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("edgegate", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("config", defaultConfigPath, "path of the TOML config `file`")
	checkOnly := flags.Bool("check-config", false, "validate the config file, print every problem and exit")
	showVersion := flags.Bool("version", false, "print the version and exit")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "edgegate: unexpected argument %q\n", flags.Arg(0))
		flags.Usage()
		return 2
	}

	if *showVersion {
		fmt.Fprintf(stdout, "edgegate %s (%s)\n", buildVersion(), runtime.Version())
		return 0
	}

	cfg, err := config.Load(*configPath)
	if err != nil {
		// One problem per line, each "FILE:LINE: message".
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *checkOnly {
		fmt.Fprintf(stdout, "%s: ok\n", *configPath)
		return 0
	}

	logger := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		// After the first signal starts a graceful shutdown, restore the
		// default handling so that a second one kills the process.
		<-ctx.Done()
		stop()
	}()

	logger.Info("starting", "version", buildVersion(), "config", *configPath)
	if err := run(ctx, cfg, logger); err != nil {
		logger.Error("exiting", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// newLogger builds the process logger from the [log] section.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.SlogLevel()}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h)
}

// buildVersion returns version, else the main module version recorded by the
// go command, else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
