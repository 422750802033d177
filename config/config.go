// Package config owns edgegate's TOML file format: the file structs, their
// documented defaults, strict decoding and validation. It is separate from the
// runtime Config types of each package (proxy.Config, discovery.Config ...) so
// that the file format can stay stable while those change.
//
// Decoding is strict: unknown sections and keys, values of the wrong TOML type
// and invalid values are all errors, and every problem in a file is reported
// at once as an *Error whose Problems carry the file name and line.
//
// Relative paths in the file (kubernetes.kubeconfig, kubernetes.token_file,
// kubernetes.ca_file, https.default_cert, https.default_key, acme.ca_file,
// acme.cache_dir) are resolved against the directory of the config file.
// Files are not opened here: a file that names a missing kubeconfig is valid,
// and fails later when the gateway starts.
package config

import (
	"fmt"
	"log/slog"
	"time"
)

// Config is the whole gateway.toml file. The zero value is not useful: start
// from Default (Parse and Load do) and override.
type Config struct {
	Kubernetes KubernetesConfig `toml:"kubernetes"`
	HTTP       HTTPConfig       `toml:"http"`
	HTTPS      HTTPSConfig      `toml:"https"`
	Upstream   UpstreamConfig   `toml:"upstream"`
	Admin      AdminConfig      `toml:"admin"`
	Balancer   BalancerConfig   `toml:"balancer"`
	Cluster    ClusterConfig    `toml:"cluster"`
	ACME       ACMEConfig       `toml:"acme"`
	Log        LogConfig        `toml:"log"`
}

// KubernetesConfig is the [kubernetes] section: how to reach the API server
// and which objects to serve. Exactly one of Kubeconfig and Server is set.
type KubernetesConfig struct {
	// Kubeconfig is the path of a kubeconfig file. Relative paths are
	// resolved against the config file's directory. Default "".
	Kubeconfig string `toml:"kubeconfig"`

	// Context is the kubeconfig context to use; "" means the file's
	// current-context. Only with Kubeconfig. Default "".
	Context string `toml:"context"`

	// Server is the API server URL (https://host:6443), the alternative to
	// Kubeconfig. Default "".
	Server string `toml:"server"`

	// TokenFile is a file holding the bearer token sent to Server (read again
	// when it changes, so projected tokens work). Only with Server; without
	// it requests are anonymous. Relative to the config file. Default "".
	TokenFile string `toml:"token_file"`

	// CAFile is the PEM bundle that verifies Server's certificate. Required
	// with an https Server: there is deliberately no way to skip
	// verification. Relative to the config file. Default "".
	CAFile string `toml:"ca_file"`

	// IngressClass is the IngressClass name this gateway serves. Default
	// "edgegate".
	IngressClass string `toml:"ingress_class"`

	// WatchNamespaces limits the watched namespaces; empty means all.
	// Default [].
	WatchNamespaces []string `toml:"watch_namespaces"`

	// CoalesceIdle is how long the route builder waits for quiet after a
	// change before rebuilding. Default 3ms.
	CoalesceIdle Duration `toml:"coalesce_idle"`

	// CoalesceMax bounds that wait: a rebuild starts at most this long after
	// the first change of a burst, however busy the API server is. Must be
	// >= CoalesceIdle. Default 20ms.
	CoalesceMax Duration `toml:"coalesce_max"`

	// QPS is client-go's sustained request rate limit. Default 50.
	QPS float64 `toml:"qps"`

	// Burst is client-go's burst above QPS. Default 100.
	Burst int `toml:"burst"`
}

