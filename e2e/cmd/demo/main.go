package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
)

func main() {
	harness.HelperMain() // a copy of this program acting inside a namespace
	harness.QuietControllerRuntime()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `demo: the l5d-tunnel link working end to end on one machine.

Builds two network namespaces, "cloud" (routable) and "home" (which cloud
cannot reach), each with a real etcd and kube-apiserver; runs the webhook and
the tunnel server in cloud, the tunnel client and a stand-in Linkerd gateway
in home; applies what 'linkerd multicluster link' prints (from the project's
fixtures) to cloud and shows what the webhook changed and the traffic that
now reaches home through the tunnel. Stays up until Ctrl-C, then removes
every process and namespace it made. Needs root.

Usage:
  go run ./e2e/cmd/demo [flags]      (or: make demo DEMO_ARGS="--once")

Flags:
`

type options struct {
	once    bool
	version string
	keep    bool
	ws      bool
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.once, "once", false, "show everything once and exit (for CI) instead of staying up until Ctrl-C")
	fs.StringVar(&o.version, "linkerd-version", "", "Linkerd fixture to link with (default: the newest; see internal/fixtures/testdata/linkerd)")
	fs.BoolVar(&o.keep, "keep-workdir", false, "keep the work directory (logs, certificates) after exit")
	fs.BoolVar(&o.ws, "plain-ws", false, "use ws:// between client and server instead of wss://")
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintln(stderr, "Run 'demo --help' for usage.")
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demo: unexpected argument %q (flags only; see --help)\n", fs.Arg(0))
		return 2
	}
	if err := harness.CheckPrivileges(); err != nil {
		fmt.Fprintf(stderr, `demo: %v.

The demo builds two network namespaces ("cloud" and "home") joined by a veth
pair, so that home really has no address cloud can reach, and runs a
kube-apiserver in each. Creating namespaces and links needs root
(CAP_SYS_ADMIN and CAP_NET_ADMIN). Run it as root, e.g.:

  sudo make demo                  # stays up until Ctrl-C
  sudo make demo DEMO_ARGS=--once # show everything once and exit

Nothing was changed on this machine.
`, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{opts: o, out: stdout}
	err := d.run(ctx)
	d.close()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stdout, "\nInterrupted: everything the demo started is stopped and its namespaces are gone.")
			return 0
		}
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	return 0
}

func writeB64(path, enc string) error {
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, raw, 0o600)
}
