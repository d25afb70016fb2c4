package webhook

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// ErrUsage wraps every invalid-flag error; Main exits 2 on it.
var ErrUsage = errors.New("invalid flag")

// EnvPodNamespace names the environment variable holding the webhook's own
// namespace (the downward API sets it in the Deployment).
const EnvPodNamespace = "POD_NAMESPACE"

// Options is the whole configuration of the webhook binary. Flags bind
// straight into it (BindFlags); Validate checks it.
type Options struct {
	// CertDir holds tls.crt and tls.key; reloaded when they change.
	CertDir string
	// BindAddress is the IP the webhook server listens on ("" = all).
	BindAddress string
	// Port is the webhook server's TCP port.
	Port int
	// TrustedNamespaces are the namespaces whose labelled Services are
	// trusted as tunnel bindings.
	TrustedNamespaces []string
	// RewriteNamespaces are opted in to rewriting by name (usually
	// linkerd-multicluster and linkerd); a namespace labelled
	// l5d-tunnel.io/rewrite=enabled is opted in too.
	RewriteNamespaces []string
	// Mutate holds the cluster domain and the default tls-server-name.
	Mutate mutate.Options
	// HealthAddr serves /healthz and /readyz ("0" disables).
	HealthAddr string
	// MetricsAddr serves /metrics ("0" disables).
	MetricsAddr string
	// Kubeconfig is a kubeconfig file; in-cluster config when empty.
	Kubeconfig string
	// LeaderElect turns on leader election for the reconciler.
	LeaderElect bool
	// LeaderElectionNamespace holds the Lease; default: POD_NAMESPACE, else
	// the first trusted namespace.
	LeaderElectionNamespace string
	// LogFormat is "json" or "text".
	LogFormat string
	// LogLevel is "debug", "info", "warn" or "error".
	LogLevel string
	// ResyncPeriod is how often the reconciler re-checks every opted-in
	// namespace even without events.
	ResyncPeriod time.Duration
	// GatewayAddresses writes the ready tunnel-server pod addresses of each
	// binding (its headless Service's EndpointSlices) into the Link's
	// gatewayAddress and follows them; false keeps the headless Service's
	// name (docs/design.md, "Failover").
	GatewayAddresses bool
	// GatewayDebounce is how long the reconciler waits after the first
	// change of a binding's ready addresses before it updates the Links, so
	// that a rolling update costs one or two Link writes.
	GatewayDebounce time.Duration
}

// MaxGatewayDebounce bounds --gateway-debounce: a longer wait keeps a dead
// pod in the mirror Endpoints longer than it saves.
const MaxGatewayDebounce = 30 * time.Second

// DefaultOptions returns the defaults documented in docs/webhook.md. The
// trusted namespace defaults to POD_NAMESPACE.
func DefaultOptions() Options {
	o := Options{
		Port:         9443,
		Mutate:       mutate.DefaultOptions(),
		HealthAddr:   ":8081",
		MetricsAddr:  ":8080",
		LeaderElect:  true,
		LogFormat:    "json",
		LogLevel:     "info",
		ResyncPeriod: 10 * time.Minute,

		GatewayAddresses: true,
		GatewayDebounce:  300 * time.Millisecond,
	}
	if ns := os.Getenv(EnvPodNamespace); ns != "" {
		o.TrustedNamespaces = []string{ns}
	}
	return o
}

// listFlag binds a comma-separated list.
type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l listFlag) Type() string { return "strings" }

func (l listFlag) Set(s string) error {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	*l.v = out
	return nil
}

