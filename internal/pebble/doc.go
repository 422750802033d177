// Package pebble runs Let's Encrypt's Pebble ACME test server on loopback for
// edgegate's TLS tests: a real ACME directory (RFC 8555) that validates
// http-01 and tls-alpn-01 challenges against 127.0.0.1 and issues
// certificates from a throw-away root.
//
// Start launches two child processes from the binaries hack/pebble.sh builds
// (`make pebble`):
//
//   - pebble-challtestsrv, used only as the DNS server Pebble's validation
//     authority resolves names with: every name answers 127.0.0.1 (A) and
//     nothing for AAAA; its own challenge servers are switched off;
//   - pebble with -dnsserver pointing at it, PEBBLE_VA_NOSLEEP=1 (no random
//     validation delay), PEBBLE_WFE_NONCEREJECT=0 (no injected badNonce
//     errors) and PEBBLE_AUTHZREUSE=0 (every order validates afresh).
//
// Everything listens on 127.0.0.1 only. The ACME API's TLS certificate comes
// from a CA that Start generates into the work directory (CAFile); the
// issuing roots for the certificates Pebble signs come from its management
// API (Roots).
package pebble
