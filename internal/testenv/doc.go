// Package testenv owns the test control planes and the paths of the
// install sources the tests load: kube-apiserver and etcd (and, where asked,
// kube-controller-manager) built from the Go module proxy by
// hack/build-tools.sh, driven by controller-runtime's envtest. Tests,
// e2e/harness and e2e/cmd/demo import it; no shipped binary does, and it
// does not import the testing package (TB), so the demo binary does not
// link it.
//
// Tests never skip when the binaries are missing: BinDir builds them (a
// warm build only checks a stamp file).
package testenv
