package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
)

// ManifestsDir is manifests/ of this repository (the kustomize sources of
// dist/*.yaml).
func ManifestsDir() string { return filepath.Join(repo.Root(), "manifests") }

// WebhookConfigurationFile is manifests/webhook/webhook-configuration.yaml,
// the one source of the MutatingWebhookConfiguration: the kustomize base
// ships it and the integration tests register it.
func WebhookConfigurationFile() string {
	return filepath.Join(ManifestsDir(), "webhook", "webhook-configuration.yaml")
}

// TunnelBindingFile is the tunnel-server base's binding Services (ClusterIP
// "tunnel-server" with ports api/probe, headless "tunnel-server-gateway"
// with port gateway), without the per-cluster label and name prefix the
// overlays add.
func TunnelBindingFile() string {
	return filepath.Join(ManifestsDir(), "tunnel-server", "base", "binding.yaml")
}

// RenderKustomize renders a kustomization folder (absolute, or relative to
// the repository root) with the kustomize built into the cached kubectl. It
// is the one place that runs kustomize; KustomizeRaw is its test form and
// tools without a testing.TB (e2e/cmd/demo through e2e/harness) call it.
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

// KustomizeRaw is RenderKustomize failing the test on error.
func KustomizeRaw(t TB, dir string) []byte {
	t.Helper()
	out, err := RenderKustomize(dir)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Kustomize renders a kustomization folder like KustomizeRaw and decodes
// every object.
func Kustomize(t TB, dir string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := fixtures.Decode(KustomizeRaw(t, dir))
	if err != nil {
		t.Fatalf("decode kustomize output of %s: %v", dir, err)
	}
	return objs
}