// HTTPConfig is the [http] section: the plain-HTTP client listener.
type HTTPConfig struct {
	// Listen is the host:port of the HTTP listener. Default ":80".
	Listen string `toml:"listen"`

	// ReadTimeout bounds reading a request's headers together with the
	// first 8 KiB of its body (read with them), and then each wait for
	// more of the body (an idle gap, not the whole upload, so large
	// streamed bodies are not cut off); expiry answers 408. 0 means no
	// limit. Default 60s.
	ReadTimeout Duration `toml:"read_timeout"`

	// WriteTimeout bounds each wait while writing a response to the client
	// (an idle gap, not the whole download); expiry closes the connection.
	// 0 means no limit. Default 60s.
	WriteTimeout Duration `toml:"write_timeout"`

	// IdleTimeout is how long an idle keep-alive client connection is kept,
	// and how long an upgraded (WebSocket) connection is kept with no byte
	// moving either way. Default 120s.
	IdleTimeout Duration `toml:"idle_timeout"`

	// ParkIdleAfter is how long an idle keep-alive client connection of
	// the goroutine server (HTTPS, and HTTP handed over by an event loop or
	// with the loops off) keeps its goroutine and read buffer; after that
	// it is parked until its next request arrives (Linux). Connections on
	// the event loops hold neither. "0s" disables parking. Default 1s.
	ParkIdleAfter Duration `toml:"park_idle_after"`

	// EventLoops is how many epoll event loops serve the plain-HTTP
	// listener: 0 one per CPU the process may use (GOMAXPROCS), N > 0
	// that many, -1 none (a goroutine per connection, as before the
	// loops). The loops serve bodyless HTTP/1.1 requests end to end;
	// HTTPS, WebSocket upgrades, requests with a body, HTTP/1.0 and local
	// answers (404, 503, redirects) are handed, with their connection, to
	// the goroutine server. Linux only: ignored elsewhere. At most
	// MaxEventLoops. Default 0 (one per CPU).
	EventLoops int `toml:"event_loops"`

	// MaxHeaderBytes bounds the request line plus headers; larger requests
	// get 431. Default 16384.
	MaxHeaderBytes int `toml:"max_header_bytes"`

	// ShutdownTimeout is how long, on SIGTERM, the gateway keeps serving
	// in-flight requests after it stops accepting connections. Default 30s.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	// AccessLog logs one line per request. Default false.
	AccessLog bool `toml:"access_log"`
}

// MaxEventLoops is the largest http.event_loops. The design is about one
// loop per core: the bound catches a typo before it becomes thousands of
// loops.
const MaxEventLoops = 256

// EventLoopsOff is the http.event_loops value that turns the loops off.
const EventLoopsOff = -1

// Loops returns the number of event loops c.EventLoops asks for, given the
// CPUs the process may use (procs): 0 when they are off.
func (c HTTPConfig) Loops(procs int) int {
	switch {
	case c.EventLoops == EventLoopsOff:
		return 0
	case c.EventLoops == 0:
		return max(procs, 1)
	}
	return c.EventLoops
}

// HTTPSConfig is the [https] section: the TLS client listener. Certificates
// come from the kubernetes.io/tls Secrets the Ingresses name in spec.tls,
// chosen by SNI; names without one get the default certificate (or an ACME
// certificate, see [acme]). Timeouts and header limits are the [http] ones.
type HTTPSConfig struct {
	// Listen is the host:port of the HTTPS listener; "" disables HTTPS (and
	// with it the redirect and ACME). It must differ from http.listen and
	// admin.listen. Default ":443": when the file does not set it and the
	// port cannot be bound (taken, or no privilege), HTTPS stays off with a
	// warning instead of stopping the gateway (see ListenIsDefault).
	Listen string `toml:"listen"`

	// listenIsDefault is set while Listen holds the built-in default rather
	// than a value from the file.
	listenIsDefault bool

	// DefaultCert and DefaultKey are PEM files of the certificate served
	// when no Ingress configures a usable one for the requested name (no
	// SNI, an unknown name, a broken Secret). Set both or neither; neither
	// means a self-signed certificate generated at start. Relative to the
	// config file. Default "".
	DefaultCert string `toml:"default_cert"`
	DefaultKey  string `toml:"default_key"`

	// Redirect answers plain-HTTP requests for hosts with TLS configured
	// with a 308 to https, unless their Ingress opts out with the
	// annotation edgegate.io/ssl-redirect: "false". false turns the
	// redirect off everywhere. Default true.
	Redirect bool `toml:"redirect"`
}

