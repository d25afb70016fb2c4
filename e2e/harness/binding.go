package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// LabelLink labels the two binding Services with the linked cluster's name.
const LabelLink = "l5d-tunnel.io/link"

// BindingYAML returns the binding Services as the shipped manifests render
// them for the cluster "home": `kubectl kustomize` of
// manifests/tunnel-server/overlays/example-home, keeping the Services
// labelled l5d-tunnel.io/link. It says where they came from.
func BindingYAML(repoRoot, kubectlBin string) ([]byte, string, error) {
	overlay := filepath.Join(repoRoot, "manifests", "tunnel-server", "overlays", "example-home")
	if _, err := os.Stat(overlay); err != nil {
		return nil, "", fmt.Errorf("tunnel-server overlay missing: %w", err)
	}
	out, err := exec.Command(kubectlBin, "kustomize", overlay).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return nil, "", fmt.Errorf("kubectl kustomize %s: %w", overlay, err)
	}
	return out, "kubectl kustomize manifests/tunnel-server/overlays/example-home", nil
}

// ParseBinding finds the binding Services of LinkName in raw YAML: a
// ClusterIP Service with ports api and probe, a headless one with gateway.
func ParseBinding(raw []byte) (Binding, error) {
	var b Binding
	objs, err := fixtures.Decode(raw)
	if err != nil {
		return b, fmt.Errorf("binding YAML: %w", err)
	}
	for _, o := range objs {
		if o.GetKind() != "Service" || o.GetLabels()[LabelLink] != LinkName {
			continue
		}
		svc := &corev1.Service{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, svc); err != nil {
			return b, fmt.Errorf("binding Service %s: %w", o.GetName(), err)
		}
		if svc.Namespace == "" {
			svc.Namespace = TunnelNamespace
		}
		if b.Namespace != "" && b.Namespace != svc.Namespace {
			return b, fmt.Errorf("binding Services in two namespaces: %s and %s", b.Namespace, svc.Namespace)
		}
		b.Namespace = svc.Namespace
		ports := map[string]int{}
		for _, p := range svc.Spec.Ports {
			ports[p.Name] = int(p.Port)
			if p.TargetPort.IntValue() != 0 && p.TargetPort.IntValue() != int(p.Port) {
				// cloud DNS maps the Service name straight to the pod (no
				// kube-proxy), so callers use the Service port on the pod
				return b, fmt.Errorf("binding Service %s port %s: port %d != targetPort %s; the e2e needs them equal",
					svc.Name, p.Name, p.Port, p.TargetPort.String())
			}
		}
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			b.Headless = svc.Name
			b.GatewayPort = ports["gateway"]
		} else {
			b.Service = svc.Name
			b.APIPort, b.ProbePort = ports["api"], ports["probe"]
		}
		b.Objects = append(b.Objects, svc)
	}
	if b.Service == "" || b.Headless == "" || b.APIPort == 0 || b.ProbePort == 0 || b.GatewayPort == 0 {
		return b, fmt.Errorf("binding for %q incomplete: ClusterIP %q (api %d, probe %d), headless %q (gateway %d)",
			LinkName, b.Service, b.APIPort, b.ProbePort, b.Headless, b.GatewayPort)
	}
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
