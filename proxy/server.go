package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/edgegate/edgegate/balancer"
	"github.com/edgegate/edgegate/route"
)

// Server is the HTTP front server and upstream transport factory. It is safe
// for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	srv    *fasthttp.Server
	dialer net.Dialer
	m      *metrics
	pool   sync.Pool // *exchange

	httpsPort []byte // ":8443" in redirect Locations, empty for 443

	park      *parker // nil: idle connections are not parked
	parkStart sync.Once

	tunnels tunnelSet // upgraded connections (upgrade.go)

	frontsMu     sync.Mutex
	fronts       []*front // event-loop front ends (loop_linux.go)
	shuttingDown bool
}

// New validates cfg, applies its defaults and returns a Server that is not
// yet serving.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, m: newMetrics()}
	if p := cfg.HTTPSPort; p > 0 && p != 443 {
		s.httpsPort = strconv.AppendInt([]byte{':'}, int64(p), 10)
	}
	s.dialer = net.Dialer{Timeout: cfg.ConnectTimeout}
	s.pool.New = func() any {
		x := new(exchange)
		x.flushFn = x.flushPending
		return x
	}
	s.srv = &fasthttp.Server{
		Handler:      s.handle,
		ErrorHandler: s.badRequest,
		// Header phase only: the handler switches a request with a body to
		// per-read timeouts (conn.bodyPhase).
		ReadTimeout: max(cfg.ReadTimeout, 0), // negative: no limit
		IdleTimeout: cfg.IdleTimeout,
		// WriteTimeout is enforced per write by conn: fasthttp's would
		// bound a whole streamed response.
		ReadBufferSize: cfg.MaxHeaderBytes,
		// The write buffer is taken from a pool for each response and
		// given back when the response is flushed (ReduceMemoryUsage), so
		// an idle keep-alive connection holds none, and it is large enough
		// for a header plus a body of up to about 28 KiB to leave in one
		// write (see exchange.WriteTo).
		WriteBufferSize:               writeBufSize,
		ReduceMemoryUsage:             true,
		StreamRequestBody:             true,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: true,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		// The front server writes its own Date: fasthttp treats Date as a
		// managed header and drops an endpoint's (nginx does the same).
		NoDefaultDate:   false,
		CloseOnShutdown: true,
		Logger:          fastLogger{cfg.Logger},
	}
	s.park = newParker(cfg.ParkIdleAfter, cfg.IdleTimeout, cfg.MaxHeaderBytes, func(c net.Conn) { _ = s.srv.ServeConn(c) })
	return s, nil
}

// NewTransport returns the connection pool for one endpoint address, a
// *fasthttp.HostClient, for balancer.RegistryConfig.NewTransport. It does
// not block.
func (s *Server) NewTransport(addr string) any {
	return &fasthttp.HostClient{
		Addr:     addr,
		Dial:     s.dial,
		MaxConns: s.cfg.MaxConnsPerEndpoint,
		// With MaxConns open, a request waits for one to come free, as
		// long as it would wait to connect (then 503): a burst above the
		// limit queues instead of failing at once.
		MaxConnWaitTimeout:  s.cfg.ConnectTimeout,
		MaxIdleConnDuration: s.cfg.UpstreamIdleTimeout,
		ReadBufferSize:      s.cfg.MaxHeaderBytes,
		// Most recently used first: the connection least likely to have
		// been closed by the endpoint's own keep-alive timeout, while
		// surplus connections age out after UpstreamIdleTimeout. FIFO
		// would cycle through every pooled connection and keep each one
		// idle the longest.
		ConnPoolStrategy: fasthttp.LIFO,
		// No retries and no whole-message deadlines: the handler decides
		// retries (see retryStale), conn enforces ResponseTimeout per read
		// and write.
		MaxIdemponentCallAttempts:     1,
		RetryIfErr:                    noRetry,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		StreamResponseBody:            true,
		NoDefaultUserAgentHeader:      true,
	}
}

func noRetry(*fasthttp.Request, int, error) (bool, bool) { return false, false }

