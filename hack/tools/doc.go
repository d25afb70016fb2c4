// Package tools pins the control-plane binaries the integration and e2e tests
// run: kube-apiserver, kube-controller-manager and kubectl from
// k8s.io/kubernetes, and etcd (./etcd). See hack/build-tools.sh; nothing
// imports it.
package tools
