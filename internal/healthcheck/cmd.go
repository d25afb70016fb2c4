package healthcheck

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/l5d-tunnel/l5d-tunnel/internal/extension"
)

// Options are the flags of `check` (EXTENSIONS.md).
type Options struct {
	Output    string
	Wait      time.Duration
	Pre       bool
	Proxy     bool
	Namespace string
}

// DefaultWait is --wait's default, as in Linkerd's own checks.
const DefaultWait = 5 * time.Minute

// retryInterval is the wait between two attempts of a failing check
// (DefaultInterval; the tests shorten it).
var retryInterval = DefaultInterval

// ErrFailed is returned when a check failed; the report is already printed
// (linkerd-tunnel exits 1 without printing more).
var ErrFailed = extension.Failed

// ErrUsage wraps bad flag values (linkerd-tunnel exits 2).
var ErrUsage = extension.ErrUsage

const long = `Check the tunnel extension for problems.

In the cloud cluster it checks the webhook (Deployment, serving certificate,
the webhook configuration's CA bundle, that the API server really calls it)
and every Link (tunnel binding, tunnel server ready, Link, probe Service and
credentials Secrets rewritten). In the home cluster it checks the tunnel
clients (connected, upstreams resolve). Each failure says what to do and
links to its section of docs/troubleshooting.md. The command exits non-zero
when a check fails.

"linkerd check" runs it as "linkerd-tunnel check --output json" in every
cluster where the extension is installed.`

const examples = `  # the cloud cluster (webhook, tunnel servers, Links)
  linkerd tunnel --context cloud check

  # the home cluster (tunnel client), only what is wrong
  linkerd tunnel --context home check -o short

  # as "linkerd check" runs it
  linkerd-tunnel check --output json --wait 0s`

// NewCmd is `linkerd-tunnel check`.
func NewCmd(g *extension.Globals) *cobra.Command {
	o := &Options{Output: OutputTable, Wait: DefaultWait}
	cmd := &cobra.Command{
		Use:     "check [flags]",
		Short:   "Check the tunnel extension for problems",
		Long:    long,
		Example: examples,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return Run(cmd.Context(), g, o, cmd.OutOrStdout())
		},
	}
	// EXTENSIONS.md: ignore unknown flags, so a newer linkerd CLI can pass
	// flags this version does not know.
	cmd.FParseErrWhitelist.UnknownFlags = true
	fs := cmd.Flags()
	fs.StringVarP(&o.Output, "output", "o", o.Output, "Output format. One of: table, json, short")
	fs.DurationVar(&o.Wait, "wait", o.Wait, "Maximum allowed time for all tests to pass")
	fs.BoolVar(&o.Pre, "pre", false, "Only run pre-installation checks, to determine if the extension can be installed")
	fs.BoolVar(&o.Proxy, "proxy", false, "Only run data-plane checks (the extension has no data-plane component: runs the regular checks)")
	fs.StringVarP(&o.Namespace, "namespace", "n", "", "Namespace to use for --proxy checks (default: all namespaces; unused by this extension)")
	return cmd
}

func (o *Options) validate() error {
	switch o.Output {
	case OutputTable, OutputJSON, OutputShort:
	default:
		return fmt.Errorf("%w: --output %q: want one of table, json, short", ErrUsage, o.Output)
	}
	if o.Wait < 0 {
		return fmt.Errorf("%w: --wait %s is negative", ErrUsage, o.Wait)
	}
	return nil
}

// Run runs the checks the options select against the cluster g names and
// prints the report to w; it returns ErrFailed when a check failed.
func Run(ctx context.Context, g *extension.Globals, o *Options, w io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	r := &Runner{Deadline: time.Now().Add(o.Wait), Interval: retryInterval}
	return run(ctx, r, newEnv(g), o, w)
}

func run(ctx context.Context, r *Runner, e *env, o *Options, w io.Writer) error {
	cats := e.categories(o.Pre)
	p := newPrinter(w, o.Output)
	success, warning := r.Run(ctx, cats, p.observe)
	if err := p.finish(success, warning); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	if !success {
		return ErrFailed
	}
	return nil
}
