// Command etcd runs the etcd server from go.etcd.io/etcd/server/v3, pinned by
// this tools module to the version Kubernetes v1.35.4 is tested with. It
// exists so the test harness can build etcd from the Go module proxy;
// nothing imports it.
package main
