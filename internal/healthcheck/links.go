package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// link is a Link as listed, with the version it was read in.
type link struct {
	obj     *unstructured.Unstructured
	version string
}

// listLinks lists the Links of every namespace in the newest version the
// API server serves; no Link CRD means no Links.
func (e *env) listLinks(ctx context.Context) ([]link, error) {
	versions := mutate.LinkVersions()
	slices.Reverse(versions)
	for _, v := range versions {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(schema.GroupVersionKind{Group: mutate.LinkGroup, Version: v, Kind: mutate.LinkKind + "List"})
		if err := e.c.List(ctx, list); err != nil {
			if meta.IsNoMatchError(err) {
				continue
			}
			return nil, fmt.Errorf("cannot list Links (%s/%s): %w", mutate.LinkGroup, v, err)
		}
		out := make([]link, 0, len(list.Items))
		for i := range list.Items {
			out = append(out, link{obj: &list.Items[i], version: v})
		}
		sort.Slice(out, func(i, j int) bool {
			return out[i].obj.GetNamespace()+"/"+out[i].obj.GetName() < out[j].obj.GetNamespace()+"/"+out[j].obj.GetName()
		})
		return out, nil
	}
	return nil, nil
}

// binding finds the tunnel binding of cluster among the Services labelled
// l5d-tunnel.io/link in every namespace, trusting the webhook's trusted
// namespaces only (mutate.FindBinding); with the webhook's
// --gateway-ready-addresses it carries the ready addresses, as the webhook
// computes them.
func (e *env) binding(ctx context.Context, cluster string) (*mutate.Binding, error) {
	var svcs corev1.ServiceList
	if err := e.c.List(ctx, &svcs, client.MatchingLabels{mutate.LabelLink: cluster}); err != nil {
		return nil, fmt.Errorf("cannot list Services labelled %s=%s: %w", mutate.LabelLink, cluster, err)
	}
	b, err := mutate.FindBinding(cluster, svcs.Items, e.wcfg.trusted)
	if err != nil || b == nil {
		return nil, err
	}
	if e.wcfg.gatewayAddresses {
		ready, err := e.readyAddresses(ctx, b)
		if err != nil {
			return nil, err
		}
		b.GatewayAddresses = ready
	}
	return b, nil
}

func (e *env) readyAddresses(ctx context.Context, b *mutate.Binding) ([]string, error) {
	var slices discoveryv1.EndpointSliceList
	if err := e.c.List(ctx, &slices, client.InNamespace(b.Namespace), client.MatchingLabels{mutate.LabelServiceName: b.Headless}); err != nil {
		return nil, fmt.Errorf("cannot list the EndpointSlices of %s/%s: %w", b.Namespace, b.Headless, err)
	}
	return mutate.ReadyAddresses(b, slices.Items), nil
}

// linkState carries what one Link's checks found: its later checks are
// skipped when its namespace or binding is not usable.
type linkState struct {
	l       link
	cluster string
	usable  bool
}

func (e *env) linkChecks() []Checker {
	if e.webhook == nil {
		return nil
	}
	links, err := e.listLinks(context.Background())
	if err != nil {
		return []Checker{{Description: "can list Links", Anchor: "links-list", Check: func(context.Context) error { return err }}}
	}
	var out []Checker
	for _, l := range links {
		_, cluster := mutate.Classify(l.obj)
		st := &linkState{l: l, cluster: cluster}
		name := l.obj.GetNamespace() + "/" + l.obj.GetName()
		out = append(out,
			Checker{Description: fmt.Sprintf("Link %s has a usable tunnel binding", name), Anchor: "link-binding", Check: st.guard(e.checkBinding(st))},
			Checker{Description: fmt.Sprintf("tunnel server of link %s is ready (a client is connected)", cluster), Anchor: "link-tunnel-ready", Retry: true, Surface: true, Check: st.need(e.checkTunnelReady(st))},
			Checker{Description: fmt.Sprintf("Link %s is rewritten for the tunnel", name), Anchor: "link-rewritten", Retry: true, Surface: true, Check: st.need(e.checkLinkRewritten(st))},
			Checker{Description: fmt.Sprintf("probe Service of link %s is rewritten for the tunnel", cluster), Anchor: "link-probe-rewritten", Retry: true, Surface: true, Check: st.need(e.checkProbeRewritten(st))},
			Checker{Description: fmt.Sprintf("credentials Secrets of link %s are rewritten for the tunnel", cluster), Anchor: "link-credentials-rewritten", Retry: true, Surface: true, Check: st.need(e.checkCredentialsRewritten(st))},
		)
	}
	return out
}

