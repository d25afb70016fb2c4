package manifests_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
	"github.com/l5d-tunnel/l5d-tunnel/manifests"
)

// TestKustomizePath follows docs/install.md ("With kustomize"): the chart's
// rendering as a kustomize resource plus the documented kustomization
// (taken from the page) builds with the kustomize in kubectl, keeps every
// object, and applies the patch.
func TestKustomizePath(t *testing.T) {
	if testing.Short() {
		t.Skip("needs kubectl")
	}
	page, err := os.ReadFile(root("docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(page), "\n## With kustomize\n")
	_, k, ok2 := strings.Cut(section, "cat >kustomization.yaml <<'EOF'\n")
	k, _, ok3 := strings.Cut(k, "\nEOF\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal(`docs/install.md: no "With kustomize" section with a kustomization.yaml heredoc`)
	}
	rendered, err := manifests.Render(manifests.ChartServer, ns, map[string]any{
		"link": "home", "token": map[string]any{"create": false},
		"ingress": map[string]any{"enabled": true, "host": "home.tunnel.example.com", "className": "nginx"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string]string{"tunnel-server.yaml": string(rendered), "kustomization.yaml": k + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := testenv.RenderKustomize(dir)
	if err != nil {
		t.Fatal(err)
	}
	built, err := fixtures.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := fixtures.Decode(rendered)
	if len(built) != len(src) {
		t.Errorf("kustomize output has %d objects, the chart renders %d", len(built), len(src))
	}
	for _, o := range src {
		find(t, built, o.GetKind(), o.GetNamespace(), o.GetName())
	}
	d := as[appsv1.Deployment](t, find(t, built, "Deployment", ns, "home-tunnel-server"))
	if d.Spec.Template.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("the documented patch did not reach the Deployment: nodeSelector %v", d.Spec.Template.Spec.NodeSelector)
	}
}