// CloseTransport closes the idle connections of a transport NewTransport
// made (for balancer.RegistryConfig.CloseTransport). Connections in use
// close when their request ends.
func (s *Server) CloseTransport(t any) {
	if hc, ok := t.(*fasthttp.HostClient); ok {
		hc.CloseIdleConnections()
	}
}

// dialError marks a failure to connect, which is always safe to retry
// elsewhere and always a 502.
type dialError struct{ err error }

func (e *dialError) Error() string { return "proxy: dial: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (s *Server) dial(addr string) (net.Conn, error) {
	c, err := s.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, &dialError{err}
	}
	return newUpstreamConn(c, s.cfg.ResponseTimeout), nil
}

// Serve serves HTTP on ln until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if s.park != nil {
		s.parkStart.Do(s.park.start)
	}
	if s.cfg.EventLoops > 0 {
		if served, err := s.serveLoops(ln); served {
			return err
		}
	}
	return s.srv.Serve(&listener{Listener: ln, readIdle: s.cfg.ReadTimeout, writeIdle: s.cfg.WriteTimeout, park: s.park})
}

// ErrNoTLSConfig is returned by ServeTLS without a *tls.Config.
var ErrNoTLSConfig = errors.New("proxy: ServeTLS: nil tls.Config")

// ServeTLS serves HTTPS on ln (a plain TCP listener: the handshake runs on
// each connection's goroutine with cfg) until Shutdown, alongside Serve on
// another listener: one Shutdown stops both. Requests on it carry
// X-Forwarded-Proto: https and are never redirected. cfg must offer
// http/1.1 (or no ALPN): HTTP/2 is not spoken. It returns nil after
// Shutdown.
func (s *Server) ServeTLS(ln net.Listener, cfg *tls.Config) error {
	if cfg == nil {
		return ErrNoTLSConfig
	}
	if s.park != nil {
		s.parkStart.Do(s.park.start)
	}
	return s.srv.Serve(&listener{
		Listener: ln, readIdle: s.cfg.ReadTimeout, writeIdle: s.cfg.WriteTimeout, park: s.park,
		tls: cfg, hsFailed: s.cfg.HandshakeError, log: s.log,
	})
}

// ListenAndServe listens on Config.Listen and calls Serve.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ln)
}

// Shutdown stops accepting connections on every listener (Serve and
// ServeTLS), closes idle ones, and waits for
// requests in flight (streaming bodies included) to finish, until ctx is
// done. Responses written meanwhile carry Connection: close. Then it
// closes the upgraded connections (WebSocket tunnels) and waits, until ctx
// is done, for them to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.frontsMu.Lock()
	s.shuttingDown = true
	fronts := s.fronts
	s.frontsMu.Unlock()
	// The event loops first: they may still hand connections to the
	// goroutine server while they drain.
	var wg sync.WaitGroup
	errs := make([]error, len(fronts))
	for i, fr := range fronts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fr.shutdown(ctx)
		}()
	}
	wg.Wait()
	if s.park != nil {
		s.park.close() // parked connections are idle ones
	}
	err := s.srv.ShutdownWithContext(ctx)
	s.tunnels.shutdown(ctx)
	if err == nil {
		for _, e := range errs {
			if e != nil {
				return e
			}
		}
	}
	return err
}

// Collectors returns the proxy's metrics for registration:
// edgegate_http_requests_total, edgegate_http_upstream_duration_seconds,
// edgegate_http_bad_requests_total, edgegate_http_panics_total,
// edgegate_http_upgraded_connections,
// edgegate_upstream_errors_total,
// edgegate_upstream_stale_retries_total,
// edgegate_upstream_next_endpoint_total and
// edgegate_http_loop_handoffs_total. Reading them costs nothing per
// request (atomics read at scrape time).
func (s *Server) Collectors() []prometheus.Collector {
	cs := s.m.collectors()
	if p := s.park; p != nil {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "edgegate_http_parked_connections",
				Help: "Idle keep-alive client connections parked (no goroutine, no read buffer) until their next request.",
			}, func() float64 { return float64(p.n.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "edgegate_http_connection_parks_total",
				Help: "Times an idle keep-alive client connection was parked.",
			}, func() float64 { return float64(p.parks.Load()) }),
		)
	}
	return cs
}

