package mutate

import (
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGolden compares the rewritten objects of the newest Linkerd version
// with testdata/<version>/<file>/*.yaml (go test ./pkg/mutate -run TestGolden
// -update rewrites them). Credentials Secrets get a second file with the
// decoded kubeconfig, so that a review sees what changed in it.
func TestGolden(t *testing.T) {
	v := fixtures.Newest()
	for _, file := range linkFiles(v) {
		objs, err := fixtures.Objects(v, file)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join("testdata", v, strings.TrimSuffix(file, ".yaml"))
		seen := map[string]bool{}
		for _, o := range objs {
			kind, _ := Classify(o)
			if kind == KindNone {
				continue
			}
			out, _, w := mutate(t, o, testBinding(), Options{})
			if len(w) > 0 {
				t.Errorf("warnings: %q", w)
			}
			base := fmt.Sprintf("%s-%s-%s", kind, o.GetNamespace(), o.GetName())
			y, err := yaml.Marshal(out.Object)
			if err != nil {
				t.Fatal(err)
			}
			compareGolden(t, filepath.Join(dir, base+".yaml"), y)
			seen[base+".yaml"] = true
			if kind == KindCredentials {
				enc := out.Object["data"].(map[string]any)["kubeconfig"].(string)
				kc, err := base64.StdEncoding.DecodeString(enc)
				if err != nil {
					t.Fatal(err)
				}
				compareGolden(t, filepath.Join(dir, base+".kubeconfig.yaml"), kc)
				seen[base+".kubeconfig.yaml"] = true
			}
		}
		// No stale golden files.
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !seen[e.Name()] {
				t.Errorf("stale golden file %s", filepath.Join(dir, e.Name()))
			}
		}
	}
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != string(got) {
		t.Errorf("%s differs from the output (-update rewrites it):\n%s", path, diffAny(string(want), string(got)))
	}
}
