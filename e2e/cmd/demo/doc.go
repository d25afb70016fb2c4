// Command demo runs the whole l5d-tunnel flow on one machine and narrates it:
// a "home" cluster nobody can reach, a "cloud" cluster, the unmodified
// `linkerd multicluster link` output applied to cloud, and traffic reaching
// home through the tunnel. `make demo` runs it; it needs root (network
// namespaces). See docs/e2e.md. It owns only the narration: the topology is
// e2e/harness's. Nothing imports it.
package main
