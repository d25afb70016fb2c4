package mutate

import (
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Kind is what a link object is to this package.
type Kind string

// The kinds of objects Classify tells apart.
const (
	KindNone        Kind = ""            // not an object this package rewrites
	KindProbe       Kind = "probe"       // the probe Service
	KindLink        Kind = "link"        // a multicluster.linkerd.io Link
	KindCredentials Kind = "credentials" // a remote-kubeconfig Secret
)

// Classify tells which kind of link object obj is and which cluster it
// belongs to. Objects this package must never touch (mirror Services,
// headless and endpoint mirrors, remote-discovery and federated Services,
// Endpoints, anything else) return KindNone.
//
//   - KindProbe: a v1 Service labelled mirror.linkerd.io/mirrored-gateway=true
//     with a mirror.linkerd.io/cluster-name label, and none of the labels or
//     annotations of mirror, endpoint-mirror, remote-discovery or federated
//     Services. It is recognised by labels, never by name.
//   - KindLink: a Link of API group multicluster.linkerd.io (any version);
//     the cluster is spec.targetClusterName, or metadata.name without it.
//   - KindCredentials: a v1 Secret of type mirror.linkerd.io/remote-kubeconfig;
//     the cluster is its multicluster.linkerd.io/cluster-name label (the copy
//     in the linkerd namespace), or the name after "cluster-credentials-".
//
// Whether the object's namespace opted in is for the caller to check.
func Classify(obj *unstructured.Unstructured) (Kind, string) {
	if obj == nil || obj.Object == nil {
		return KindNone, ""
	}
	gv, err := schema.ParseGroupVersion(obj.GetAPIVersion())
	if err != nil {
		return KindNone, ""
	}
	kind := obj.GetKind()
	switch {
	case gv.Group == "" && gv.Version == "v1" && kind == "Service":
		return classifyService(obj)
	case gv.Group == "" && gv.Version == "v1" && kind == "Secret":
		return classifySecret(obj)
	case gv.Group == LinkGroup && kind == LinkKind:
		if c, ok := nestedString(obj.Object, "spec", "targetClusterName"); ok && c != "" {
			return KindLink, c
		}
		if n := stringAt(obj.Object, "metadata", "name"); n != "" {
			return KindLink, n
		}
		return KindNone, ""
	}
	return KindNone, ""
}

func classifyService(obj *unstructured.Unstructured) (Kind, string) {
	labels := stringMapAt(obj.Object, "metadata", "labels")
	if labels[LinkerdLabelMirroredGateway] != "true" {
		return KindNone, ""
	}
	cluster := labels[LinkerdLabelClusterName]
	if cluster == "" {
		return KindNone, ""
	}
	for _, l := range []string{LinkerdLabelMirroredService, LinkerdLabelHeadlessMirror, LinkerdLabelRemoteDiscovery} {
		if _, ok := labels[l]; ok {
			return KindNone, ""
		}
	}
	ann := stringMapAt(obj.Object, "metadata", "annotations")
	for _, a := range []string{LinkerdAnnotationRemoteDiscovery, LinkerdAnnotationLocalDiscovery} {
		if _, ok := ann[a]; ok {
			return KindNone, ""
		}
	}
	return KindProbe, cluster
}

func classifySecret(obj *unstructured.Unstructured) (Kind, string) {
	if t, _ := obj.Object["type"].(string); t != LinkerdSecretTypeKubeconfig {
		return KindNone, ""
	}
	if c := stringMapAt(obj.Object, "metadata", "labels")[LinkerdLabelMCClusterName]; c != "" {
		return KindCredentials, c
	}
	name := stringAt(obj.Object, "metadata", "name")
	if c, ok := strings.CutPrefix(name, LinkerdCredentialsNamePrefix); ok && c != "" {
		return KindCredentials, c
	}
	return KindNone, ""
}

// nestedString returns the string at path; ok is false when it is absent or
// not a string.
func nestedString(obj map[string]any, path ...string) (string, bool) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		cur, ok = m[p]
		if !ok {
			return "", false
		}
	}
	s, ok := cur.(string)
	return s, ok
}

func stringAt(obj map[string]any, path ...string) string {
	s, _ := nestedString(obj, path...)
	return s
}

// stringMapAt returns the string values of the map at path (other values are
// skipped); nil when absent or not a map.
func stringMapAt(obj map[string]any, path ...string) map[string]string {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	m, ok := cur.(map[string]any)
	if !ok {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

// RewrittenFor returns the value of AnnotationRewrittenFor (the binding an
// object was rewritten for, "<namespace>/<Service>") and whether obj carries
// it. Nothing in this module calls it yet (the reconciler restores through
// Mutate, which reads the annotation itself); it is the public way for a tool
// such as the coming linkerd-tunnel CLI to tell a rewritten object.
func RewrittenFor(obj *unstructured.Unstructured) (string, bool) {
	if obj == nil || obj.Object == nil {
		return "", false
	}
	ann, err := annotationsOf(obj)
	if err != nil {
		return "", false
	}
	v, ok := ann[AnnotationRewrittenFor]
	return v, ok
}
