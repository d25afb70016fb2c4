// Package e2e holds the end-to-end tests (test files only): the link of
// docs/design.md working through the tunnel between two real control planes
// in network namespaces, built by e2e/harness (docs/e2e.md). It needs root;
// nothing imports it.
package e2e
