// Command linkerd-tunnel is the l5d-tunnel extension of the Linkerd CLI:
// `linkerd tunnel ...` runs it from PATH. It owns only main: the commands
// live in internal/extension (install, server, client, uninstall, version)
// and internal/healthcheck (check). Nothing imports it.
package main
