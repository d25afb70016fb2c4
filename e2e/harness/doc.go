// Package harness builds the end-to-end topology of l5d-tunnel on one
// machine: two network namespaces ("cloud", routable, and "home", which
// cloud cannot reach) joined by a veth pair, a real etcd + kube-apiserver in
// each, kube-controller-manager in cloud, the webhook and the tunnel server
// in cloud, the tunnel client and a stand-in Linkerd gateway in home.
// /etc/netns/<ns>/hosts stands in for cluster DNS.
//
// The e2e tests (package e2e) and `make demo` (e2e/cmd/demo) share it; see
// docs/e2e.md.
package harness