// Prune forgets the per-route metric keys of routes snap no longer holds.
// Call it after publishing snap; counts are kept (under the route's labels)
// and never go backwards. It returns how many keys were dropped.
func (s *Server) Prune(snap *route.Snapshot) int { return s.m.requests.prune(snap) }

// fastLogger sends fasthttp's own (rare, connection-level) messages to slog
// at Debug level.
type fastLogger struct{ l *slog.Logger }

func (f fastLogger) Printf(format string, args ...any) {
	if f.l.Enabled(context.Background(), slog.LevelDebug) {
		f.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
	}
}

// exchange is the per-request state of a proxied request, pooled. While a
// response body streams it is the body reader fasthttp copies to the client,
// and its CloseWithError ends the exchange.
type exchange struct {
	s    *Server
	resp fasthttp.Response // the endpoint's response
	sc   scratch

	body   interface{ Read([]byte) (int, error) } // resp's body stream
	ep     *balancer.Endpoint
	start  time.Time
	status int
	n      int64
	upErr  error // failure reading the endpoint's body
	buf    []byte

	// WriteTo's copy state: buf[sent:fill] is read and not yet written
	// to w; flushFn is flushPending, bound once.
	w          io.Writer
	f          interface{ Flush() error }
	sent, fill int
	total      int64
	werr       error
	flushFn    func()

	// copies for the access log, filled only when it is enabled
	method, host, path []byte

	// dedicated is an endpoint connection of this exchange alone (a
	// refused upgrade's), closed when the exchange is released.
	dedicated *conn
}

func (s *Server) acquireExchange() *exchange {
	x := s.pool.Get().(*exchange)
	x.s = s
	return x
}

func (x *exchange) release() {
	if x.dedicated != nil {
		_ = x.dedicated.Close()
		x.dedicated = nil
	}
	x.resp.Reset()
	x.body, x.ep, x.status, x.n, x.upErr = nil, nil, 0, 0, nil
	x.w, x.f, x.werr = nil, nil, nil
	x.s.pool.Put(x)
}

// Read implements the body stream handed to fasthttp.
func (x *exchange) Read(p []byte) (int, error) {
	n, err := x.body.Read(p)
	x.n += int64(n)
	if err != nil && err != io.EOF && x.upErr == nil {
		x.upErr = err
	}
	return n, err
}

// SupportsBodyWriteTo makes fasthttp hand the client writer to WriteTo.
func (x *exchange) SupportsBodyWriteTo() bool { return true }

const (
	// streamBufSize is the copy buffer of a streaming exchange.
	streamBufSize = 32 << 10
	// writeBufSize is the front server's per-response write buffer.
	writeBufSize = 32 << 10
)

// WriteTo copies the endpoint's body to the client writer w (fasthttp's
// buffered writer, holding the response header).
//
// Bytes are flushed to the client exactly when the endpoint makes the copy
// wait: when the endpoint connection's next read would block (sysIO's
// beforeWait hook), when the copy buffer is full, and at the end (fasthttp's
// own final flush). A response that arrives whole leaves in one write with
// its header, as nginx's buffered proxying does, while event streams, long
// polls and a stalled endpoint's partial body still reach the client as
// soon as they arrive. Without the hook (not Linux, or a race build) every
// read is flushed.
func (x *exchange) WriteTo(w io.Writer) (int64, error) {
	if x.buf == nil {
		x.buf = make([]byte, streamBufSize)
	}
	f, _ := w.(interface{ Flush() error })
	uc := upstreamConnOf(&x.resp)
	if f == nil || uc == nil || uc.sys == nil {
		return x.copyFlushEach(w, f)
	}
	x.w, x.f, x.sent, x.fill, x.total, x.werr = w, f, 0, 0, 0, nil
	uc.sys.beforeWait = x.flushFn
	defer func() { uc.sys.beforeWait = nil }()
	for {
		n, err := x.body.Read(x.buf[x.fill:])
		x.fill += n
		x.n += int64(n)
		if x.werr != nil { // a flush before a wait failed: the client is gone
			return x.total, x.werr
		}
		switch {
		case err == io.EOF:
			x.writePending()
			return x.total, x.werr
		case err != nil:
			if x.upErr == nil {
				x.upErr = err
			}
			x.writePending()
			return x.total, err
		case x.fill == len(x.buf):
			x.flushPending()
			x.sent, x.fill = 0, 0
			if x.werr != nil {
				return x.total, x.werr
			}
		}
	}
}

