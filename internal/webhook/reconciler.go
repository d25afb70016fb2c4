package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// Reconciler brings the link objects of one opted-in namespace (the request
// name) to the state the webhook would produce: rewritten for the binding of
// their cluster, or restored from the l5d-tunnel.io/ annotations when the
// cluster has no binding. It runs on the elected leader only.
//
// It reads straight from the API server, one namespace at a time (Secrets
// are never cached cluster-wide: RBAC grants them per namespace), and
// updates only objects Mutate changes. A Forbidden in one namespace or for
// one kind is logged and the rest still reconciles.
type Reconciler struct {
	Lookup  *CacheLookup
	Reader  client.Reader // uncached reads (mgr.GetAPIReader())
	Writer  client.Writer
	Mapper  meta.RESTMapper
	Options mutate.Options
	Log     *slog.Logger
}

var _ reconcile.Reconciler = (*Reconciler)(nil)

// SetupWithManager registers the reconciler: binding Service events
// reconcile every opted-in namespace, Namespace events (including the
// periodic resync of the cache) reconcile that namespace.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		nss, err := r.Lookup.OptedInNamespaces(ctx)
		if err != nil {
			r.Log.Error("list opted-in namespaces", "error", err)
			return nil
		}
		out := make([]reconcile.Request, len(nss))
		for i, ns := range nss {
			out[i] = reconcile.Request{NamespacedName: types.NamespacedName{Name: ns}}
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("l5d-tunnel-rewrite").
		// One manager per process in the binary; the tests run several
		// in sequence, each with this controller.
		WithOptions(controller.Options{SkipNameValidation: ptr.To(true)}).
		WatchesRawSource(source.Kind(mgr.GetCache(), client.Object(namespaceMeta()), &handler.EnqueueRequestForObject{})).
		WatchesRawSource(source.Kind(mgr.GetCache(), client.Object(&corev1.Service{}), all)).
		Complete(r)
}

// Reconcile implements reconcile.Reconciler; req.Name is a namespace.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ns := req.Name
	log := r.Log.With("namespace", ns)
	in, err := r.Lookup.OptedIn(ctx, ns)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !in {
		// Objects in namespaces that opted out are left as they are.
		log.Debug("namespace did not opt in; skipped")
		return reconcile.Result{}, nil
	}
	bindings, err := r.bindings(ctx, log)
	if err != nil {
		return reconcile.Result{}, err
	}

	var errs []error
	for _, k := range []struct {
		kind mutate.Kind
		list func(context.Context, string) ([]unstructured.Unstructured, error)
	}{
		{mutate.KindLink, r.listLinks},
		{mutate.KindProbe, r.listProbes},
		{mutate.KindCredentials, r.listCredentials},
	} {
		objs, err := k.list(ctx, ns)
		if err != nil {
			if apierrors.IsForbidden(err) {
				// Least privilege: the namespace may be opted in without
				// RBAC for this kind. The others still reconcile.
				reconcileErrorsTotal.WithLabelValues(string(k.kind), "forbidden").Inc()
				log.Error("cannot list; skipped (grant the webhook access in this namespace)", "kind", string(k.kind), "error", err)
				continue
			}
			reconcileErrorsTotal.WithLabelValues(string(k.kind), "api").Inc()
			errs = append(errs, err)
			continue
		}
		for i := range objs {
			if err := r.reconcileObject(ctx, log, &objs[i], bindings); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return reconcile.Result{}, errors.Join(errs...)
}

// bindingResult is the outcome of FindBinding for one cluster.
type bindingResult struct {
	b   *mutate.Binding
	err error
}

// bindings finds the binding of every cluster that has labelled Services in
// the trusted namespaces. Clusters missing from the map have none.
func (r *Reconciler) bindings(ctx context.Context, log *slog.Logger) (map[string]bindingResult, error) {
	svcs, err := r.Lookup.BindingServices(ctx, "")
	if err != nil {
		return nil, err
	}
	var clusters []string
	for _, s := range svcs {
		if c := s.Labels[mutate.LabelLink]; c != "" && !slices.Contains(clusters, c) {
			clusters = append(clusters, c)
		}
	}
	out := make(map[string]bindingResult, len(clusters))
	usable := 0
	for _, c := range clusters {
		b, err := mutate.FindBinding(c, svcs, r.Lookup.Trusted)
		if errors.Is(err, mutate.ErrUntrustedBinding) {
			b, err = nil, nil
		}
		if err != nil {
			reconcileErrorsTotal.WithLabelValues("binding", "invalid").Inc()
			log.Error("tunnel binding unusable; objects of this cluster are left as they are", "cluster", c, "error", err)
		}
		if b != nil {
			usable++
		}
		out[c] = bindingResult{b, err}
	}
	bindingsGauge.Set(float64(usable))
	return out, nil
}

func (r *Reconciler) reconcileObject(ctx context.Context, log *slog.Logger, obj *unstructured.Unstructured, bindings map[string]bindingResult) error {
	kind, cluster := mutate.Classify(obj)
	if kind == mutate.KindNone {
		return nil
	}
	log = log.With("kind", string(kind), "name", obj.GetName(), "cluster", cluster)
	br := bindings[cluster]
	if br.err != nil {
		return nil // logged once per reconcile in bindings
	}
	out, changed, warnings, err := mutate.Mutate(obj, br.b, r.Options)
	for _, w := range warnings {
		log.Warn("rewrite warning", "warning", w)
	}
	if err != nil {
		reconcileErrorsTotal.WithLabelValues(string(kind), "invalid").Inc()
		log.Error("rewrite failed; left unchanged", "error", err)
		return nil
	}
	if !changed {
		return nil
	}
	action := "rewrite"
	if br.b == nil {
		action = "restore"
	}
	if err := r.Writer.Update(ctx, out); err != nil {
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			reconcileErrorsTotal.WithLabelValues(string(kind), "conflict").Inc()
			log.Debug("object changed while reconciling; retrying", "error", err)
		case apierrors.IsForbidden(err):
			reconcileErrorsTotal.WithLabelValues(string(kind), "forbidden").Inc()
			log.Error("cannot update; skipped (grant the webhook update in this namespace)", "error", err)
			return nil
		default:
			reconcileErrorsTotal.WithLabelValues(string(kind), "api").Inc()
		}
		return fmt.Errorf("%s %s %s/%s: %w", action, kind, obj.GetNamespace(), obj.GetName(), err)
	}
	reconcileUpdatesTotal.WithLabelValues(string(kind), action).Inc()
	log.Info("reconciled", "action", action, "binding", br.b.String())
	return nil
}

