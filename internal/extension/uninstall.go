package extension

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/manifests"
)

const uninstallLong = `Output the Kubernetes resources to delete to uninstall l5d-tunnel from the current cluster.

It lists, from the cluster, every object labelled ` + LabelExtension + `=` + Name + ` that deleting the
extension's Namespaces would not delete (the webhook configuration, cluster roles and
bindings, RoleBindings in Linkerd's namespaces, ...) followed by those Namespaces, for
'kubectl delete -f -'. Nothing that is not labelled as the extension's is listed, and
never one of Linkerd's namespaces. Run it in each cluster (cloud and home).

The kinds it looks for are the kinds the charts render.`

const uninstallExamples = `  # Cloud and home.
  linkerd tunnel --context cloud uninstall | kubectl --context cloud delete -f -
  linkerd tunnel --context home uninstall | kubectl --context home delete -f -`

func newUninstallCmd(g *Globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "uninstall [flags]",
		Short:   "Output the resources to delete to uninstall l5d-tunnel",
		Long:    uninstallLong,
		Example: uninstallExamples,
		Args:    argsExactly(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "yaml" && output != "json" {
				return UsageErrorf("--output %q: want yaml or json", output)
			}
			kinds, err := renderedKinds()
			if err != nil {
				return err
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			refs, err := uninstallList(cmd.Context(), c, kinds, g, g.logger(cmd.ErrOrStderr()))
			if err != nil {
				return fmt.Errorf("%s: %w", g.where(), err)
			}
			if len(refs) == 0 {
				return fmt.Errorf("no resources labelled %s=%s found to uninstall in %s", LabelExtension, Name, g.where())
			}
			return writeRefs(cmd.OutOrStdout(), refs, output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "Output format: yaml or json (one object per line)")
	return cmd
}

// renderedKinds renders every chart with every optional part on and returns
// the kinds they hold: the kinds the extension may have created.
func renderedKinds() ([]schema.GroupVersionKind, error) {
	const host = "link.example.com"
	charts := []struct {
		chart  string
		values map[string]any
	}{
		{manifests.ChartWebhook, nil},
		{manifests.ChartServer, map[string]any{
			"link": "link", "token.value": "token", "ingress.enabled": true, "ingress.host": host,
		}},
		{manifests.ChartClient, map[string]any{
			"link": "link", "token.value": "token", "serverURL": "wss://" + host + "/tunnel",
		}},
	}
	seen := map[schema.GroupVersionKind]bool{}
	var out []schema.GroupVersionKind
	for _, ch := range charts {
		stream, err := manifests.Render(ch.chart, DefaultNamespace, nestKeys(ch.values))
		if err != nil {
			return nil, fmt.Errorf("render chart %s: %w", ch.chart, err)
		}
		docs, err := splitYAML(stream)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(d, &u.Object); err != nil {
				return nil, err
			}
			gvk := u.GroupVersionKind()
			if gvk.Kind == "" {
				return nil, fmt.Errorf("chart %s renders an object without a kind", ch.chart)
			}
			if !seen[gvk] {
				seen[gvk] = true
				out = append(out, gvk)
			}
		}
	}
	return out, nil
}

// objectRef is what kubectl delete needs of an object.
type objectRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace,omitempty"`
	} `json:"metadata"`
}

func refOf(u *unstructured.Unstructured) objectRef {
	r := objectRef{APIVersion: u.GetAPIVersion(), Kind: u.GetKind()}
	r.Metadata.Name, r.Metadata.Namespace = u.GetName(), u.GetNamespace()
	return r
}

// linkerdNamespace tells one of Linkerd's own namespaces, which uninstall
// never lists even when (wrongly) labelled as this extension's.
func linkerdNamespace(g *Globals, ns *unstructured.Unstructured) bool {
	l := ns.GetLabels()
	return ns.GetName() == g.LinkerdNamespace || ns.GetName() == MulticlusterNamespace ||
		l["linkerd.io/is-control-plane"] == "true" || l["linkerd.io/control-plane-ns"] != ""
}

// uninstallList lists the objects of kinds labelled as the extension's that
// deleting its Namespaces would not delete, then those Namespaces: webhook
// configurations first (so nothing calls a webhook being deleted), then the
// other cluster-scoped objects, then namespaced ones.
func uninstallList(ctx context.Context, c client.Client, kinds []schema.GroupVersionKind, g *Globals, log *slog.Logger) ([]objectRef, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	ours := client.MatchingLabels{LabelExtension: Name}
	nsList := &unstructured.UnstructuredList{}
	nsList.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "NamespaceList"})
	if err := c.List(ctx, nsList, ours); err != nil {
		return nil, fmt.Errorf("list Namespaces: %w", err)
	}
	namespaces := map[string]bool{}
	var nsRefs []objectRef
	for i := range nsList.Items {
		ns := &nsList.Items[i]
		if linkerdNamespace(g, ns) {
			log.Warn("not listing a Linkerd namespace labelled as this extension's", "namespace", ns.GetName())
			continue
		}
		namespaces[ns.GetName()] = true
		nsRefs = append(nsRefs, refOf(ns))
	}
	var hooks, cluster, namespaced []objectRef
	for _, gvk := range kinds {
		if gvk.Group == "" && gvk.Kind == "Namespace" {
			continue
		}
		mapping, err := c.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			log.Debug("kind not served, skipped", "kind", gvk.String())
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kind %s: %w", gvk, err)
		}
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := c.List(ctx, list, ours); err != nil {
			return nil, fmt.Errorf("list %s: %w", mapping.Resource.GroupResource(), err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			switch {
			case mapping.Scope.Name() == meta.RESTScopeNameNamespace:
				if !namespaces[u.GetNamespace()] {
					namespaced = append(namespaced, refOf(u))
				}
			case gvk.Group == "admissionregistration.k8s.io":
				hooks = append(hooks, refOf(u))
			default:
				cluster = append(cluster, refOf(u))
			}
		}
	}
	for _, s := range [][]objectRef{hooks, cluster, namespaced, nsRefs} {
		sort.SliceStable(s, func(i, j int) bool { return refKey(s[i]) < refKey(s[j]) })
	}
	out := append(append(append(hooks, cluster...), namespaced...), nsRefs...)
	return out, nil
}

func refKey(r objectRef) string {
	return r.Kind + "/" + r.Metadata.Namespace + "/" + r.Metadata.Name
}

// writeRefs prints refs as a YAML stream or one JSON object per line.
func writeRefs(w io.Writer, refs []objectRef, format string) error {
	for _, r := range refs {
		var b []byte
		var err error
		if format == "json" {
			b, err = json.Marshal(r)
			b = append(b, '\n')
		} else {
			b, err = yaml.Marshal(r)
			b = append([]byte("---\n"), b...)
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