// writePending hands the bytes read and not yet written to the client
// writer.
func (x *exchange) writePending() {
	if x.werr != nil || x.sent == x.fill {
		return
	}
	n, err := x.w.Write(x.buf[x.sent:x.fill])
	x.total += int64(n)
	x.sent += n
	x.werr = err
}

// flushPending writes the pending bytes and flushes the client writer. It
// is the beforeWait hook of the endpoint connection during WriteTo: it runs
// inside a body read, which is why it only moves x.sent, never x.fill.
func (x *exchange) flushPending() {
	x.writePending()
	if x.werr == nil {
		x.werr = x.f.Flush()
	}
}

// copyFlushEach copies the body flushing after every read.
func (x *exchange) copyFlushEach(w io.Writer, f interface{ Flush() error }) (int64, error) {
	var total int64
	for {
		n, err := x.body.Read(x.buf)
		if n > 0 {
			x.n += int64(n)
			wn, werr := w.Write(x.buf[:n])
			total += int64(wn)
			if werr == nil && f != nil {
				werr = f.Flush()
			}
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case err == io.EOF:
			return total, nil
		case err != nil:
			if x.upErr == nil {
				x.upErr = err
			}
			return total, err
		}
	}
}

// CloseWithError is called by fasthttp once the body was copied (err nil) or
// the copy failed (an endpoint read error, or a client write error). It
// returns the endpoint connection to its pool when the body was read to the
// end and closes it otherwise.
func (x *exchange) CloseWithError(error) error {
	s := x.s
	_ = x.resp.CloseBodyStream()
	failed := x.upErr != nil
	x.ep.End(failed)
	if failed {
		s.m.upErr[classifyErr(x.upErr)].Inc()
	}
	if s.cfg.AccessLog {
		s.logAccess(x.method, x.host, x.path, x.status, time.Since(x.start), x.ep.Addr, x.n)
	}
	x.release()
	return nil
}

// handlerState tracks what a panicking handler must undo.
type handlerState struct {
	stats *routeStats
	ep    *balancer.Endpoint // begun and not yet ended or handed off
	x     *exchange          // acquired and not yet released or handed off
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	var st handlerState
	defer func() {
		if p := recover(); p != nil {
			s.recovered(ctx, &st, p)
		}
		if c := clientConnOf(ctx.Conn()); c != nil {
			c.requestDone()
		}
	}()
	s.proxy(ctx, &st)
}

