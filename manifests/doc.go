// Package manifests owns the Helm charts that install l5d-tunnel
// (charts/l5d-tunnel, charts/l5d-tunnel-server, charts/l5d-tunnel-client,
// embedded) and renders them with Helm's Go library: Render and Values. The
// CLI, `make manifests` (dist/*.yaml) and the tests import it; nothing else
// writes install YAML.
package manifests