// BindFlags registers every flag of the binary on fs, bound to o.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir, "`directory` with the serving certificate tls.crt and key tls.key (reloaded when they change; required)")
	fs.StringVar(&o.BindAddress, "bind-address", o.BindAddress, "IP address the webhook server listens on (empty: all addresses)")
	fs.IntVar(&o.Port, "port", o.Port, "TCP port of the webhook server (HTTPS)")
	fs.Var(listFlag{&o.TrustedNamespaces}, "trusted-namespaces", "comma-separated `namespaces` whose Services labelled "+mutate.LabelLink+" are trusted as tunnel bindings (default: $"+EnvPodNamespace+")")
	fs.Var(listFlag{&o.RewriteNamespaces}, "rewrite-namespaces", "comma-separated `namespaces` whose Linkerd multicluster objects are rewritten (a namespace labelled "+mutate.LabelRewrite+"="+mutate.LabelRewriteEnabled+" is rewritten too)")
	fs.StringVar(&o.Mutate.ClusterDomain, "cluster-domain", o.Mutate.ClusterDomain, "cluster `domain` of this (cloud) cluster, used to build Service names")
	fs.StringVar(&o.Mutate.DefaultTLSServerName, "default-tls-server-name", o.Mutate.DefaultTLSServerName, "tls-server-name for credentials whose server already pointed at the tunnel")
	fs.StringVar(&o.HealthAddr, "health-addr", o.HealthAddr, "`address` of /healthz and /readyz (\"0\" disables)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, "`address` of /metrics (\"0\" disables)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig `file` (default: in-cluster configuration, then $KUBECONFIG)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "elect a leader for the reconciler (the webhook serves on every replica)")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "`namespace` of the leader-election Lease (default: $"+EnvPodNamespace+", else the first trusted namespace)")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "log format: json or text")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "log level: debug, info, warn or error")
	fs.DurationVar(&o.ResyncPeriod, "resync-period", o.ResyncPeriod, "how often the reconciler re-checks every opted-in namespace")
	fs.BoolVar(&o.GatewayAddresses, "gateway-ready-addresses", o.GatewayAddresses, "set each Link's gatewayAddress to the ready tunnel-server pod addresses of its binding (its headless Service's EndpointSlices) and follow them; false keeps the headless Service's name")
	fs.DurationVar(&o.GatewayDebounce, "gateway-debounce", o.GatewayDebounce, "how long the reconciler waits after a change of the ready tunnel-server addresses before it updates the Links (0-"+MaxGatewayDebounce.String()+")")
}

// Validate checks the options; every error wraps ErrUsage and names its flag.
func (o *Options) Validate() error {
	var errs []error
	bad := func(flag, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: --%s: %s", ErrUsage, flag, fmt.Sprintf(format, a...)))
	}
	if o.CertDir == "" {
		bad("cert-dir", "required")
	} else if fi, err := os.Stat(o.CertDir); err != nil || !fi.IsDir() {
		bad("cert-dir", "%q is not a directory", o.CertDir)
	}
	if o.BindAddress != "" && net.ParseIP(o.BindAddress) == nil {
		bad("bind-address", "%q is not an IP address", o.BindAddress)
	}
	if err := cli.CheckPort(o.Port, 1); err != nil {
		bad("port", "%v", err)
	}
	if len(o.TrustedNamespaces) == 0 {
		bad("trusted-namespaces", "no namespace given and $%s is unset", EnvPodNamespace)
	}
	for _, ns := range o.TrustedNamespaces {
		if e := validation.IsDNS1123Label(ns); len(e) > 0 {
			bad("trusted-namespaces", "%q: %s", ns, strings.Join(e, "; "))
		}
	}
	for _, ns := range o.RewriteNamespaces {
		if e := validation.IsDNS1123Label(ns); len(e) > 0 {
			bad("rewrite-namespaces", "%q: %s", ns, strings.Join(e, "; "))
		}
	}
	if err := (mutate.Options{ClusterDomain: o.Mutate.ClusterDomain}).Validate(); err != nil || o.Mutate.ClusterDomain == "" {
		bad("cluster-domain", "%q is not a DNS domain", o.Mutate.ClusterDomain)
	}
	if err := (mutate.Options{DefaultTLSServerName: o.Mutate.DefaultTLSServerName}).Validate(); err != nil || o.Mutate.DefaultTLSServerName == "" {
		bad("default-tls-server-name", "%q is not a DNS name", o.Mutate.DefaultTLSServerName)
	}
	for _, a := range []struct{ flag, v string }{{"health-addr", o.HealthAddr}, {"metrics-addr", o.MetricsAddr}} {
		if err := checkAddr(a.v); err != nil {
			bad(a.flag, "%v", err)
		}
	}
	if o.LeaderElectionNamespace != "" {
		if e := validation.IsDNS1123Label(o.LeaderElectionNamespace); len(e) > 0 {
			bad("leader-election-namespace", "%q: %s", o.LeaderElectionNamespace, strings.Join(e, "; "))
		}
	}
	if err := cli.CheckLogFormat(o.LogFormat); err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrUsage, err))
	}
	if _, err := cli.ParseLevel(o.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrUsage, err))
	}
	if o.ResyncPeriod < time.Second {
		bad("resync-period", "%s is shorter than 1s", o.ResyncPeriod)
	}
	if o.GatewayDebounce < 0 || o.GatewayDebounce > MaxGatewayDebounce {
		bad("gateway-debounce", "%s is outside 0-%s", o.GatewayDebounce, MaxGatewayDebounce)
	}
	return errors.Join(errs...)
}