func (s *Server) proxy(ctx *fasthttp.RequestCtx, st *handlerState) {
	c := clientConnOf(ctx.Conn())
	secure := false
	if c != nil {
		c.readFailed = false
		secure = c.secure
	}
	if !secure && s.cfg.ACMEChallenge != nil && bytes.HasPrefix(ctx.Path(), acmeChallengePrefix) {
		s.acmeChallenge(ctx, st)
		return
	}
	if m := ctx.Method(); bytes.Equal(m, methodConnect) || bytes.Equal(m, methodTrace) {
		// A reverse proxy tunnels nothing, and TRACE would echo the
		// request (with whatever credentials it carries) back.
		ctx.Response.Header.SetCanonical(hdrAllow, allowedMethods)
		s.reply(ctx, st, fasthttp.StatusMethodNotAllowed, bodyMethodNotAllowed)
		return
	}
	if !validHost(ctx.Request.Header.Host()) || len(ctx.URI().Username()) > 0 || len(ctx.URI().Password()) > 0 {
		// RFC 9110 4.2.4: userinfo in an http(s) authority is an error;
		// fasthttp would turn it into an Authorization header.
		s.m.badRequests.Inc()
		s.reply(ctx, st, fasthttp.StatusBadRequest, bodyBadRequest)
		ctx.SetConnectionClose()
		return
	}
	snap := s.cfg.Snapshot()
	if snap == nil {
		s.reply(ctx, st, fasthttp.StatusServiceUnavailable, bodyNotReady)
		return
	}
	host := ctx.Host()
	r := snap.Match(host, ctx.Path())
	st.stats = s.m.requests.get(r)
	if r == nil {
		s.reply(ctx, st, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	if r.RedirectHTTPS && s.cfg.RedirectHTTPS && !secure && len(host) > 0 {
		s.redirectHTTPS(ctx, st, host)
		return
	}
	if uint(r.Backend) >= uint(len(snap.Backends)) {
		s.reply(ctx, st, fasthttp.StatusServiceUnavailable, bodyNoEndpoint)
		return
	}
	b := snap.Backends[r.Backend]
	if b == nil || b.Error != "" || len(b.Endpoints) == 0 {
		s.reply(ctx, st, fasthttp.StatusServiceUnavailable, bodyNoEndpoint)
		return
	}
	ep := b.RR.Pick(b.Endpoints)
	var hc *fasthttp.HostClient
	if ep != nil {
		hc, _ = ep.Transport.(*fasthttp.HostClient)
	}
	if hc == nil {
		s.reply(ctx, st, fasthttp.StatusServiceUnavailable, bodyNoEndpoint)
		return
	}

	x := s.acquireExchange()
	st.x = x
	req := &ctx.Request
	if h := req.Header.Host(); len(host) > 0 && !equalFoldBytes(h, host) {
		// Absolute-form target: its host wins over the Host header
		// (RFC 9112, 3.2.2) and is what was routed on.
		req.Header.SetHostBytes(host)
	}
	var ip, port []byte
	proto := protoHTTP
	if c != nil {
		ip, port = c.ip, c.port
	}
	if secure {
		proto = protoHTTPS
	}
	upgrade := rewriteRequest(&req.Header, &x.sc, ip, port, proto)
	if len(host) == 0 {
		// HTTP/1.0 without Host: the endpoint still needs one (set after
		// the rewrite, so it is not taken for the client's X-Forwarded-Host).
		req.Header.SetHost(ep.Addr)
	}
	req.UseHostHeader = true // never rewrite Host to the endpoint address
	if u := req.URI(); !bytes.Equal(u.Scheme(), protoHTTP) {
		// The endpoint speaks plain HTTP whatever the client did: a TLS
		// connection (or an https:// absolute-form target) gives the URI
		// the https scheme, which HostClient refuses to send over plain
		// TCP. Only the path and query are written on the wire.
		u.SetSchemeBytes(protoHTTP)
	}
	if s.cfg.AccessLog {
		x.method = append(x.method[:0], ctx.Method()...)
		x.host = append(x.host[:0], req.Header.Host()...)
		x.path = append(x.path[:0], ctx.Path()...)
	}
	if upgrade && upgradable(req) {
		s.upgrade(ctx, st, b, ep)
		return
	}
	// The endpoint is spoken to in HTTP/1.1 whatever the client's version,
	// so its connection stays pooled and its response is framed (length or
	// chunked); an HTTP/1.0 client gets it back framed for HTTP/1.0
	// (sendUntilClose). The client's version is restored after the round
	// trip: fasthttp's server decides the client connection's keep-alive
	// by it.
	http10 := !req.Header.IsHTTP11()
	if http10 {
		req.Header.SetProtocolBytes(protoHTTP11)
	}
	withBody := hasBody(req)
	if withBody && c != nil {
		c.bodyPhase()
	}
	if req.Header.ContentLength() == -1 && hasRawContentLength(req.Header.RawHeaders()) {
		// Content-Length and Transfer-Encoding both: the chunked framing
		// is the one used (fasthttp drops the length), and the connection
		// is closed after the response (RFC 9112, 6.3): a peer that framed
		// it by the length disagrees on where the next request starts.
		ctx.SetConnectionClose()
	}

	ep.Begin()
	st.ep = ep
	canReplay := replayable(req)
	t0 := time.Now()
	err := hc.Do(req, &x.resp)
	if err != nil && canReplay && retryStale(&x.resp, err) {
		s.m.staleRetries.Inc()
		// Every other idle connection of the pool has been idle at least
		// as long as the one just found closed (LIFO): drop them so the
		// retry dials.
		hc.CloseIdleConnections()
		err = hc.Do(req, &x.resp)
	}
	if err != nil && isDialError(err) && len(b.Endpoints) > 1 {
		noHost := len(host) == 0
		ep, err = s.nextEndpoint(st, b, ep, err, func(ep *balancer.Endpoint, hc *fasthttp.HostClient) error {
			if noHost {
				req.Header.SetHost(ep.Addr) // HTTP/1.0 without Host
			}
			return hc.Do(req, &x.resp)
		})
	}
	if http10 {
		req.Header.SetProtocolBytes(protoHTTP10)
	}
	if err != nil {
		clientFault := c != nil && c.readFailed
		k := classifyErr(err)
		ep.End(!clientFault && k != errBusy)
		st.ep = nil
		s.upstreamFailed(ctx, st, err, k, clientFault)
		return
	}
	s.m.upstream.Observe(time.Since(t0).Seconds())

	s.respond(ctx, st, http10)
}

// respond forwards the endpoint's response held in st.x (from st.ep) to
// the client: the header now, a body as a stream that ends the exchange
// when fasthttp has copied it (exchange.CloseWithError), or, without a
// body, the exchange at once. http10 says the client speaks HTTP/1.0.
func (s *Server) respond(ctx *fasthttp.RequestCtx, st *handlerState, http10 bool) {
	x, ep := st.x, st.ep
	copyResponseHeader(&ctx.Response.Header, &x.resp.Header, &x.sc)
	status := x.resp.StatusCode()
	st.stats.inc(status)
	if bs := x.resp.BodyStream(); bs != nil {
		x.body, x.ep, x.start, x.status = bs, ep, ctx.Time(), status
		cl := x.resp.Header.ContentLength()
		st.x, st.ep = nil, nil // the body stream owns them now
		if cl < 0 && http10 {
			x.sendUntilClose(ctx)
			return
		}
		if cl < 0 {
			// Chunked or until close (re-framed as chunked): likely an
			// event stream, so the headers go out before the first byte.
			ctx.Response.SetBodyStream(x, -1)
			ctx.Response.ImmediateHeaderFlush = true
		} else {
			ctx.Response.SetBodyStream(x, cl)
		}
		return
	}
	ep.End(false)
	st.ep = nil
	if s.cfg.AccessLog {
		s.logAccess(x.method, x.host, x.path, status, time.Since(ctx.Time()), ep.Addr, 0)
	}
	st.x = nil
	x.release()
}

// sendUntilClose answers an HTTP/1.0 client whose response has no length
// (the endpoint sent it chunked): HTTP/1.0 has no chunked coding (RFC 9112,
// 6.1), so the body is delimited by closing the connection. fasthttp only
// writes lengths or chunks, so the connection is taken over (hijacked) once
// the handler returns: the header is written as built, without a length and
// with Connection: close, then the body as it streams, then the connection
// closes. x is ended by CloseWithError as on the ordinary path. (A HEAD
// request never comes here: fasthttp reads no body stream for its answer.)
func (x *exchange) sendUntilClose(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.SetContentLength(-2) // "identity": no Content-Length, Transfer-Encoding or keep-alive
	h.SetConnectionClose()
	head := h.AppendBytes(nil)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		var err error
		if _, err = c.Write(head); err == nil {
			bw := bufio.NewWriterSize(c, writeBufSize)
			if _, err = x.WriteTo(bw); err == nil {
				err = bw.Flush()
			}
		}
		x.CloseWithError(err)
	})
}

