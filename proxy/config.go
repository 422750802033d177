package proxy

import (
	"errors"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgegate/edgegate/route"
)

// Config configures a Server. Zero values select the documented defaults.
type Config struct {
	// Listen is the address ListenAndServe listens on. Default ":80".
	Listen string

	// ReadTimeout bounds reading a request's line and headers together
	// with the first 8 KiB of a body of known length (read with them), and,
	// while the rest of a request body streams to the endpoint, the gap
	// between two reads of it. Default 60s; negative: no limit.
	ReadTimeout time.Duration
	// WriteTimeout bounds one write to the client: a client that stops
	// reading a response for this long is disconnected. Default 60s;
	// negative: no limit.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// client connection, and closes an upgraded connection (WebSocket
	// tunnel) on which no byte moved either way for this long. Default
	// 120s.
	IdleTimeout time.Duration
	// ParkIdleAfter is how long a keep-alive client connection waits for
	// its next request on its own goroutine; after that it is parked until
	// bytes arrive (or IdleTimeout passes), holding no goroutine and no
	// read buffer (Linux only). Default 1s; negative disables parking.
	ParkIdleAfter time.Duration
	// EventLoops, when positive, serves the plain-HTTP listener (Serve on
	// a TCP listener, Linux) with that many event loops instead of a
	// goroutine per connection; requests the loops do not serve themselves
	// are handed, with their connection, to the goroutine server (see
	// "Event loops" in the package doc). Default 0: goroutines only.
	EventLoops int
	// MaxHeaderBytes is the per-connection read buffer, which limits the
	// request line plus headers; larger requests get 431. It also limits
	// an endpoint's response headers (larger: 502). Default 16384.
	MaxHeaderBytes int

	// ConnectTimeout bounds dialling an endpoint; a failed or timed-out
	// dial answers 502. Default 5s.
	ConnectTimeout time.Duration
	// ResponseTimeout bounds every wait on an endpoint: for the response
	// headers after the request was written (expiry: 504), and between two
	// reads of the response body or two writes of the request body.
	// Default 60s.
	ResponseTimeout time.Duration
	// UpstreamIdleTimeout closes pooled endpoint connections idle this
	// long. Keep it below the endpoints' own keep-alive timeout (Node.js,
	// uvicorn and Apache httpd close idle connections after 5s): a request
	// sent on a connection the endpoint has just closed is retried on a
	// new connection only when it has no body (see the package doc);
	// otherwise it fails with 502. Default 4s.
	UpstreamIdleTimeout time.Duration
	// MaxConnsPerEndpoint caps the connections to one endpoint; a request
	// finding them all busy waits up to ConnectTimeout for one to come
	// free, then gets 503. Default 512.
	MaxConnsPerEndpoint int

	// AccessLog logs one line per request at Info level.
	AccessLog bool
	// Logger receives the access log and recovered panics. Default
	// slog.Default().
	Logger *slog.Logger

	// Snapshot returns the current route snapshot (an atomic load). It is
	// called once per request and must not block; nil answers 503.
	// Required.
	Snapshot func() *route.Snapshot

	// RedirectHTTPS makes the plain-HTTP listener answer requests whose
	// route has Route.RedirectHTTPS with a 308 to the same URI on https
	// (no endpoint is contacted). Requests on the TLS listener never
	// redirect. Set it only when a TLS listener serves (ServeTLS).
	// Default false.
	RedirectHTTPS bool
	// HTTPSPort is the port redirect Locations name: 0 or 443 leave it out
	// (https:// implies 443). Default 0.
	HTTPSPort int

	// ACMEChallenge, when set, answers every plain-HTTP request whose path
	// starts with /.well-known/acme-challenge/ before routing and redirects
	// (ACME HTTP-01). It may be called concurrently. Default nil.
	ACMEChallenge fasthttp.RequestHandler

	// HandshakeError is called, on the connection's goroutine, with the
	// error of each failed TLS handshake on a ServeTLS listener; the
	// connection is then closed. It must not block. A failed handshake is
	// never fatal and is logged at Debug level only. Default nil.
	HandshakeError func(error)
}

// Defaults.
const (
	DefaultListen              = ":80"
	DefaultReadTimeout         = 60 * time.Second
	DefaultWriteTimeout        = 60 * time.Second
	DefaultIdleTimeout         = 120 * time.Second // as config's http.idle_timeout
	DefaultParkIdleAfter       = time.Second
	DefaultMaxHeaderBytes      = 16384
	DefaultConnectTimeout      = 5 * time.Second
	DefaultResponseTimeout     = 60 * time.Second
	DefaultUpstreamIdleTimeout = 4 * time.Second
	DefaultMaxConnsPerEndpoint = 512
)

// ErrNoSnapshot is returned by New when Config.Snapshot is nil.
var ErrNoSnapshot = errors.New("proxy: config: Snapshot func is required")

func (c *Config) setDefaults() error {
	if c.Snapshot == nil {
		return ErrNoSnapshot
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	setDur(&c.IdleTimeout, DefaultIdleTimeout)
	if c.ParkIdleAfter == 0 {
		c.ParkIdleAfter = DefaultParkIdleAfter
	}
	setDur(&c.ConnectTimeout, DefaultConnectTimeout)
	setDur(&c.ResponseTimeout, DefaultResponseTimeout)
	setDur(&c.UpstreamIdleTimeout, DefaultUpstreamIdleTimeout)
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxConnsPerEndpoint <= 0 {
		c.MaxConnsPerEndpoint = DefaultMaxConnsPerEndpoint
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func setDur(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}
