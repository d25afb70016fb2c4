// Package extension is the linkerd-tunnel CLI (`linkerd tunnel ...`): the
// global flags of a Linkerd extension, install, uninstall and version. Only
// cmd/linkerd-tunnel imports it (and internal/healthcheck, for Globals).
package extension