// maxEndpointTries bounds how many endpoints of a backend one request is
// offered to when connecting fails (nginx's proxy_next_upstream_tries).
const maxEndpointTries = 3

// nextEndpoint offers a request whose connect to ep failed (err) to other
// endpoints of b, each at most once, up to maxEndpointTries endpoints in
// all: a pod that is gone or not listening while its EndpointSlice still
// lists it (a crash, a node lost, the slice not yet updated) should cost
// its clients nothing while its peers answer, as with nginx's default
// proxy_next_upstream error timeout. Nothing of the request has been
// written when a connect fails, body included, so any request may go to
// another endpoint. try sends the request to an endpoint (which is begun
// and in st.ep); nextEndpoint returns the endpoint of the last try and its
// error, having ended the ones that failed before it as failures.
func (s *Server) nextEndpoint(st *handlerState, b *route.Backend, ep *balancer.Endpoint, err error, try func(*balancer.Endpoint, *fasthttp.HostClient) error) (*balancer.Endpoint, error) {
	var tried [maxEndpointTries]*balancer.Endpoint
	tried[0] = ep
	for n := 1; n < maxEndpointTries && n < len(b.Endpoints); n++ {
		next, nhc := pickUntried(b, tried[:n])
		if next == nil {
			break
		}
		ep.End(true)
		s.m.upErr[classifyErr(err)].Inc()
		s.m.dialRetries.Inc()
		ep, tried[n] = next, next
		ep.Begin()
		st.ep = ep
		if err = try(ep, nhc); err == nil || !isDialError(err) {
			break
		}
	}
	return ep, err
}

