// Package repo locates this checkout and builds its commands, for tests and
// test tools (e2e/cmd/demo). It imports neither testing nor Kubernetes
// code, so any test or tool may import it.
package repo
