package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
	"github.com/l5d-tunnel/l5d-tunnel/manifests"
)

// WebhookNamespace is the namespace the tests render the webhook chart
// into (the chart's documented namespace).
const WebhookNamespace = "l5d-tunnel"

// RenderKinds renders a chart of package manifests into namespace with
// values and keeps only the objects of the given kinds (all when none),
// in the chart's install order.
func RenderKinds(chart, namespace string, values map[string]any, kinds ...string) ([]byte, error) {
	raw, err := manifests.Render(chart, namespace, values)
	if err != nil {
		return nil, err
	}
	var out strings.Builder
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		doc = strings.TrimPrefix(doc, "---\n")
		var head struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("chart %s: %w", chart, err)
		}
		if len(kinds) == 0 || slices.Contains(kinds, head.Kind) {
			out.WriteString("---\n" + strings.TrimSuffix(doc, "\n") + "\n")
		}
	}
	if out.Len() == 0 {
		return nil, fmt.Errorf("chart %s renders no %v", chart, kinds)
	}
	return []byte(out.String()), nil
}

// WebhookConfiguration is the MutatingWebhookConfiguration exactly as the
// webhook chart renders it (the one source: the install ships it and the
// integration tests register it).
func WebhookConfiguration() ([]byte, error) {
	return RenderKinds(manifests.ChartWebhook, WebhookNamespace, nil, "MutatingWebhookConfiguration")
}

// WebhookRBAC is the webhook chart's Namespace, ServiceAccount and RBAC
// objects (what the webhook runs with), with rewriteNamespaces set to the
// given namespaces (none: the chart's default, linkerd-multicluster and
// linkerd).
func WebhookRBAC(rewriteNamespaces ...string) ([]byte, error) {
	return RenderKinds(manifests.ChartWebhook, WebhookNamespace, rewriteValues(rewriteNamespaces),
		"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
}

func rewriteValues(namespaces []string) map[string]any {
	if len(namespaces) == 0 {
		return nil
	}
	list := make([]any, len(namespaces))
	for i, n := range namespaces {
		list[i] = n
	}
	return map[string]any{"rewriteNamespaces": list}
}

// RenderKustomize renders a kustomization folder (absolute, or relative to
// the repository root) with the kustomize built into the cached kubectl. It
// is the one place that runs kustomize (the documented kustomize path over
// the rendered charts is tested with it).
func RenderKustomize(dir string) ([]byte, error) {
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(repo.Root(), dir)
	}
	bin, err := BinDir()
	if err != nil {
		return nil, fmt.Errorf("control-plane binaries: %w", err)
	}
	cmd := exec.Command(filepath.Join(bin, "kubectl"), "kustomize", dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
