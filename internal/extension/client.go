package extension

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
	"github.com/l5d-tunnel/l5d-tunnel/manifests"
)

const clientLong = `Output the Kubernetes manifests of the tunnel client for link NAME, for the home cluster.

Run it with the CLOUD cluster as the current context (--context), and apply the output
to the HOME cluster: like 'linkerd multicluster link' reads the credentials of the
cluster it links, this reads the link's token from the tunnel server's Secret in the
cloud cluster (written by 'server NAME'), so no secret is copied by hand.

--server-url is the tunnel server's websocket endpoint as the home cluster reaches it:
wss://HOST/tunnel behind the Ingress of 'server --ingress-host HOST' (the path
defaults to /tunnel). --ca-file trusts a private CA for it.

The output is the chart ` + "`" + manifests.ChartClient + "`" + ` rendered with the flags below and Helm-style
overrides (-f/--values, --set, --set-string, --set-file).`

const clientExamples = `  # Tunnel client for link "home": token read from the cloud, output applied to home.
  linkerd tunnel --context cloud client home --server-url wss://home.tunnel.example.com/tunnel \
    | kubectl --context home apply -f -

  # A server certificate issued by a private CA; the gateway in a custom namespace.
  linkerd tunnel --context cloud client home --server-url wss://10.1.2.3/tunnel --ca-file ca.crt \
    --upstream gateway=linkerd-gateway.mc.svc.cluster.local:4143 \
    --upstream probe=linkerd-gateway.mc.svc.cluster.local:4191 \
    | kubectl --context home apply -f -`

// upstreamNames are the tunnel listeners a client maps to upstreams (the
// chart's upstreams.* values).
var upstreamNames = []string{"api", "gateway", "probe"}

type clientFlags struct {
	serverURL       string
	caFile          string
	upstreams       []string
	serverNamespace string
}

func newClientCmd(g *Globals) *cobra.Command {
	f := &chartFlags{chart: manifests.ChartClient}
	c := &clientFlags{}
	cmd := &cobra.Command{
		Use:     "client NAME --server-url URL [flags]",
		Short:   "Output the manifests of the tunnel client for link NAME (home cluster; token read from the cloud)",
		Long:    clientLong,
		Example: clientExamples,
		Args:    argsExactly(1, "one argument, the link NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			link := args[0]
			if err := checkLinkName(link); err != nil {
				return err
			}
			typed, managed, err := c.values(link)
			if err != nil {
				return err
			}
			return f.renderWithToken(cmd, typed, managed, func() (string, error) {
				ref, err := findTokenRef(link, c.serverNamespace)
				if err != nil {
					return "", err
				}
				return c.token(cmd, g, ref, link)
			})
		},
	}
	fs := cmd.Flags()
	f.add(fs, "Namespace of the tunnel client in the home cluster")
	fs.StringVar(&c.serverURL, "server-url", "", "Websocket URL of the tunnel server, ws:// or wss:// (required; path default /tunnel)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM file of the CA that issued the server's certificate (default: the image's public roots)")
	fs.StringArrayVar(&c.upstreams, "upstream", nil,
		"NAME=HOST:PORT: where the client forwards the tunnel's listener NAME, one of "+strings.Join(upstreamNames, ", ")+" (repeatable; default: the chart's)")
	fs.StringVar(&c.serverNamespace, "server-namespace", DefaultNamespace, "Namespace of the tunnel server in the cloud cluster (where its token Secret is)")
	return cmd
}

// values checks the flags and returns the chart values they set: typed ones
// and managed ones (link, serverURL; renderWithToken adds token.value), which
// -f/--set may not set.
func (c *clientFlags) values(link string) (typed, managed map[string]any, err error) {
	if c.serverURL == "" {
		return nil, nil, UsageErrorf("--server-url is required (wss://HOST/tunnel of the tunnel server's Ingress)")
	}
	u, err := serverURL(c.serverURL)
	if err != nil {
		return nil, nil, UsageErrorf("--server-url %q: %v", c.serverURL, err)
	}
	if errs := validation.IsDNS1123Label(c.serverNamespace); len(errs) > 0 {
		return nil, nil, UsageErrorf("--server-namespace %q is not a namespace name: %s", c.serverNamespace, errs[0])
	}
	typed = map[string]any{}
	if c.caFile != "" {
		pemBytes, err := readCABundle(c.caFile)
		if err != nil {
			return nil, nil, UsageErrorf("--ca-file %s: %v", c.caFile, err)
		}
		typed["caBundle"] = string(pemBytes)
	}
	seen := map[string]bool{}
	for _, up := range c.upstreams {
		name, addr, ok := strings.Cut(up, "=")
		if !ok || !slices.Contains(upstreamNames, name) {
			return nil, nil, UsageErrorf("--upstream %q: want NAME=HOST:PORT with NAME one of %s", up, strings.Join(upstreamNames, ", "))
		}
		if seen[name] {
			return nil, nil, UsageErrorf("--upstream %s given twice", name)
		}
		seen[name] = true
		if host, _, err := cli.SplitHostPort(addr); err != nil || host == "" {
			return nil, nil, UsageErrorf("--upstream %q: want NAME=HOST:PORT", up)
		}
		typed["upstreams."+name] = addr
	}
	managed = map[string]any{"link": link, "serverURL": u}
	return typed, managed, nil
}

// serverURL checks a --server-url and returns it with the default path.
func serverURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return "", fmt.Errorf("want a ws:// or wss:// URL")
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("no host")
	}
	if u.User != nil || u.Fragment != "" {
		return "", fmt.Errorf("no user info or fragment allowed")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/tunnel"
	}
	return u.String(), nil
}

// readCABundle reads a PEM file and checks that it holds certificates only.
func readCABundle(file string) ([]byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	n := 0
	for rest := raw; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a %s block; want CERTIFICATE blocks only", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return raw, nil
}

// token reads the link's token from the cloud cluster (the current context).
func (c *clientFlags) token(cmd *cobra.Command, g *Globals, ref tokenRef, link string) (string, error) {
	cl, err := g.Client()
	if err == nil {
		var tok string
		tok, err = readToken(cmd.Context(), cl, ref)
		if err == nil {
			g.logger(cmd.ErrOrStderr()).Debug("token read from the cloud cluster", "secret", ref.String(), "key", ref.Key)
			return tok, nil
		}
	}
	var none *errNoToken
	if errors.As(err, &none) {
		return "", fmt.Errorf("no token for link %s in %s: %w\n"+
			"(run 'linkerd tunnel server %s' against the cloud cluster and apply its output first; "+
			"'client' reads the token from the cloud cluster, so --context must name the cloud)",
			link, g.where(), err, link)
	}
	return "", fmt.Errorf("cannot read the token %s from %s: %w\n"+
		"('client' reads the token from the cloud cluster, so --context must name the cloud)", ref, g.where(), err)
}
