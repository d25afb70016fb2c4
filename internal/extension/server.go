package extension

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/l5d-tunnel/l5d-tunnel/manifests"
)

const serverLong = `Output the Kubernetes manifests of the tunnel server for link NAME, for the cloud cluster.

NAME is the cluster name the link uses ('linkerd multicluster link --cluster-name NAME').
Run once per linked cluster, after 'install', with the cloud cluster as the current
context. The output holds the tunnel server Deployment, the binding Services the
webhook points the link at, the websocket Service the tunnel client dials, an Ingress
for it when --ingress-host is given, and the token Secret.

The token is the tunnel's only credential. When the cluster already holds the link's
token Secret, its token is reused, so running this again and applying the output
changes nothing; --rotate-token writes a new one (then run 'client' again for the home
cluster). The cluster must be reachable to read the Secret; --ignore-cluster renders a
fresh token without reading it (applying that replaces a token in use).

The output is the chart ` + "`" + manifests.ChartServer + "`" + ` rendered with the flags below and Helm-style
overrides (-f/--values, --set, --set-string, --set-file).`

const serverExamples = `  # Tunnel server for link "home", reached through ingress-nginx with a TLS certificate.
  linkerd tunnel --context cloud server home --ingress-host home.tunnel.example.com \
    --ingress-class nginx --ingress-tls-secret home-tunnel-tls \
    --ingress-annotation nginx.ingress.kubernetes.io/proxy-read-timeout=3600 \
    | kubectl --context cloud apply -f -

  # A new token (the tunnel client must be re-rendered with it).
  linkerd tunnel --context cloud server home --ingress-host home.tunnel.example.com --rotate-token \
    | kubectl --context cloud apply -f -`

// maxLinkName keeps the longest object name the charts derive from a link
// (<link>-tunnel-server-gateway) within a DNS label.
const maxLinkName = validation.DNS1123LabelMaxLength - len("-tunnel-server-gateway")

// checkLinkName validates the NAME argument.
func checkLinkName(name string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return UsageErrorf("link NAME %q: %s", name, errs[0])
	}
	if len(name) > maxLinkName {
		return UsageErrorf("link NAME %q: at most %d characters (the chart names objects <NAME>-tunnel-server-gateway)", name, maxLinkName)
	}
	return nil
}

type serverFlags struct {
	ingressHost, ingressClass, ingressTLS string
	annotations                           []string
	rotate, ignoreCluster                 bool
}

// ingressValues turns the --ingress-* flags into chart values.
func (s *serverFlags) ingressValues(cmd *cobra.Command) (map[string]any, error) {
	fs := cmd.Flags()
	typed := map[string]any{}
	if !fs.Changed("ingress-host") {
		for _, name := range []string{"ingress-class", "ingress-tls-secret", "ingress-annotation"} {
			if fs.Changed(name) {
				return nil, UsageErrorf("--%s needs --ingress-host", name)
			}
		}
		return typed, nil
	}
	if errs := validation.IsDNS1123Subdomain(s.ingressHost); len(errs) > 0 {
		return nil, UsageErrorf("--ingress-host %q is not a host name: %s", s.ingressHost, errs[0])
	}
	typed["ingress.enabled"] = true
	typed["ingress.host"] = s.ingressHost
	if fs.Changed("ingress-class") {
		if errs := validation.IsDNS1123Subdomain(s.ingressClass); len(errs) > 0 {
			return nil, UsageErrorf("--ingress-class %q: %s", s.ingressClass, errs[0])
		}
		typed["ingress.className"] = s.ingressClass
	}
	if fs.Changed("ingress-tls-secret") {
		if errs := validation.IsDNS1123Subdomain(s.ingressTLS); len(errs) > 0 {
			return nil, UsageErrorf("--ingress-tls-secret %q is not a Secret name: %s", s.ingressTLS, errs[0])
		}
		typed["ingress.tlsSecretName"] = s.ingressTLS
	}
	if len(s.annotations) > 0 {
		ann := map[string]any{}
		for _, a := range s.annotations {
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				return nil, UsageErrorf("--ingress-annotation %q: want KEY=VALUE", a)
			}
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				return nil, UsageErrorf("--ingress-annotation %q: key %q: %s", a, k, errs[0])
			}
			ann[k] = v
		}
		typed["ingress.annotations"] = ann
	}
	return typed, nil
}

func newServerCmd(g *Globals) *cobra.Command {
	f := &chartFlags{chart: manifests.ChartServer}
	s := &serverFlags{}
	cmd := &cobra.Command{
		Use:     "server NAME [flags]",
		Short:   "Output the manifests of the tunnel server for link NAME (cloud cluster, per link)",
		Long:    serverLong,
		Example: serverExamples,
		Args:    argsExactly(1, "one argument, the link NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			link := args[0]
			if err := checkLinkName(link); err != nil {
				return err
			}
			if s.rotate && s.ignoreCluster {
				return UsageErrorf("--rotate-token and --ignore-cluster: give one (both render a fresh token)")
			}
			typed, err := s.ingressValues(cmd)
			if err != nil {
				return err
			}
			return f.renderWithToken(cmd, typed, map[string]any{"link": link}, func() (string, error) {
				return s.token(cmd, g, link, f.namespace)
			})
		},
	}
	fs := cmd.Flags()
	f.add(fs, "Namespace of the extension in the cloud cluster (where 'install' put the webhook)")
	fs.StringVar(&s.ingressHost, "ingress-host", "", "Host name of an Ingress for the websocket endpoint (no Ingress when empty)")
	fs.StringVar(&s.ingressClass, "ingress-class", "", "IngressClass of the Ingress (default: the cluster's default class)")
	fs.StringVar(&s.ingressTLS, "ingress-tls-secret", "", "Secret holding the Ingress's TLS certificate for --ingress-host")
	fs.StringArrayVar(&s.annotations, "ingress-annotation", nil, "Annotation KEY=VALUE on the Ingress (repeatable)")
	fs.BoolVar(&s.rotate, "rotate-token", false, "Render a new token instead of the one in the cluster")
	fs.BoolVar(&s.ignoreCluster, "ignore-cluster", false, "Do not read the cluster: render a fresh token (replaces the token in use when applied)")
	return cmd
}

// token returns the link's token: the one in the cluster, or a fresh one
// when the cluster has none, or --rotate-token, or --ignore-cluster.
func (s *serverFlags) token(cmd *cobra.Command, g *Globals, link, namespace string) (string, error) {
	log := g.logger(cmd.ErrOrStderr())
	if s.rotate || s.ignoreCluster {
		log.Debug("fresh token", "link", link, "rotate-token", s.rotate, "ignore-cluster", s.ignoreCluster)
		return newToken()
	}
	ref, err := findTokenRef(link, namespace)
	if err != nil {
		return "", err
	}
	c, err := g.Client()
	if err == nil {
		var tok string
		tok, err = readToken(cmd.Context(), c, ref)
		if err == nil {
			log.Debug("reusing the token in the cluster", "secret", ref.String(), "key", ref.Key)
			return tok, nil
		}
	}
	var none *errNoToken
	if errors.As(err, &none) {
		log.Debug("no token in the cluster: fresh token", "reason", err.Error())
		return newToken()
	}
	return "", fmt.Errorf("cannot read the token %s from %s: %w\n"+
		"(the token in the cluster is reused so that re-running changes nothing; pass --ignore-cluster to render a fresh one without reading, or --rotate-token to replace it)",
		ref, g.where(), err)
}