// ListenIsDefault reports whether Listen is the built-in ":443", not set by
// the configuration file. A gateway binding it may then carry on without
// HTTPS when the port is unavailable: a config that never mentions [https]
// (an HTTP-only edge, a second gateway on one host, a test) must not fail
// on a port it did not ask for, while an https.listen the operator wrote is
// bound or the gateway does not start.
func (h *HTTPSConfig) ListenIsDefault() bool {
	return h.listenIsDefault && h.Listen == DefaultHTTPSListen
}

// DefaultHTTPSListen is https.listen's default.
const DefaultHTTPSListen = ":443"

// UpstreamConfig is the [upstream] section: connections to pods.
type UpstreamConfig struct {
	// ConnectTimeout bounds dialing a pod; a failure answers 502.
	// Default 5s.
	ConnectTimeout Duration `toml:"connect_timeout"`

	// ResponseTimeout bounds the wait for a pod's response headers (expiry
	// answers 504), and then each idle gap while streaming its body (expiry
	// closes the client connection), like nginx's proxy_read_timeout.
	// Default 60s.
	ResponseTimeout Duration `toml:"response_timeout"`

	// IdleTimeout is how long a pooled keep-alive connection to a pod is
	// kept idle. Default 4s: below the 5 s keep-alive of Node.js, uvicorn
	// and Apache, so a pod rarely closes a pooled connection just as it is
	// reused (bodyless requests are retried on a fresh connection when that
	// happens; requests with a body are not, and would get 502).
	IdleTimeout Duration `toml:"idle_timeout"`

	// MaxConnsPerEndpoint bounds the open connections to one pod address.
	// Default 512.
	MaxConnsPerEndpoint int `toml:"max_conns_per_endpoint"`
}

// AdminConfig is the [admin] section: health, metrics and debugging.
type AdminConfig struct {
	// Listen is the host:port of the admin listener. It must differ from
	// http.listen. Default "127.0.0.1:9901".
	Listen string `toml:"listen"`

	// Pprof serves /debug/pprof/ on the admin listener. Default false.
	Pprof bool `toml:"pprof"`
}

// BalancerConfig is the [balancer] section.
type BalancerConfig struct {
	// Policy picks an endpoint per request; only "round_robin" today.
	// Default "round_robin".
	Policy string `toml:"policy"`

	// DrainGrace is how long a removed endpoint's connection pool and state
	// are kept, so that in-flight requests finish and a quick return keeps
	// its health. Default 30s.
	DrainGrace Duration `toml:"drain_grace"`
}

// ClusterConfig is the [cluster] section, reserved for the HA tier. It has no
// keys yet: any key in it is an unknown-key error.
type ClusterConfig struct{}

// ACMEConfig is the [acme] section: certificates ordered from an ACME CA
// (Let's Encrypt by default) for Ingress hosts that have no Secret.
// Challenges are answered on the gateway itself: HTTP-01 on http.listen and
// TLS-ALPN-01 on https.listen, so both must be reachable from the CA on
// ports 80 and 443.
type ACMEConfig struct {
	// Enabled turns ACME on; it requires https.listen. Default false.
	Enabled bool `toml:"enabled"`

	// Email is the account contact the CA sends expiry notices to; ""
	// registers without one. Default "".
	Email string `toml:"email"`

	// Directory is the CA's ACME directory URL: https, or http to a
	// loopback address only (a local test CA). Default Let's Encrypt
	// production.
	Directory string `toml:"directory"`

	// CAFile is a PEM bundle trusted for the directory's TLS certificate in
	// addition to the system roots (a private or test CA such as Pebble).
	// Relative to the config file. Default "".
	CAFile string `toml:"ca_file"`

	// CacheDir keeps the account key and the issued certificates across
	// restarts (Let's Encrypt rate-limits re-issuing). Relative to the
	// config file. Default "/var/lib/edgegate/acme".
	CacheDir string `toml:"cache_dir"`

	// RenewBefore renews a certificate this long before it expires.
	// Default 720h (30 days).
	RenewBefore Duration `toml:"renew_before"`

	// Hosts chooses which hosts may get a certificate: "opt-in" (the hosts
	// of Ingresses annotated edgegate.io/acme: "true") or
	// "all-ingress-hosts" (every exact host of our Ingresses). Hosts with a
	// Secret never use ACME, nor do wildcards. Default "opt-in".
	Hosts string `toml:"hosts"`
}

