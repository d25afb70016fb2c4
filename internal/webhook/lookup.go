package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// ErrCacheNotSynced is returned while the informers have not synced yet.
var ErrCacheNotSynced = errors.New("informer cache not synced")

// Bindings finds the tunnel binding of a cluster. A nil binding and nil
// error mean the cluster has no (usable) binding.
type Bindings interface {
	Binding(ctx context.Context, cluster string) (*mutate.Binding, error)
}

// Namespaces tells whether a namespace opted in to rewriting.
type Namespaces interface {
	OptedIn(ctx context.Context, namespace string) (bool, error)
}

// CacheLookup answers both questions from the manager's cache: binding
// Services come from an informer restricted to the trusted namespaces and
// to Services labelled l5d-tunnel.io/link; namespaces from a metadata-only
// informer restricted to l5d-tunnel.io/rewrite=enabled. With
// GatewayAddresses, bindings carry the ready addresses of their headless
// Service, from an EndpointSlice informer restricted to the trusted
// namespaces.
type CacheLookup struct {
	Cache   cache.Cache
	Trusted []string
	// RewriteNamespaces are opted in by name (Options.RewriteNamespaces).
	RewriteNamespaces []string
	GatewayAddresses  bool
	synced            atomic.Bool
}

var (
	_ Bindings   = (*CacheLookup)(nil)
	_ Namespaces = (*CacheLookup)(nil)
)

// waitSynced blocks until the informers have synced or ctx ends.
func (l *CacheLookup) waitSynced(ctx context.Context) error {
	if l.synced.Load() {
		return nil
	}
	if !l.Cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("%w: %w", ErrCacheNotSynced, context.Cause(ctx))
	}
	l.synced.Store(true)
	return nil
}

// BindingServices lists the trusted Services labelled for cluster ("" for
// every cluster).
func (l *CacheLookup) BindingServices(ctx context.Context, cluster string) ([]corev1.Service, error) {
	if err := l.waitSynced(ctx); err != nil {
		return nil, err
	}
	var out []corev1.Service
	for _, ns := range l.Trusted {
		var list corev1.ServiceList
		// Read-only use (FindBinding never writes): no deep copies.
		opts := []client.ListOption{client.InNamespace(ns), client.UnsafeDisableDeepCopy}
		if cluster != "" {
			opts = append(opts, client.MatchingLabels{mutate.LabelLink: cluster})
		} else {
			opts = append(opts, client.HasLabels{mutate.LabelLink})
		}
		if err := l.Cache.List(ctx, &list, opts...); err != nil {
			return nil, fmt.Errorf("list binding Services in %q: %w", ns, err)
		}
		out = append(out, list.Items...)
	}
	return out, nil
}

// Binding implements Bindings.
func (l *CacheLookup) Binding(ctx context.Context, cluster string) (*mutate.Binding, error) {
	svcs, err := l.BindingServices(ctx, cluster)
	if err != nil {
		return nil, err
	}
	b, err := mutate.FindBinding(cluster, svcs, l.Trusted)
	if err != nil || b == nil {
		return b, err
	}
	if err := l.withReadyAddresses(ctx, b); err != nil {
		return nil, err
	}
	return b, nil
}

// withReadyAddresses sets b.GatewayAddresses from the cached EndpointSlices
// of b's headless Service (nothing when GatewayAddresses is off).
func (l *CacheLookup) withReadyAddresses(ctx context.Context, b *mutate.Binding) error {
	if !l.GatewayAddresses || b == nil {
		return nil
	}
	var list discoveryv1.EndpointSliceList
	// Read-only use (ReadyAddresses never writes): no deep copies.
	if err := l.Cache.List(ctx, &list, client.InNamespace(b.Namespace), client.UnsafeDisableDeepCopy,
		client.MatchingLabels{mutate.LabelServiceName: b.Headless}); err != nil {
		return fmt.Errorf("list EndpointSlices of %s/%s: %w", b.Namespace, b.Headless, err)
	}
	b.GatewayAddresses = mutate.ReadyAddresses(b, list.Items)
	return nil
}

// OptedIn implements Namespaces.
func (l *CacheLookup) OptedIn(ctx context.Context, namespace string) (bool, error) {
	if err := l.waitSynced(ctx); err != nil {
		return false, err
	}
	ns := namespaceMeta()
	if err := l.Cache.Get(ctx, types.NamespacedName{Name: namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("get namespace %q: %w", namespace, err)
	}
	return l.optedIn(ns), nil
}

// optedIn is mutate.OptedIn for a cached Namespace.
func (l *CacheLookup) optedIn(ns *metav1.PartialObjectMetadata) bool {
	return mutate.OptedIn(ns.Name, ns.GetLabels(), l.RewriteNamespaces)
}

// OptedInNamespaces lists the opted-in namespaces, sorted.
func (l *CacheLookup) OptedInNamespaces(ctx context.Context) ([]string, error) {
	if err := l.waitSynced(ctx); err != nil {
		return nil, err
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := l.Cache.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list opted-in namespaces: %w", err)
	}
	var out []string
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp == nil && l.optedIn(&list.Items[i]) {
			out = append(out, list.Items[i].Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// namespaceMeta is an empty metadata-only Namespace.
func namespaceMeta() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}
