// Package testpki issues throwaway certificates for tests and the demo: a
// self-signed CA that signs leaf certificates, the way cert-manager's CA
// Issuer does. Tests and e2e/harness import it; no shipped binary does.
package testpki