// acme.hosts values.
const (
	ACMEHostsOptIn = "opt-in"
	ACMEHostsAll   = "all-ingress-hosts"
)

// DefaultACMEDirectory is Let's Encrypt's production directory.
const DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// LogConfig is the [log] section.
type LogConfig struct {
	// Level is the minimum level logged: "debug", "info", "warn" or "error".
	// Default "info".
	Level string `toml:"level"`

	// Format is "text" (logfmt-like) or "json". Default "text".
	Format string `toml:"format"`
}

// Default returns the configuration every file starts from. It is not valid
// on its own: a file must at least set kubernetes.kubeconfig or
// kubernetes.server. The shipped gateway.toml documents the same values.
func Default() *Config {
	return &Config{
		Kubernetes: KubernetesConfig{
			IngressClass:    "edgegate",
			WatchNamespaces: []string{},                      // all namespaces
			CoalesceIdle:    Duration(3 * time.Millisecond),  // a burst of events becomes one rebuild
			CoalesceMax:     Duration(20 * time.Millisecond), // keeps propagation well under 100ms
			QPS:             50,                              // client-go's default is 5, too low for a watch-heavy client
			Burst:           100,                             // initial lists of several resource types at once
		},
		HTTP: HTTPConfig{
			Listen:          ":80",
			ReadTimeout:     Duration(60 * time.Second), // slow uploads still fit
			WriteTimeout:    Duration(60 * time.Second),
			IdleTimeout:     Duration(120 * time.Second), // longer than most client pools' idle time
			ParkIdleAfter:   Duration(time.Second),       // busy connections never park
			EventLoops:      0,                           // one event loop per CPU
			MaxHeaderBytes:  16 << 10,                    // 16 KiB: large cookies fit, abuse does not
			ShutdownTimeout: Duration(30 * time.Second),  // Kubernetes' default termination grace
			AccessLog:       false,
		},
		HTTPS: HTTPSConfig{
			Listen:          DefaultHTTPSListen,
			listenIsDefault: true,
			Redirect:        true, // hosts with TLS are served over TLS only
		},
		Upstream: UpstreamConfig{
			ConnectTimeout:      Duration(5 * time.Second),  // pod IPs are one hop away: slow dials mean trouble
			ResponseTimeout:     Duration(60 * time.Second), // time to response headers, not the whole body
			IdleTimeout:         Duration(4 * time.Second),
			MaxConnsPerEndpoint: 512,
		},
		Admin: AdminConfig{
			Listen: "127.0.0.1:9901", // local only: metrics and pprof are not for the internet
			Pprof:  false,
		},
		Balancer: BalancerConfig{
			Policy:     PolicyRoundRobin,
			DrainGrace: Duration(30 * time.Second), // matches the default pod termination grace
		},
		ACME: ACMEConfig{
			Enabled:     false, // certificates come from Secrets (or the default one)
			Directory:   DefaultACMEDirectory,
			CacheDir:    "/var/lib/edgegate/acme",
			RenewBefore: Duration(720 * time.Hour), // Let's Encrypt's 90-day certificates renew at 60 days
			Hosts:       ACMEHostsOptIn,            // never order certificates for names nobody asked for
		},
		Log: LogConfig{
			Level:  "info",
			Format: "text",
		},
	}
}

// PolicyRoundRobin is the only balancer.policy value today.
const PolicyRoundRobin = "round_robin"

// SlogLevel returns log.level as a slog.Level (LevelInfo if it is unknown,
// which Validate rejects).
func (c *Config) SlogLevel() slog.Level {
	switch c.Log.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// Duration is a time.Duration written in the file as a Go duration string
// ("5s", "250ms", "1m30s"). Negative values are rejected when decoding.
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(text []byte) error {
	s := string(text)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (use Go syntax like \"5s\")", s)
	}
	if v < 0 {
		return fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// String returns the duration in Go syntax.
func (d Duration) String() string { return time.Duration(d).String() }