// pickUntried asks b's policy for an endpoint that is not in tried, as
// many times as b has endpoints; nil when it offers none.
func pickUntried(b *route.Backend, tried []*balancer.Endpoint) (*balancer.Endpoint, *fasthttp.HostClient) {
	for range b.Endpoints {
		ep := b.RR.Pick(b.Endpoints)
		if ep == nil {
			return nil, nil
		}
		if slices.Contains(tried, ep) {
			continue
		}
		if hc, ok := ep.Transport.(*fasthttp.HostClient); ok {
			return ep, hc
		}
	}
	return nil, nil
}

func isDialError(err error) bool {
	var de *dialError
	return errors.As(err, &de)
}

// replayable reports whether req can be sent again unchanged after a failed
// attempt: it has no body, or one held in memory. A streamed body is
// consumed by the attempt. Call it before the first attempt: fasthttp closes
// and drops the body stream once it has written it (Request.writeBodyStream).
func replayable(req *fasthttp.Request) bool {
	return !hasBody(req) || !req.IsBodyStream()
}

// retryStale reports whether a failed round trip of a replayable request is
// retried once: it failed the way a keep-alive connection the endpoint
// closed while idle fails (conn.staleFailure). See the package doc.
func retryStale(resp *fasthttp.Response, err error) bool {
	return upstreamConnOf(resp).staleFailure(err)
}

// hasBody reports whether the request carries a body the handler may leave
// partly unread.
func hasBody(req *fasthttp.Request) bool {
	cl := req.Header.ContentLength()
	return cl > 0 || cl == -1
}

// upstreamFailed answers a failed round trip: the client's fault (its body
// stopped arriving) gets 400 or 408; an endpoint failure gets the status of
// its kind.
func (s *Server) upstreamFailed(ctx *fasthttp.RequestCtx, st *handlerState, err error, k errKind, clientFault bool) {
	if clientFault {
		code, body := fasthttp.StatusBadRequest, bodyBadRequest
		if isTimeout(err) {
			code, body = fasthttp.StatusRequestTimeout, bodyReqTimeout
		}
		s.reply(ctx, st, code, body)
		ctx.SetConnectionClose()
		return
	}
	s.m.upErr[k].Inc()
	code, body := statusOf(k)
	s.reply(ctx, st, code, body)
}

// reply writes a short local plain-text answer and releases what st holds.
// A request body the handler did not forward may still be unread on the
// connection, so the connection is closed after such a request.
func (s *Server) reply(ctx *fasthttp.RequestCtx, st *handlerState, code int, body []byte) {
	if st.stats == nil {
		st.stats = &s.m.requests.unmatched
	}
	st.stats.inc(code)
	resp := &ctx.Response
	resp.SetStatusCode(code)
	resp.Header.SetContentTypeBytes(textPlain)
	resp.SetBodyRaw(body)
	if hasBody(&ctx.Request) {
		ctx.SetConnectionClose()
	}
	if x := st.x; x != nil {
		st.x = nil
		x.release()
	}
	if s.cfg.AccessLog {
		s.logAccess(ctx.Method(), ctx.Host(), ctx.Path(), code, time.Since(ctx.Time()), "", int64(len(body)))
	}
}

var (
	acmeChallengePrefix = []byte("/.well-known/acme-challenge/")
	hdrLocation         = []byte("Location")
	schemeHTTPS         = []byte("https://")
)

