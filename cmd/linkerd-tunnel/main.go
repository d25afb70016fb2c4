package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/l5d-tunnel/l5d-tunnel/internal/extension"
	"github.com/l5d-tunnel/l5d-tunnel/internal/healthcheck"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes linkerd-tunnel with args and returns its exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root, g := extension.NewRootCmd()
	root.AddCommand(healthcheck.NewCmd(g))
	return extension.Run(ctx, root, args, stdin, stdout, stderr)
}
