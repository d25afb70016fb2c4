package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
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
//
// With Lookup.GatewayAddresses, changes of the ready addresses of a
// binding's headless Service (its EndpointSlices) reconcile every opted-in
// namespace Debounce after the first change: the changes of a rolling
// update fold into one or two Link writes. A Link is written only when its
// value really changes (an unchanged write still restarts older service
// mirrors' watchers), and a changed gatewayAddress is reported as an Event
// on the Link.
type Reconciler struct {
	Lookup   *CacheLookup
	Reader   client.Reader // uncached reads (mgr.GetAPIReader())
	Writer   client.Writer
	Mapper   meta.RESTMapper
	Events   events.EventRecorder // nil: no Events
	Options  mutate.Options
	Debounce time.Duration
	Log      *slog.Logger

	mu         sync.Mutex
	readyNames map[string]bool // binding labels of gatewayReadyGauge
}

// Event reasons on Links.
const (
	// EventGatewayAddressChanged: the reconciler changed the Link's
	// gatewayAddress (the ready tunnel-server addresses changed).
	EventGatewayAddressChanged = "GatewayAddressChanged"
)

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
	b := ctrl.NewControllerManagedBy(mgr).
		Named("l5d-tunnel-rewrite").
		// One manager per process in the binary; the tests run several
		// in sequence, each with this controller.
		WithOptions(controller.Options{SkipNameValidation: ptr.To(true)}).
		WatchesRawSource(source.Kind(mgr.GetCache(), client.Object(namespaceMeta()), &handler.EnqueueRequestForObject{})).
		WatchesRawSource(source.Kind(mgr.GetCache(), client.Object(&corev1.Service{}), all))
	if r.Lookup.GatewayAddresses {
		b = b.WatchesRawSource(source.Kind(mgr.GetCache(), client.Object(&discoveryv1.EndpointSlice{}), r.sliceHandler()))
	}
	return b.Complete(r)
}

// sliceHandler enqueues every opted-in namespace Debounce after an
// EndpointSlice of a binding's headless Service changed its ready
// addresses. The work queue keeps the earliest time of an item already
// waiting, so every change inside the window folds into that reconcile.
func (r *Reconciler) sliceHandler() handler.EventHandler {
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	enqueue := func(ctx context.Context, obj client.Object, q queue) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok || !r.isGatewaySlice(ctx, s) {
			return
		}
		nss, err := r.Lookup.OptedInNamespaces(ctx)
		if err != nil {
			r.Log.Error("list opted-in namespaces", "error", err)
			return
		}
		r.Log.Debug("ready gateway addresses changed", "namespace", s.Namespace, "slice", s.Name,
			"service", s.Labels[mutate.LabelServiceName], "ready", sliceReady(s), "debounce", r.Debounce.String())
		for _, ns := range nss {
			q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Name: ns}}, r.Debounce)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) { enqueue(ctx, e.Object, q) },
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			o, _ := e.ObjectOld.(*discoveryv1.EndpointSlice)
			n, _ := e.ObjectNew.(*discoveryv1.EndpointSlice)
			if o != nil && n != nil && o.DeletionTimestamp.Equal(n.DeletionTimestamp) &&
				o.Labels[mutate.LabelServiceName] == n.Labels[mutate.LabelServiceName] &&
				slices.Equal(sliceReady(o), sliceReady(n)) {
				return // the ready addresses did not change (resync, other conditions)
			}
			enqueue(ctx, e.ObjectNew, q)
		},
		DeleteFunc:  func(ctx context.Context, e event.DeleteEvent, q queue) { enqueue(ctx, e.Object, q) },
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q queue) { enqueue(ctx, e.Object, q) },
	}
}

// sliceReady is the ready addresses of one slice, as ReadyAddresses counts them.
func sliceReady(s *discoveryv1.EndpointSlice) []string {
	return mutate.ReadyAddresses(&mutate.Binding{Namespace: s.Namespace, Headless: s.Labels[mutate.LabelServiceName]},
		[]discoveryv1.EndpointSlice{*s})
}

// isGatewaySlice reports whether s belongs to the headless Service of a
// trusted binding (the webhook's own Service has slices in the same
// namespace; they are not a reason to reconcile).
func (r *Reconciler) isGatewaySlice(ctx context.Context, s *discoveryv1.EndpointSlice) bool {
	name := s.Labels[mutate.LabelServiceName]
	if name == "" {
		return false
	}
	svcs, err := r.Lookup.BindingServices(ctx, "")
	if err != nil {
		r.Log.Error("list binding Services", "error", err)
		return false
	}
	for _, svc := range svcs {
		if svc.Namespace == s.Namespace && svc.Name == name && svc.Spec.ClusterIP == corev1.ClusterIPNone {
			return true
		}
	}
	return false
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
	ready := map[string]int{}
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
			if err := r.Lookup.withReadyAddresses(ctx, b); err != nil {
				return nil, err
			}
			usable++
			ready[b.String()] = len(b.GatewayAddresses)
		}
		out[c] = bindingResult{b, err}
	}
	bindingsGauge.Set(float64(usable))
	if r.Lookup.GatewayAddresses {
		r.setReady(ready)
	}
	return out, nil
}

// setReady sets gatewayReadyGauge to ready and drops the bindings that are
// gone.
func (r *Reconciler) setReady(ready map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.readyNames {
		if _, ok := ready[name]; !ok {
			gatewayReadyGauge.DeleteLabelValues(name)
		}
	}
	r.readyNames = make(map[string]bool, len(ready))
	for name, n := range ready {
		gatewayReadyGauge.WithLabelValues(name).Set(float64(n))
		r.readyNames[name] = true
	}
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
	if kind == mutate.KindLink {
		r.linkUpdated(log, obj, out, br.b)
	}
	log.Info("reconciled", "action", action, "binding", br.b.String())
	return nil
}

// linkUpdated counts a Link update per binding and reports a changed
// gatewayAddress as an Event on the Link.
func (r *Reconciler) linkUpdated(log *slog.Logger, before, after *unstructured.Unstructured, b *mutate.Binding) {
	binding := b.String()
	if b == nil { // restored: the binding it was rewritten for
		binding = before.GetAnnotations()[mutate.AnnotationRewrittenFor]
	}
	was, _, _ := unstructured.NestedString(before.Object, "spec", "gatewayAddress")
	now, _, _ := unstructured.NestedString(after.Object, "spec", "gatewayAddress")
	if was == now {
		linkUpdatesTotal.WithLabelValues(binding, "same").Inc()
		return
	}
	linkUpdatesTotal.WithLabelValues(binding, "changed").Inc()
	log.Info("Link gatewayAddress changed", "from", was, "to", now)
	if r.Events == nil {
		return
	}
	var note string
	switch {
	case b == nil:
		note = fmt.Sprintf("gatewayAddress %s -> %s: restored, no tunnel binding", was, now)
	case len(b.GatewayAddresses) == 0:
		note = fmt.Sprintf("gatewayAddress %s -> %s: no ready tunnel-server address in %s/%s, using its name", was, now, b.Namespace, b.Headless)
	default:
		note = fmt.Sprintf("gatewayAddress %s -> %s: %d ready tunnel-server %s of %s/%s", was, now,
			len(b.GatewayAddresses), plural(len(b.GatewayAddresses), "address", "addresses"), b.Namespace, b.Headless)
	}
	r.Events.Eventf(after, nil, corev1.EventTypeNormal, EventGatewayAddressChanged, "Update", "%s", note)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
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
var linkVersionsNewestFirst = func() []string {
	v := mutate.LinkVersions()
	slices.Reverse(v)
	return v
}()

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