// acmeChallenge answers an ACME HTTP-01 request with Config.ACMEChallenge.
func (s *Server) acmeChallenge(ctx *fasthttp.RequestCtx, st *handlerState) {
	st.stats = &s.m.requests.unmatched
	s.cfg.ACMEChallenge(ctx)
	code := ctx.Response.StatusCode()
	st.stats.inc(code)
	if s.cfg.AccessLog {
		s.logAccess(ctx.Method(), ctx.Host(), ctx.Path(), code, time.Since(ctx.Time()), "", int64(len(ctx.Response.Body())))
	}
}

// redirectHTTPS answers 308 with Location https://HOST[:PORT]URI: the host
// the request was routed on without its port, the HTTPS listener's port
// unless it is 443, and the request URI exactly as the client sent it (in
// origin form).
func (s *Server) redirectHTTPS(ctx *fasthttp.RequestCtx, st *handlerState, host []byte) {
	var hbuf [route.MaxHostLen]byte
	var lbuf [512]byte
	loc := append(lbuf[:0], schemeHTTPS...)
	loc = append(loc, route.NormalizeHost(host, hbuf[:0])...)
	loc = append(loc, s.httpsPort...)
	uri := originForm(ctx.Request.Header.RequestURI())
	if len(uri) == 0 || uri[0] != '/' {
		loc = append(loc, '/')
	}
	loc = append(loc, uri...)
	ctx.Response.Header.SetCanonical(hdrLocation, loc)
	s.reply(ctx, st, fasthttp.StatusPermanentRedirect, bodyRedirect)
}

// originForm returns the path and query of a request target: the target
// itself in origin form ("/a?b"), the part after the authority of an
// absolute-form target ("http://h/a?b" -> "/a?b", "http://h?b" -> "?b"),
// and "" for "*" or an authority alone. The caller adds the "/" an empty
// path stands for.
func originForm(uri []byte) []byte {
	if len(uri) > 0 && uri[0] == '/' {
		return uri
	}
	if i := bytes.Index(uri, schemeSep); i >= 0 {
		rest := uri[i+len(schemeSep):]
		if j := bytes.IndexAny(rest, "/?"); j >= 0 {
			return rest[j:]
		}
	}
	return nil
}

var schemeSep = []byte("://")

// recovered turns a handler panic into a 500 and a log line.
func (s *Server) recovered(ctx *fasthttp.RequestCtx, st *handlerState, p any) {
	s.m.panics.Inc()
	s.log.Error("proxy: panic in request handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	if st.ep != nil {
		st.ep.End(false)
		st.ep = nil
	}
	if x := st.x; x != nil {
		// Its state is unknown: close the endpoint body, do not pool it.
		st.x = nil
		_ = x.resp.CloseBodyStream()
		if x.dedicated != nil {
			_ = x.dedicated.Close()
		}
	}
	ctx.Response.Reset()
	ctx.Response.Header.SetNoDefaultContentType(true)
	s.reply(ctx, st, fasthttp.StatusInternalServerError, bodyInternal)
	ctx.SetConnectionClose()
}

// badRequest is fasthttp's ErrorHandler: the request could not be read.
func (s *Server) badRequest(ctx *fasthttp.RequestCtx, err error) {
	s.m.badRequests.Inc()
	code, body := fasthttp.StatusBadRequest, bodyBadRequest
	switch {
	case isSmallBuffer(err):
		code, body = fasthttp.StatusRequestHeaderFieldsTooLarge, bodyHeaderTooLarge
	case isTimeout(err):
		code, body = fasthttp.StatusRequestTimeout, bodyReqTimeout
	}
	ctx.Response.Reset()
	ctx.Response.Header.SetNoDefaultContentType(true)
	ctx.SetStatusCode(code)
	ctx.Response.Header.SetContentTypeBytes(textPlain)
	ctx.Response.SetBodyRaw(body)
}

func (s *Server) logAccess(method, host, path []byte, status int, d time.Duration, upstream string, n int64) {
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "access",
		slog.String("method", string(method)),
		slog.String("host", string(host)),
		slog.String("path", string(path)),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.String("upstream", upstream),
		slog.Int64("bytes", n),
	)
}
