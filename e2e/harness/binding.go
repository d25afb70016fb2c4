package harness

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// ParseBinding finds the binding Services of LinkName in raw YAML with
// mutate.FindBinding (a Service without a namespace is in TunnelNamespace,
// every namespace is trusted). The e2e also needs each port equal to its
// targetPort: cloud DNS maps the Service names straight to the pod (no
// kube-proxy), so callers use the Service port on the pod.
func ParseBinding(raw []byte) (Binding, error) {
	var b Binding
	objs, err := fixtures.Decode(raw)
	if err != nil {
		return b, fmt.Errorf("binding YAML: %w", err)
	}
	var svcs []corev1.Service
	var namespaces []string
	for _, o := range objs {
		if o.GetKind() != "Service" || o.GetLabels()[mutate.LabelLink] != LinkName {
			continue
		}
		svc := &corev1.Service{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, svc); err != nil {
			return b, fmt.Errorf("binding Service %s: %w", o.GetName(), err)
		}
		if svc.Namespace == "" {
			svc.Namespace = TunnelNamespace
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.IntValue() != 0 && p.TargetPort.IntValue() != int(p.Port) {
				return b, fmt.Errorf("binding Service %s port %s: port %d != targetPort %s; the e2e needs them equal",
					svc.Name, p.Name, p.Port, p.TargetPort.String())
			}
		}
		svcs = append(svcs, *svc)
		namespaces = append(namespaces, svc.Namespace)
		b.Objects = append(b.Objects, svc)
	}
	mb, err := mutate.FindBinding(LinkName, svcs, namespaces)
	if err == nil && mb == nil {
		err = fmt.Errorf("no Service labelled %s=%s", mutate.LabelLink, LinkName)
	}
	if err != nil {
		return b, fmt.Errorf("binding for %q: %w", LinkName, err)
	}
	b.Binding = *mb
	return b, nil
}

// CreateBinding creates the binding Services in cloud.
func (t *Topology) CreateBinding(ctx context.Context) error {
	for _, s := range t.Binding.Objects {
		obj := s.DeepCopy()
		if err := t.CloudCP.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create binding Service %s/%s: %w", obj.Namespace, obj.Name, err)
		}
	}
	return nil
}

// DeleteBinding deletes the binding Services from cloud and waits until they
// are gone.
func (t *Topology) DeleteBinding(ctx context.Context) error {
	for _, s := range t.Binding.Objects {
		obj := s.DeepCopy()
		if err := t.CloudCP.Client.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete binding Service %s/%s: %w", obj.Namespace, obj.Name, err)
		}
	}
	return nil
}
