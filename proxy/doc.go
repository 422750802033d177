// Package proxy owns edgegate's HTTP data path: the event loops that serve
// plain HTTP, the fasthttp front server behind them (and for TLS), the
// request handler, hop-by-hop and X-Forwarded-* header rewriting, the
// upstream round trip through a per-endpoint *fasthttp.HostClient, the
// mapping of failures to HTTP status codes, panic recovery, the access log
// and the data-path metrics.
//
// Per request the handler loads the route snapshot once, matches host and
// path, picks an endpoint from the backend's immutable list, and streams the
// request body to the endpoint and the response body back, never buffering
// a whole body: memory per request is bounded by a few buffers whatever the
// body size.
//
// The package imports route and balancer only. main wires it:
//
//	srv, _ := proxy.New(proxy.Config{Snapshot: current.Load, ...})
//	reg := balancer.NewRegistry(balancer.RegistryConfig{
//		NewTransport:   srv.NewTransport,
//		CloseTransport: srv.CloseTransport,
//	})
//	prometheus.MustRegister(srv.Collectors()...)
//	// after every publish: srv.Prune(snap)
//	go srv.Serve(httpLn)
//	go srv.ServeTLS(httpsLn, tlsmgr.TLSConfig()) // optional
//
// # TLS
//
// ServeTLS serves the same handler on a second listener. Each accepted
// connection is wrapped first in the timeout conn (so the handshake and the
// encrypted bytes are under ReadTimeout and WriteTimeout) and then in a
// *tls.Conn, whose handshake runs on the connection's goroutine at its first
// read. A failed handshake goes to Config.HandshakeError, is logged at
// Debug, and closes the connection without an HTTP answer; it never stops
// the listener. Whether a request is secure comes from the listener that
// accepted its connection: it sets X-Forwarded-Proto (https or http) and
// X-Forwarded-Port (that listener's port); a client's own values are
// dropped. The endpoint is always spoken to in plain HTTP.
//
// On the plain listener, with Config.ACMEChallenge set, paths under
// /.well-known/acme-challenge/ are answered by it before routing. Then,
// with Config.RedirectHTTPS, a route with Route.RedirectHTTPS answers 308
// with Location https://HOST[:HTTPSPort]URI (the host without its port,
// the request URI as sent) and never reaches an endpoint. Requests on the
// TLS listener are never redirected.
//
// # Timeouts
//
// Client side: ReadTimeout bounds receiving the request line and headers
// together with the first 8 KiB of a body of known length (fasthttp reads
// them in one go); while the rest of a request body streams it bounds the
// gap between two reads instead,
// so a large upload is limited by progress, not by total time (nginx's
// client_header_timeout and client_body_timeout). WriteTimeout bounds one
// write to a client that stopped reading. IdleTimeout bounds the wait for
// the next request on a keep-alive connection.
//
// Upstream side: ConnectTimeout bounds the dial (refused: 502, timed out: 504).
// ResponseTimeout bounds every wait on the endpoint: for the response
// headers after the request was sent, and between two reads of the response
// body or two writes of the request body (nginx's proxy_read_timeout and
// proxy_send_timeout). Expiry before the response headers: 504; expiry while
// the body streams: the client connection is closed, as the status was
// already sent.
//
// # Socket I/O and flushing
//
// On Linux, client and endpoint TCP connections read and write with raw
// non-blocking system calls through syscall.RawConn (sysio_linux.go):
// readiness, deadlines and Close still come from Go's netpoller, but the
// scheduler no longer treats each call as a possibly blocking one, which on
// a small VM cost a fifth of the proxy's CPU in P hand-offs, sysmon wake-ups
// and context switches. Race builds use the net.Conn methods (the race
// detector learns I/O happens-before from them).
//
// A response body is flushed to the client when the endpoint makes the copy
// wait (the endpoint connection's next read would block), when the 32 KiB
// copy buffer is full, and at the end: a response that arrives whole leaves
// with its header in one write, while streams and partial bodies are
// forwarded as they arrive. The front server's write buffer is pooled per
// response.
//
// # Idle connections
//
// A keep-alive client connection (plain or TLS) that waits for its next
// request longer than Config.ParkIdleAfter (1s) is parked (Linux): its
// goroutine ends, fasthttp's read buffer (MaxHeaderBytes) and request
// context go back to their pools, and the socket waits in an epoll set of a
// single parker goroutine (park_linux.go) until bytes arrive, when fasthttp's
// ServeConn takes it up again on a new goroutine, or until IdleTimeout, when
// it is closed (a TLS connection with close_notify). A parked TLS
// connection keeps its crypto/tls state. Connections busy with
// back-to-back requests never park, so the request path pays nothing for
// it. The switch happens only where nothing of the next request has been
// read: fasthttp's loop is ended through its quiet keep-alive-close path
// (a temporary error before the first byte, which crypto/tls also passes on
// without breaking the connection), and a request that is partly buffered
// (pipelined) is never parked. edgegate_http_parked_connections counts them.
//
// # Stale upstream connections
//
// Endpoint connections are pooled per endpoint, most recently used first,
// and closed after UpstreamIdleTimeout idle. An endpoint may still close an
// idle connection just as a request is sent on it (its keep-alive timeout is
// shorter, or it restarted); the round trip then fails before any response
// byte. Such a failure is retried once, on the same endpoint and a new
// connection (the pool's other idle connections are closed first: they
// have been idle at least as long), when all of these hold:
//
//   - the connection had carried an earlier exchange (a new connection's
//     failure is the endpoint's answer, not a stale pool);
//   - no byte of the response arrived, and the failure is not a timeout;
//   - the request can be sent again unchanged: it has no body, or a body
//     held in memory. Any method qualifies: a reused connection that ends
//     without a byte is, all but always, one the endpoint closed while idle,
//     before the request reached it. An endpoint that crashed while handling
//     the request looks the same; replaying a bodyless POST to it is the
//     accepted residual risk (Go's http.Transport and nginx do not replay
//     non-idempotent requests written to such a connection).
//
// A request whose body streams from the client (every request with a body,
// as the front server streams them) is never replayed, whatever its
// method: part of the body has left the client connection, and sending a
// truncated body again would be worse than the 502. Busy pools (503) and
// response timeouts (504) are never retried.
//
// A failed connect (refused, unreachable, timed out) is different: nothing
// of the request was written, so it goes to another endpoint of the same
// backend, up to maxEndpointTries endpoints in all (Server.nextEndpoint).
// Only when every try fails does the client get 502 (504 when the last
// connect timed out).
//
// # Requests answered at the edge
//
// CONNECT and TRACE get 405 (a reverse proxy tunnels nothing, and TRACE
// would reflect credentials). A Host header with bytes no host has, or
// userinfo in it or in an absolute-form target ("u:p@host", an error by RFC
// 9110 4.2.4), gets 400: fasthttp would turn userinfo into an Authorization
// header for the endpoint. A request with both Content-Length and
// Transfer-Encoding is framed by its chunks and its connection is closed
// after the response (RFC 9112, 6.3).
//
// # HTTP/1.0 clients
//
// Their requests go to the endpoint as HTTP/1.1, so its connection is pooled
// and its response framed. A response of unknown length (chunked by the
// endpoint) cannot be chunked to an HTTP/1.0 client: it is written on the
// hijacked connection without a length and ended by closing it
// (exchange.sendUntilClose).
//
// # Upgrades (WebSocket)
//
// A request with the Connection token "upgrade" and an Upgrade header (any
// protocol) is routed, redirected and answered 404 or 503 like any other.
// If it is an HTTP/1.1 GET without a body it is then sent to the endpoint
// on a new connection of its own, dialled under ConnectTimeout and never
// taken from or returned to the pool, with the usual header rewrite and
// Upgrade and Connection: upgrade put back (upgrade.go); other upgrade
// requests are forwarded as plain ones, without Upgrade. The endpoint's
// response head is awaited under ResponseTimeout (per read, as for any
// request); a failure up to there answers 502 or 504 as usual.
//
// A 101 is written to the client with the endpoint's Upgrade and
// Connection: upgrade, together with any bytes the endpoint sent after its
// head. The client connection (plain or TLS) is then hijacked from fasthttp
// and the two connections are joined by a tunnel: one goroutine per
// direction copies bytes through an 8 KiB buffer, starting with whatever
// the client sent after its request head (fasthttp's read buffer). One
// side's end of stream is passed on as a half-close of the other (TCP
// shutdown for writing, after close_notify on TLS) and the other direction
// goes on; the tunnel ends when both have, or at once on an error, or when
// no byte moved in either direction for IdleTimeout. Each write is bounded
// as outside tunnels: WriteTimeout to the client, ResponseTimeout to the
// endpoint. A tunnelled connection is never parked. Shutdown closes the
// tunnels once requests in flight have drained (or ctx is done); fasthttp
// does not see hijacked connections.
//
// A tunnel counts as a 101 in edgegate_http_requests_total when it opens,
// in edgegate_http_upgraded_connections while it is open, and in flight on
// its endpoint until it ends; its access log line, status 101, is written
// when it ends, with its duration and the bytes the endpoint sent through
// it (after the 101 head). As the
// endpoint's pool does not see tunnel connections, MaxConnsPerEndpoint
// bounds them another way: a new tunnel gets 503 when the endpoint's
// requests and tunnels in progress have reached it.
//
// Any other answer is forwarded as a normal response, and the connection
// opened for it is closed afterwards; the client connection stays a
// keep-alive one.
//
// # Event loops
//
// With Config.EventLoops > 0, Serve on a TCP listener (Linux) runs that
// many event loops instead of fasthttp's goroutine per connection
// (loop_linux.go, loopconn_linux.go). Each loop is a goroutine with its own
// epoll set, client and endpoint sockets (registered once, edge-triggered,
// non-blocking reads and writev as raw system calls), keep-alive pools per
// endpoint and timers (a list per timeout kind: every timer of a kind has
// the same duration, so the lists stay in deadline order and setting or
// firing one is O(1)). Accepted sockets are spread round-robin over the
// loops. A loop with nothing to do parks in the runtime's poller, where its
// epoll set is registered, so it holds no thread and no P while idle, and
// a busy loop never leaves user space to wait; a busy loop yields its P
// every 500µs, so a goroutine queued behind it (another loop the poller
// woke) does not wait for the runtime's 10ms preemption. An endpoint
// connection reads at most 16 buffers per turn before the loop's other
// connections get theirs. Loops share nothing on the
// request path but the route snapshot, the endpoints' counters and the
// metrics, all atomics. A request served on a loop allocates nothing;
// idle client and endpoint connections hold no buffer.
//
// A loop serves the common request itself, from header to last byte:
// HTTP/1.1, origin-form target, a valid Host, no body, no upgrade, a route
// with a ready endpoint, not a redirect or an ACME challenge, the endpoint
// below MaxConnsPerEndpoint in flight. Its answer is the goroutine
// server's: the same head, byte for byte but for the Date (the same header
// rewrite and copy, framing and status mapping), and the same body. A body
// of known length is forwarded as it arrives; a chunked one verbatim, with
// the endpoint's chunk sizes and extensions where fasthttp would re-chunk
// (its trailers dropped all the same); one delimited by close re-chunked.
// Connect failures go to other endpoints, a
// reused connection found closed is retried once, and the timeouts are the
// same. Every other request, with its connection and the bytes read so
// far, is handed to the goroutine server (edgegate_http_loop_handoffs_total),
// which serves it and the rest of that connection exactly as without loops:
// request bodies, HTTP/1.0, upgrades, 4xx and 5xx answered at the edge,
// redirects, oversized headers. TLS listeners always use the goroutine
// server.
//
// Shutdown drains the loops as it drains the goroutine server: the
// listener is closed as soon as every loop has stopped accepting (new
// connections are refused), idle connections are closed, requests in
// flight finish with Connection: close, and connections handed to the
// goroutine server are waited for like its own.
//
// Differences a client or endpoint may see: keep-alive pools are per loop,
// so an endpoint sees up to EventLoops times as many idle connections; a
// loop notices an endpoint closing an idle pooled connection and drops it
// before reusing it; a panic in a loop closes that client connection
// (answering 500 when nothing of the response was sent).
//
// # Not supported yet
//
// CONNECT is not proxied. Request and response trailers are dropped.
// HTTP/2 is not spoken on either side; an h2c upgrade reaches the endpoint
// without HTTP2-Settings (a header its Connection names), so the endpoint
// answers in HTTP/1.1.
package proxy