// guard records whether the Link's first check passed.
func (s *linkState) guard(f func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		err := f(ctx)
		s.usable = err == nil
		return err
	}
}

// need skips a check of a Link whose binding check failed (it said why).
func (s *linkState) need(f func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		if !s.usable {
			return errSkip
		}
		return f(ctx)
	}
}

func (e *env) checkBinding(st *linkState) func(context.Context) error {
	return func(ctx context.Context) error {
		ns := st.l.obj.GetNamespace()
		in, err := e.optedIn(ctx, ns)
		if err != nil {
			return err
		}
		if !in {
			return fmt.Errorf("namespace %s is not opted in, so the webhook leaves the link alone: %s", ns, e.optInHint(ns))
		}
		b, err := e.binding(ctx, st.cluster)
		switch {
		case errors.Is(err, mutate.ErrUntrustedBinding):
			return fmt.Errorf("%w: install the tunnel server with `linkerd tunnel server %s | kubectl apply -f -` (it goes to %s), or add the namespace to the webhook's trustedNamespaces",
				err, st.cluster, strings.Join(e.wcfg.trusted, ", "))
		case err != nil:
			return fmt.Errorf("%w: fix or reinstall the binding Services (`linkerd tunnel server %s | kubectl apply -f -`)", err, st.cluster)
		case b == nil:
			return fmt.Errorf("no Service is labelled %s=%s in the trusted namespaces (%s): install the tunnel server for this link (`linkerd tunnel server %s | kubectl apply -f -`)",
				mutate.LabelLink, st.cluster, strings.Join(e.wcfg.trusted, ", "), st.cluster)
		}
		return nil
	}
}

func (e *env) checkTunnelReady(st *linkState) func(context.Context) error {
	return func(ctx context.Context) error {
		b, err := e.binding(ctx, st.cluster)
		if err != nil || b == nil {
			return fmt.Errorf("the tunnel binding of cluster %s went away (%w)", st.cluster, err)
		}
		ready, err := e.readyAddresses(ctx, b)
		if err != nil {
			return err
		}
		if len(ready) == 0 {
			return fmt.Errorf("the headless Service %s/%s has no ready endpoint: no tunnel-server pod has a tunnel client connected (its /readyz is 200 only while a client session is up); check the tunnel client in the home cluster (`linkerd tunnel --context home check`) and the tunnel server's log (`kubectl logs -n %s -l %s=%s`)",
				b.Namespace, b.Headless, b.Namespace, mutate.LabelLink, st.cluster)
		}
		return nil
	}
}

// notRewritten checks that obj is as the webhook makes it for b: running
// pkg/mutate's decision on the live object must change nothing.
func (e *env) notRewritten(kind mutate.Kind, obj *unstructured.Unstructured, b *mutate.Binding) error {
	what := fmt.Sprintf("%s %s/%s", kindName(kind), obj.GetNamespace(), obj.GetName())
	out, changed, warns, err := mutate.Mutate(obj, b, e.wcfg.opts)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(warns) > 0 {
		return fmt.Errorf("the webhook cannot rewrite it: %s; fix the object (or the binding) as the warning says", strings.Join(warns, "; "))
	}
	if !changed {
		return nil
	}
	state := "is not rewritten"
	if f, ok := mutate.RewrittenFor(obj); ok {
		state = fmt.Sprintf("is rewritten for %s but out of date", f)
	}
	return fmt.Errorf("%s %s for binding %s (differs in %s): the webhook or its reconciler has not caught up; check the webhook's log, or re-apply the link (`linkerd multicluster link ... | kubectl apply -f -`) to have it rewritten",
		what, state, b, strings.Join(diffPaths(obj.Object, out.Object), ", "))
}

func kindName(k mutate.Kind) string {
	switch k {
	case mutate.KindLink:
		return "Link"
	case mutate.KindProbe:
		return "probe Service"
	case mutate.KindCredentials:
		return "credentials Secret"
	}
	return string(k)
}

func (e *env) liveBinding(ctx context.Context, cluster string) (*mutate.Binding, error) {
	b, err := e.binding(ctx, cluster)
	if err != nil || b == nil {
		return nil, fmt.Errorf("the tunnel binding of cluster %s went away (%w)", cluster, err)
	}
	return b, nil
}

