// Command tunnel runs either end of the l5d-tunnel: `tunnel server` in the
// routable cloud cluster, `tunnel client` in the home cluster that dials out
// (docs/tunnel.md). It owns the command line only (cobra flags to
// internal/tunnel's config, conventions from internal/cli); nothing imports it.
package main
