// Command tunnel runs either end of the l5d-tunnel: `tunnel server` in the
// routable cloud cluster, `tunnel client` in the home cluster that dials out.
// See docs/tunnel.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
