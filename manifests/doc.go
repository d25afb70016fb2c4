// Package manifests holds the kustomize sources of the l5d-tunnel install
// (webhook/, tunnel-server/, tunnel-client/) and their tests: every
// kustomization builds, dist/*.yaml is what `make manifests` renders, the
// workloads meet the security bar, the tunnel binding matches the contract
// of docs/design.md, and on a real kube-apiserver every rendered file
// applies, the RBAC is sufficient and minimal and the webhook binary
// reconciles with its ServiceAccount's token. There is no Go code to import
// here.
package manifests