func (e *env) checkLinkRewritten(st *linkState) func(context.Context) error {
	return func(ctx context.Context) error {
		b, err := e.liveBinding(ctx, st.cluster)
		if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(st.l.obj.GroupVersionKind())
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(st.l.obj), obj); err != nil {
			return fmt.Errorf("the Link %s/%s: %w", st.l.obj.GetNamespace(), st.l.obj.GetName(), err)
		}
		return e.notRewritten(mutate.KindLink, obj, b)
	}
}

func (e *env) checkProbeRewritten(st *linkState) func(context.Context) error {
	return func(ctx context.Context) error {
		b, err := e.liveBinding(ctx, st.cluster)
		if err != nil {
			return err
		}
		ns := st.l.obj.GetNamespace()
		var list corev1.ServiceList
		if err := e.c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{
			mutate.LinkerdLabelMirroredGateway: "true", mutate.LinkerdLabelClusterName: st.cluster}); err != nil {
			return fmt.Errorf("cannot list the probe Services of %s: %w", ns, err)
		}
		n := 0
		for i := range list.Items {
			u, err := toUnstructured(&list.Items[i], "Service")
			if err != nil {
				return err
			}
			if k, c := mutate.Classify(u); k != mutate.KindProbe || c != st.cluster {
				continue
			}
			n++
			if err := e.notRewritten(mutate.KindProbe, u, b); err != nil {
				return err
			}
		}
		if n == 0 {
			return fmt.Errorf("no probe Service of cluster %s in namespace %s (labels %s=true, %s=%s): re-run `linkerd multicluster link` for it",
				st.cluster, ns, mutate.LinkerdLabelMirroredGateway, mutate.LinkerdLabelClusterName, st.cluster)
		}
		return nil
	}
}

// checkCredentialsRewritten checks every credentials Secret of the cluster
// (the one next to the Link, and Linkerd 2.14+'s copy in the linkerd
// namespace). Their contents are read here only, never printed.
func (e *env) checkCredentialsRewritten(st *linkState) func(context.Context) error {
	return func(ctx context.Context) error {
		b, err := e.liveBinding(ctx, st.cluster)
		if err != nil {
			return err
		}
		var list corev1.SecretList
		if err := e.c.List(ctx, &list, client.MatchingFieldsSelector{
			Selector: fields.OneTermEqualSelector("type", mutate.LinkerdSecretTypeKubeconfig)}); err != nil {
			return fmt.Errorf("cannot list Secrets of type %s: %w", mutate.LinkerdSecretTypeKubeconfig, err)
		}
		n := 0
		for i := range list.Items {
			u, err := toUnstructured(&list.Items[i], "Secret")
			if err != nil {
				return err
			}
			if k, c := mutate.Classify(u); k != mutate.KindCredentials || c != st.cluster {
				continue
			}
			n++
			in, err := e.optedIn(ctx, u.GetNamespace())
			if err != nil {
				return err
			}
			if !in {
				return fmt.Errorf("credentials Secret %s/%s is in namespace %s, which is not opted in, so it still points at the home API server directly: %s",
					u.GetNamespace(), u.GetName(), u.GetNamespace(), e.optInHint(u.GetNamespace()))
			}
			if err := e.notRewritten(mutate.KindCredentials, u, b); err != nil {
				return err
			}
		}
		if n == 0 {
			return fmt.Errorf("no Secret of type %s for cluster %s: re-run `linkerd multicluster link` for it", mutate.LinkerdSecretTypeKubeconfig, st.cluster)
		}
		return nil
	}
}

func toUnstructured(obj runtime.Object, kind string) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion("v1")
	u.SetKind(kind)
	return u, nil
}

// diffPaths lists the paths where a and b differ (at most 8), without
// values: for a Secret they would be its contents.
func diffPaths(a, b map[string]any) []string {
	var out []string
	var walk func(prefix string, x, y any)
	walk = func(prefix string, x, y any) {
		xm, xok := x.(map[string]any)
		ym, yok := y.(map[string]any)
		if !xok || !yok {
			if fmt.Sprint(x) != fmt.Sprint(y) {
				out = append(out, prefix)
			}
			return
		}
		keys := map[string]bool{}
		for k := range xm {
			keys[k] = true
		}
		for k := range ym {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			walk(p, xm[k], ym[k])
		}
	}
	walk("", a, b)
	if len(out) > 8 {
		out = append(out[:8], "...")
	}
	return out
}
