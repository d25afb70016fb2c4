package extension

import (
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
	"github.com/l5d-tunnel/l5d-tunnel/manifests"
)

const installLong = `Output the Kubernetes manifests of the l5d-tunnel webhook, for the cloud cluster.

Run once per cloud cluster. The webhook rewrites the objects 'linkerd multicluster link'
creates (the Link, its probe Service and credentials Secrets) so that they reach the
linked cluster through its tunnel server; it acts only in the --rewrite-namespaces
(by default linkerd-multicluster and the Linkerd namespace, -L). cert-manager issues
its serving certificate, so cert-manager must be installed first.

The output is the chart ` + "`" + manifests.ChartWebhook + "`" + ` rendered with its defaults, the flags below,
and Helm-style overrides (-f/--values, --set, --set-string, --set-file; the chart's
values.yaml lists every value). The same chart installs with 'helm install'.`

const installExamples = `  # Default install.
  linkerd tunnel install | kubectl apply -f -

  # Images from your registry, debug logs, Linkerd in namespace linkerd-prod.
  linkerd tunnel -L linkerd-prod install --registry registry.example.com/l5d-tunnel \
    --set logLevel=debug | kubectl apply -f -

  # Overrides from a file.
  linkerd tunnel install -f my-values.yaml | kubectl apply -f -`

func newInstallCmd(g *Globals) *cobra.Command {
	f := &chartFlags{chart: manifests.ChartWebhook}
	var (
		rewrite   []string
		logLevel  string
		logFormat string
	)
	cmd := &cobra.Command{
		Use:     "install [flags]",
		Short:   "Output the manifests of the webhook (cloud cluster, once)",
		Long:    installLong,
		Example: installExamples,
		Args:    argsExactly(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			typed := map[string]any{}
			if fs.Changed("rewrite-namespaces") {
				if err := checkNamespaces("--rewrite-namespaces", rewrite); err != nil {
					return err
				}
				typed["rewriteNamespaces"] = toAny(rewrite)
			}
			if fs.Changed("log-level") {
				if _, err := cli.ParseLevel(logLevel); err != nil {
					return UsageErrorf("%v", err)
				}
				typed["logLevel"] = logLevel
			}
			if fs.Changed("log-format") {
				if err := cli.CheckLogFormat(logFormat); err != nil {
					return UsageErrorf("%v", err)
				}
				typed["logFormat"] = logFormat
			}
			derived := map[string]any{
				"rewriteNamespaces": toAny(defaultRewriteNamespaces(g)),
			}
			// Charts that name Linkerd's namespace get -L too.
			if defaults, err := manifests.Values(f.chart); err != nil {
				return err
			} else if _, ok := defaults["linkerdNamespace"]; ok {
				derived["linkerdNamespace"] = g.LinkerdNamespace
			}
			vals, err := f.values(cmd, derived, typed, nil)
			if err != nil {
				return err
			}
			return f.render(cmd.OutOrStdout(), vals)
		},
	}
	fs := cmd.Flags()
	f.add(fs, "Namespace of the extension in the cloud cluster")
	fs.StringSliceVar(&rewrite, "rewrite-namespaces", nil,
		"Namespaces in which the webhook rewrites Links, probe Services and credentials Secrets (default: linkerd-multicluster and --linkerd-namespace)")
	fs.StringVar(&logLevel, "log-level", "", "Webhook log level: debug, info, warn or error (default: the chart's)")
	fs.StringVar(&logFormat, "log-format", "", "Webhook log format: json or text (default: the chart's)")
	return cmd
}

// MulticlusterNamespace is where 'linkerd multicluster install' puts the
// multicluster extension, and 'linkerd multicluster link' the Link, probe
// Service and credentials Secret.
const MulticlusterNamespace = "linkerd-multicluster"

// defaultRewriteNamespaces are the namespaces whose link objects the webhook
// rewrites unless told otherwise: the multicluster extension's, and Linkerd's
// (which holds a copy of the credentials Secret from Linkerd 2.14 on).
func defaultRewriteNamespaces(g *Globals) []string {
	if g.LinkerdNamespace == MulticlusterNamespace {
		return []string{MulticlusterNamespace}
	}
	return []string{MulticlusterNamespace, g.LinkerdNamespace}
}

func checkNamespaces(flag string, names []string) error {
	if len(names) == 0 {
		return UsageErrorf("%s is empty: name at least one namespace", flag)
	}
	for _, n := range names {
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			return UsageErrorf("%s: %q is not a namespace name: %s", flag, n, errs[0])
		}
	}
	return nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
