package extension

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Name is the extension's name: `linkerd tunnel ...` runs linkerd-tunnel, and
// every object the extension installs carries LabelExtension=Name.
const Name = "tunnel"

// LabelExtension on a Namespace is how `linkerd check` finds installed
// extensions; the extension also puts it on every object it renders, which is
// how uninstall finds them.
const LabelExtension = "linkerd.io/extension"

// Globals are the flags every Linkerd extension accepts (EXTENSIONS.md in
// the linkerd2 repository). The linkerd CLI passes them after the extension's
// own arguments, e.g. `linkerd-tunnel check --output json --kubeconfig K
// --as-group=[]`.
type Globals struct {
	APIAddr          string
	Context          string
	As               string
	AsGroups         []string
	Kubeconfig       string
	LinkerdNamespace string
	Verbose          bool
}

// AddFlags registers the global flags on fs (a root command's persistent
// flags). LINKERD_NAMESPACE sets the default of --linkerd-namespace.
func (g *Globals) AddFlags(fs *pflag.FlagSet) {
	ns := os.Getenv("LINKERD_NAMESPACE")
	if ns == "" {
		ns = "linkerd"
	}
	fs.StringVar(&g.APIAddr, "api-addr", "", "Override the Kubernetes API server address in the kubeconfig file")
	fs.StringVar(&g.Context, "context", "", "Name of the kubeconfig context to use")
	fs.StringVar(&g.As, "as", "", "Username to impersonate for Kubernetes operations")
	fs.StringArrayVar(&g.AsGroups, "as-group", nil, "Group to impersonate for Kubernetes operations")
	fs.StringVar(&g.Kubeconfig, "kubeconfig", "", "Path to the kubeconfig file to use for CLI requests")
	fs.StringVarP(&g.LinkerdNamespace, "linkerd-namespace", "L", ns, "Namespace in which Linkerd is installed ($LINKERD_NAMESPACE)")
	fs.BoolVar(&g.Verbose, "verbose", false, "Turn on debug logging")
}

// groups drops the "[]" that the linkerd CLI passes for an empty --as-group.
func (g *Globals) groups() []string {
	var out []string
	for _, s := range g.AsGroups {
		if s != "" && s != "[]" {
			out = append(out, s)
		}
	}
	return out
}

// RESTConfig builds the client configuration the global flags describe:
// --kubeconfig (else $KUBECONFIG, else ~/.kube/config, else in-cluster),
// --context, --api-addr, --as and --as-group.
func (g *Globals) RESTConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = g.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: g.Context}
	if g.APIAddr != "" {
		overrides.ClusterInfo.Server = g.APIAddr
	}
	overrides.AuthInfo.Impersonate = g.As
	overrides.AuthInfo.ImpersonateGroups = g.groups()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// Client is a controller-runtime client (no cache) for the cluster the
// global flags name.
func (g *Globals) Client() (client.Client, error) {
	cfg, err := g.RESTConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	return c, nil
}

// where names the cluster the global flags select, for messages: the
// kubeconfig context (and --api-addr when given).
func (g *Globals) where() string {
	name := g.Context
	if name == "" {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = g.Kubeconfig
		if raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).RawConfig(); err == nil {
			name = raw.CurrentContext
		}
	}
	s := "the current context"
	if name != "" {
		s = "context " + name
	}
	if g.APIAddr != "" {
		s += " at " + g.APIAddr
	}
	return s
}