// checkAddr accepts "0" (disabled) and host:port.
func checkAddr(a string) error {
	if a == "0" {
		return nil
	}
	if _, _, err := cli.SplitHostPort(a); err != nil {
		return fmt.Errorf("%q: %w", a, err)
	}
	return nil
}

// leaderElectionNamespace resolves the Lease namespace.
func (o *Options) leaderElectionNamespace() string {
	if o.LeaderElectionNamespace != "" {
		return o.LeaderElectionNamespace
	}
	if ns := os.Getenv(EnvPodNamespace); ns != "" {
		return ns
	}
	return o.TrustedNamespaces[0]
}

const long = `The l5d-tunnel mutating admission webhook. It rewrites what
"linkerd multicluster link" creates (the Link, the probe Service and the
credentials Secrets) in namespaces labelled l5d-tunnel.io/rewrite=enabled so
that the link goes through the tunnel of its cluster, and a leader-elected
reconciler brings existing objects to the same state. See docs/webhook.md.`

const examples = `  # In the cluster (the Deployment in dist/install-webhook.yaml):
  webhook --cert-dir=/etc/l5d-tunnel/webhook-certs --trusted-namespaces=l5d-tunnel

  # Outside a cluster, against the current kubeconfig, one replica:
  webhook --cert-dir=./certs --kubeconfig ~/.kube/config --leader-elect=false \
    --trusted-namespaces=l5d-tunnel --log-format=text --log-level=debug`

// newCommand is the webhook command line: its flags bind into o; run is
// called after parsing, with o filled in.
func newCommand(o *Options, run func() error) *cobra.Command {
	cmd := &cobra.Command{
		Use:           "webhook [flags]",
		Short:         "l5d-tunnel mutating admission webhook and reconciler",
		Long:          long,
		Example:       examples,
		Version:       cli.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q (flags only)", args[0])
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error { return run() },
	}
	cmd.CompletionOptions.DisableDefaultCmd = true
	cmd.SetVersionTemplate("webhook {{.Version}}\n")
	cmd.Flags().SortFlags = false
	o.BindFlags(cmd.Flags())
	return cmd
}

// Parse parses args into options starting from DefaultOptions and
// validates them. --help and --version print to stdout and return
// pflag.ErrHelp; bad flags return an error wrapping ErrUsage.
func Parse(args []string, stdout io.Writer) (Options, error) {
	o := DefaultOptions()
	parsed := false
	cmd := newCommand(&o, func() error { parsed = true; return o.Validate() })
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(io.Discard)
	err := cmd.Execute()
	switch {
	case err != nil && !errors.Is(err, ErrUsage):
		return o, fmt.Errorf("%w: %w", ErrUsage, err)
	case err == nil && !parsed:
		return o, pflag.ErrHelp
	}
	return o, err
}
