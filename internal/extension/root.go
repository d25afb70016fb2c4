package extension

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
)

// exitError carries the exit code of a failed command. Run prints err, when
// there is one, and exits with code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// UsageErrorf reports bad flags or arguments: Run prints the message (which
// names the flag) with a pointer to --help and exits 2.
func UsageErrorf(format string, a ...any) error {
	return &exitError{code: cli.ExitUsage, err: fmt.Errorf(format, a...)}
}

// ErrUsage marks bad flag values: Run exits 2 on any error wrapping it
// (fmt.Errorf("%w: --flag ...", ErrUsage)), for commands built outside this
// package (check).
var ErrUsage = errors.New("invalid flag")

// Failed is returned by a command that has already reported its failure
// (check prints its own results): Run prints nothing more and exits 1. Any
// other error a command returns is printed and exits 1 too.
var Failed error = &exitError{code: cli.ExitFailure}

const rootLong = `linkerd-tunnel: the l5d-tunnel extension of Linkerd.

It links a cluster without a public IP (home) to a routable one (cloud) for
Linkerd multicluster, through a tunnel the home cluster dials out: the cloud
runs an admission webhook (install) and one tunnel server per linked cluster
(server); the home cluster runs the tunnel client (client). Every command
prints manifests for kubectl; none changes a cluster.

Run it as 'linkerd tunnel ...' (linkerd finds linkerd-tunnel on your PATH). linkerd
accepts no flags before an extension's name: write 'linkerd tunnel --context cloud ...'.`

const rootExamples = `  # Cloud, once: the webhook that rewrites what 'linkerd multicluster link' creates.
  linkerd tunnel --context cloud install | kubectl --context cloud apply -f -

  # Cloud, per linked cluster: the tunnel server for link "home" behind an ingress.
  linkerd tunnel --context cloud server home --ingress-host home.tunnel.example.com \
    --ingress-tls-secret home-tunnel-tls | kubectl --context cloud apply -f -

  # Home: the tunnel client, with the token read from the cloud cluster.
  linkerd tunnel --context cloud client home --server-url wss://home.tunnel.example.com/tunnel \
    | kubectl --context home apply -f -

  # Then link as usual, and check.
  linkerd --context home multicluster link --cluster-name home | kubectl --context cloud apply -f -
  linkerd --context cloud check`

// NewRootCmd returns the linkerd-tunnel command (without the check
// subcommand, which internal/healthcheck builds on the returned Globals) and
// the global flags it fills. Its output goes to the command's Out and Err
// writers (SetOut, SetErr); Run maps its errors to exit codes.
func NewRootCmd() (*cobra.Command, *Globals) {
	g := &Globals{}
	root := &cobra.Command{
		Use:           "linkerd-tunnel",
		Short:         "Link a cluster without a public IP to Linkerd multicluster through a tunnel",
		Long:          rootLong,
		Example:       rootExamples,
		SilenceErrors: true,
		SilenceUsage:  true,
		// With Args set, cobra hands an unknown command to RunE instead of
		// its own "unknown command" error, so the exit code is ours.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return UsageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
			return UsageErrorf("a command is required")
		},
		PersistentPreRunE: func(_ *cobra.Command, _ []string) error {
			if errs := validation.IsDNS1123Label(g.LinkerdNamespace); len(errs) > 0 {
				return UsageErrorf("--linkerd-namespace %q is not a namespace name: %s", g.LinkerdNamespace, errs[0])
			}
			return nil
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageErrorf("%v", err) })
	g.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newInstallCmd(g),
		newServerCmd(g),
		newClientCmd(g),
		newUninstallCmd(g),
		newVersionCmd(g),
	)
	return root, g
}

// Run executes root with args and returns the exit code: 0, 1 when a
// command failed, 2 on bad flags or arguments (the message names the flag).
// Manifests and help go to stdout, errors to stderr.
func Run(ctx context.Context, root *cobra.Command, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return cli.ExitOK
	}
	code := cli.ExitFailure
	if errors.Is(err, ErrUsage) {
		code = cli.ExitUsage
	}
	var e *exitError
	if errors.As(err, &e) {
		code = e.code
		if e.err == nil {
			return code
		}
	}
	fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
	if code == cli.ExitUsage {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// argsExactly accepts n positional arguments, named in the error.
func argsExactly(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case len(args) == n:
		case len(args) < n:
			return UsageErrorf("want %s", what)
		default:
			return UsageErrorf("unexpected argument %q: want %s", args[n], what)
		}
		return nil
	}
}

// logger is the command's debug log: to stderr with --verbose, else off.
func (g *Globals) logger(w io.Writer) *slog.Logger {
	level := slog.LevelWarn
	if g.Verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
