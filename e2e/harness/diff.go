package harness

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
)

// Diff lists the leaf fields that differ between two versions of an object,
// as "~ path: old -> new", "+ path: new" and "- path: old" lines, sorted.
// Bookkeeping fields (managedFields, resourceVersion, uid, generation,
// creationTimestamp, last-applied-configuration) are left out; so is a
// Secret's data, which DiffKubeconfig shows without credentials.
func Diff(a, b *unstructured.Unstructured) []string {
	fa, fb := flatten(a), flatten(b)
	var lines []string
	for k, v := range fa {
		if w, ok := fb[k]; !ok {
			lines = append(lines, fmt.Sprintf("- %s: %s", k, v))
		} else if w != v {
			lines = append(lines, fmt.Sprintf("~ %s: %s -> %s", k, v, w))
		}
	}
	for k, w := range fb {
		if _, ok := fa[k]; !ok {
			lines = append(lines, fmt.Sprintf("+ %s: %s", k, w))
		}
	}
	sort.Strings(lines)
	return lines
}

func flatten(u *unstructured.Unstructured) map[string]string {
	c := u.DeepCopy()
	for _, f := range []string{"managedFields", "resourceVersion", "uid", "generation", "creationTimestamp"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(c.Object, "metadata", "annotations", "kubectl.kubernetes.io/last-applied-configuration")
	unstructured.RemoveNestedField(c.Object, "status")
	if c.GetKind() == "Secret" {
		unstructured.RemoveNestedField(c.Object, "data")
		unstructured.RemoveNestedField(c.Object, "stringData")
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, vv := range x {
				walk(prefix+"."+k, vv)
			}
		case []any:
			for i, vv := range x {
				walk(fmt.Sprintf("%s[%d]", prefix, i), vv)
			}
		case string:
			out[strings.TrimPrefix(prefix, ".")] = fmt.Sprintf("%q", x)
		default:
			out[strings.TrimPrefix(prefix, ".")] = fmt.Sprint(x)
		}
	}
	walk("", c.Object)
	return out
}

// DiffKubeconfig compares the kubeconfigs of two remote-kubeconfig Secrets by
// the current cluster's server and tls-server-name (never the credentials).
func DiffKubeconfig(a, b *unstructured.Unstructured) ([]string, error) {
	read := func(u *unstructured.Unstructured) (server, sni string, err error) {
		enc, _, _ := unstructured.NestedString(u.Object, "data", "kubeconfig")
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return "", "", err
		}
		cfg, err := clientcmd.Load(raw)
		if err != nil {
			return "", "", err
		}
		ctx := cfg.Contexts[cfg.CurrentContext]
		if ctx == nil || cfg.Clusters[ctx.Cluster] == nil {
			return "", "", fmt.Errorf("no current cluster")
		}
		return cfg.Clusters[ctx.Cluster].Server, cfg.Clusters[ctx.Cluster].TLSServerName, nil
	}
	s1, n1, err := read(a)
	if err != nil {
		return nil, err
	}
	s2, n2, err := read(b)
	if err != nil {
		return nil, err
	}
	var lines []string
	if s1 != s2 {
		lines = append(lines, fmt.Sprintf("~ kubeconfig server: %s -> %s", s1, s2))
	}
	if n1 != n2 {
		lines = append(lines, fmt.Sprintf("~ kubeconfig tls-server-name: %q -> %q", n1, n2))
	}
	return lines, nil
}
