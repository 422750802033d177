// Package tlsmgr will own TLS termination: GetCertificate by SNI from the
// certificates carried in the route snapshot (Secrets of the Ingresses' own
// namespaces), the ACME manager (golang.org/x/crypto/acme/autocert) for
// opted-in hosts, and the certificate cache interface that cluster can
// replicate between peers.
//
// Reserved: nothing is implemented yet; [https] listen is rejected by the
// config until it is. See the TLS issue.
package tlsmgr
