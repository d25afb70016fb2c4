package mutate

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// credentialsRewriter points the kubeconfig of a credentials Secret at the
// binding's api port. client-go reads and validates the kubeconfig (as
// Linkerd's service mirror will read it); the edit changes only the bytes of
// server and tls-server-name of the current context's cluster entry (see
// kubeconfigDoc), and restore edits them back, so a kubeconfig comes back
// byte for byte. Errors and warnings never quote the kubeconfig.
type credentialsRewriter struct {
	data        map[string]any
	raw         []byte
	config      *clientcmdapi.Config
	cluster     *clientcmdapi.Cluster
	clusterName string
	doc         *kubeconfigDoc // parsed when first needed
}

var credentialsFields = []field{
	{FieldServer, true},
	{FieldTLSServerName, true},
}

func (c *credentialsRewriter) fields() []field { return credentialsFields }

func (c *credentialsRewriter) read(u *unstructured.Unstructured) (values, error) {
	if sd, ok := u.Object["stringData"].(map[string]any); ok {
		if _, ok := sd[LinkerdKubeconfigKey]; ok {
			return nil, fmt.Errorf("stringData.%s is set; only data.%s is rewritten", LinkerdKubeconfigKey, LinkerdKubeconfigKey)
		}
	}
	var ok bool
	if c.data, ok = u.Object["data"].(map[string]any); !ok {
		return nil, fmt.Errorf("data is a %s, want an object", jsonType(u.Object["data"]))
	}
	raw, ok := c.data[LinkerdKubeconfigKey]
	if !ok {
		return nil, fmt.Errorf("data.%s is missing", LinkerdKubeconfigKey)
	}
	enc, ok := raw.(string)
	if !ok {
		return nil, fmt.Errorf("data.%s is a %s, want a base64 string", LinkerdKubeconfigKey, jsonType(raw))
	}
	kc, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("data.%s is not valid base64", LinkerdKubeconfigKey)
	}
	c.raw = kc
	// The parse error is not quoted: it may contain pieces of the Secret.
	if c.config, err = clientcmd.Load(kc); err != nil {
		return nil, fmt.Errorf("data.%s does not parse as a kubeconfig", LinkerdKubeconfigKey)
	}
	if c.config.CurrentContext == "" {
		return nil, fmt.Errorf("the kubeconfig in data.%s has no current-context", LinkerdKubeconfigKey)
	}
	ctx, ok := c.config.Contexts[c.config.CurrentContext]
	if !ok || ctx == nil {
		return nil, fmt.Errorf("the kubeconfig in data.%s has no context named by its current-context", LinkerdKubeconfigKey)
	}
	if c.cluster, ok = c.config.Clusters[ctx.Cluster]; !ok || c.cluster == nil {
		return nil, fmt.Errorf("the kubeconfig in data.%s has no cluster named by its current context", LinkerdKubeconfigKey)
	}
	c.clusterName = ctx.Cluster
	v := values{}
	// client-go reads an empty string as absent; a quoted "" in the document
	// is reported as present so that restore writes it back.
	if c.cluster.Server != "" {
		v[FieldServer] = present(c.cluster.Server)
	} else if c.document().emptyString(FieldServer) {
		v[FieldServer] = present("")
	}
	if c.cluster.TLSServerName != "" {
		v[FieldTLSServerName] = present(c.cluster.TLSServerName)
	} else if c.document().emptyString(FieldTLSServerName) {
		v[FieldTLSServerName] = present("")
	}
	return v, nil
}

// document returns the parsed document (one without the cluster entry when
// it does not parse as YAML).
func (c *credentialsRewriter) document() *kubeconfigDoc {
	if c.doc == nil {
		var err error
		if c.doc, err = parseKubeconfigDoc(c.raw, c.clusterName); err != nil {
			c.doc = &kubeconfigDoc{src: c.raw}
		}
	}
	return c.doc
}

func (c *credentialsRewriter) tunnel(b *Binding, opts Options, orig values) (values, error) {
	out := values{FieldServer: present(b.APIServerURL(opts.ClusterDomain))}
	if tls := orig[FieldTLSServerName]; tls.ok && tls.text != "" {
		out[FieldTLSServerName] = tls
		return out, nil
	}
	host := serverHost(orig[FieldServer].text)
	switch {
	case host == "":
		return nil, fmt.Errorf("the server of the current context in data.%s is not a URL with a host, so the name the home API server's certificate was issued for is unknown (set tls-server-name in the kubeconfig)", LinkerdKubeconfigKey)
	case pointsAtTunnel(host, b, opts.ClusterDomain):
		// Users who followed the seed passed --api-server-address with the
		// tunnel's in-cluster name, which the home certificate does not have.
		out[FieldTLSServerName] = present(opts.DefaultTLSServerName)
	default:
		out[FieldTLSServerName] = present(host)
	}
	return out, nil
}

func (c *credentialsRewriter) write(u *unstructured.Unstructured, v values) error {
	// In the order of the fields, so that the edit does not depend on map order.
	set := make([]keyValue, 0, len(v))
	for _, f := range credentialsFields {
		if x, ok := v[f.key]; ok {
			set = append(set, keyValue{f.key, x})
		}
	}
	if len(set) != len(v) {
		return fmt.Errorf("internal error: unknown credentials field")
	}
	for _, kv := range set {
		switch kv.key {
		case FieldServer:
			c.cluster.Server = kv.v.text
		case FieldTLSServerName:
			c.cluster.TLSServerName = kv.v.text
		}
	}
	// The edit keeps the style of the values it replaces. When client-go
	// does not read the result as the wanted kubeconfig (a plain value that
	// YAML 1.1 reads as a boolean or a number, such as a host named "on"),
	// it is tried again with one value, then both, double-quoted.
	doc := c.document()
	for quote := uint(0); quote < 1<<len(set); quote++ {
		kc, err := doc.edit(set, quote)
		if err != nil {
			break
		}
		if got, err := clientcmd.Load(kc); err == nil && reflect.DeepEqual(got, c.config) {
			c.data[LinkerdKubeconfigKey] = base64.StdEncoding.EncodeToString(kc)
			return nil
		}
	}
	return fmt.Errorf("the cluster entry of the current context in data.%s cannot be edited in place (server and tls-server-name must be one-line values of that entry, without alias, anchor, tag or merge key, in an entry no other cluster shares)", LinkerdKubeconfigKey)
}

// serverHost returns the host name or IP of a kubeconfig server URL (a bare
// host[:port] is accepted, as client-go does), or "".
func serverHost(server string) string {
	if server == "" {
		return ""
	}
	if !strings.Contains(server, "://") {
		server = "https://" + server
	}
	u, err := url.Parse(server)
	if err != nil {
		return ""
	}
	h := u.Hostname()
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// pointsAtTunnel reports whether host is a cloud-cluster Service name rather
// than a name of the home API server: the binding's Services in any short or
// long form, or any *.svc / *.svc.<domain> name.
func pointsAtTunnel(host string, b *Binding, domain string) bool {
	if strings.HasSuffix(host, ".svc") || strings.HasSuffix(host, ".svc."+domain) {
		return true
	}
	for _, name := range []string{b.Service, b.Headless} {
		if host == name || host == name+"."+b.Namespace {
			return true
		}
	}
	return false
}
