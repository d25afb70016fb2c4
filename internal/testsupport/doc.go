// Package testsupport owns the small helpers tests of several packages
// share: a loopback TCP server, a log buffer safe for concurrent writers, a
// duration read from the environment. Only tests import it (it imports
// testing); shipped code and test tools (e2e/harness, e2e/cmd/demo) do not.
package testsupport