// listProbes lists the probe Services of ns (by label, as Classify).
func (r *Reconciler) listProbes(ctx context.Context, ns string) ([]unstructured.Unstructured, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceList"))
	if err := r.Reader.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{mutate.LinkerdLabelMirroredGateway: "true"}); err != nil {
		return nil, fmt.Errorf("list probe Services in %q: %w", ns, err)
	}
	return list.Items, nil
}

// listCredentials lists the remote-kubeconfig Secrets of ns, filtered by
// type on the server.
func (r *Reconciler) listCredentials(ctx context.Context, ns string) ([]unstructured.Unstructured, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	sel := fields.OneTermEqualSelector("type", mutate.LinkerdSecretTypeKubeconfig)
	if err := r.Reader.List(ctx, list, client.InNamespace(ns), client.MatchingFieldsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("list credentials Secrets in %q: %w", ns, err)
	}
	return list.Items, nil
}

// listLinks lists the Links of ns in the newest served version Mutate
// knows. No Link CRD means no Links.
func (r *Reconciler) listLinks(ctx context.Context, ns string) ([]unstructured.Unstructured, error) {
	gv, err := r.linkVersion()
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("find the served Link versions: %w", err)
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gv.WithKind(mutate.LinkKind + "List"))
	if err := r.Reader.List(ctx, list, client.InNamespace(ns)); err != nil {
		if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list Links (%s) in %q: %w", gv.Version, ns, err)
	}
	return list.Items, nil
}

// linkVersionsNewestFirst are the Link versions the reconciler lists, in
// order of preference (those whose shape pkg/mutate knows; the API server
// converts between them, the CRD uses no conversion webhook).
var linkVersionsNewestFirst = []string{"v1alpha3", "v1alpha2", "v1alpha1"}

// linkVersion picks the newest version of linkVersionsNewestFirst the API
// server serves.
func (r *Reconciler) linkVersion() (schema.GroupVersion, error) {
	gk := schema.GroupKind{Group: mutate.LinkGroup, Kind: mutate.LinkKind}
	for _, v := range linkVersionsNewestFirst {
		m, err := r.Mapper.RESTMapping(gk, v)
		if err == nil && m != nil {
			return m.GroupVersionKind.GroupVersion(), nil
		}
		if err != nil && !meta.IsNoMatchError(err) {
			return schema.GroupVersion{}, err
		}
	}
	return schema.GroupVersion{}, &meta.NoKindMatchError{GroupKind: gk, SearchedVersions: linkVersionsNewestFirst}
}
