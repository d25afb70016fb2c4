package extension

import (
	"encoding/csv"
	"fmt"
	"os"
	"strings"

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
// the linkerd2 repository). `linkerd check` passes every one whose value is
// not empty, as --name=value after the command, e.g. `linkerd-tunnel check
// --as-group=[] --kubeconfig=K --linkerd-namespace=linkerd --verbose=false
// --proxy=false --wait=5m0s --output=json` (checked with the real CLI).
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
	fs.StringVar(&g.APIAddr, "api-addr", "", "Address of Linkerd's control-plane API (accepted as every extension must; unused: this extension talks to the Kubernetes API only, from the kubeconfig, as linkerd's own checks do)")
	fs.StringVar(&g.Context, "context", "", "Name of the kubeconfig context to use")
	fs.StringVar(&g.As, "as", "", "Username to impersonate for Kubernetes operations")
	fs.StringArrayVar(&g.AsGroups, "as-group", nil, "Group to impersonate for Kubernetes operations")
	fs.StringVar(&g.Kubeconfig, "kubeconfig", "", "Path to the kubeconfig file to use for CLI requests")
	fs.StringVarP(&g.LinkerdNamespace, "linkerd-namespace", "L", ns, "Namespace in which Linkerd is installed ($LINKERD_NAMESPACE)")
	fs.BoolVar(&g.Verbose, "verbose", false, "Turn on debug logging")
}

// groups are the --as-group values. The linkerd CLI passes its own
// --as-group on in pflag's string-array form: one value "[g1,g2]", a CSV
// record in brackets ("[]" for none); a value written by a user is one
// group.
func (g *Globals) groups() ([]string, error) {
	var out []string
	for _, s := range g.AsGroups {
		if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
			if s != "" {
				out = append(out, s)
			}
			continue
		}
		inner := s[1 : len(s)-1]
		if inner == "" {
			continue
		}
		rec, err := csv.NewReader(strings.NewReader(inner)).Read()
		if err != nil {
			return nil, fmt.Errorf("--as-group %q: %w", s, err)
		}
		for _, r := range rec {
			if r != "" {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// RESTConfig builds the client configuration the global flags describe:
// --kubeconfig (else $KUBECONFIG, else ~/.kube/config, else in-cluster),
// --context, --as and --as-group.
func (g *Globals) RESTConfig() (*rest.Config, error) {
	groups, err := g.groups()
	if err != nil {
		return nil, err
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = g.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: g.Context}
	overrides.AuthInfo.Impersonate = g.As
	overrides.AuthInfo.ImpersonateGroups = groups
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
// kubeconfig context.
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
	return s
}
