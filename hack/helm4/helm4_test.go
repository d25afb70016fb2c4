package helm4

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"sigs.k8s.io/yaml"
)

// The repository root, from hack/helm4.
var root = filepath.Join("..", "..")

// namespace is the one every dist file is rendered for
// (manifests/internal/render).
const namespace = "l5d-tunnel"

// render renders a chart folder as manifests.Render does with Helm 3:
// schema-validated values, Helm's install order, "# Source:" per object.
func render(chart string, values map[string]any) (string, error) {
	c, err := loader.LoadDir(filepath.Join(root, "manifests", "charts", chart))
	if err != nil {
		return "", err
	}
	opts := common.ReleaseOptions{Name: chart, Namespace: namespace, IsInstall: true, Revision: 1}
	vals, err := util.ToRenderValuesWithSchemaValidation(c, values, opts, nil, false)
	if err != nil {
		return "", err
	}
	files, err := engine.Render(c, vals)
	if err != nil {
		return "", err
	}
	hooks, objs, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return "", err
	}
	if len(hooks) > 0 {
		return "", fmt.Errorf("%s renders hooks", chart)
	}
	var out strings.Builder
	for _, m := range objs {
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", m.Name, strings.TrimSpace(m.Content))
	}
	return out.String(), nil
}

// The dist header names the chart and the values file
// (manifests/internal/render.Header).
var header = regexp.MustCompile(`from manifests/charts/([a-z0-9-]+) with the values in\n# (manifests/internal/render/values/[a-z0-9.-]+);`)

// TestDistEqualsHelm4 renders each dist file's chart with its example
// values through Helm 4 and compares with the checked-in file, header
// aside.
func TestDistEqualsHelm4(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(root, "dist", "*.yaml"))
	if err != nil || len(files) != 3 {
		t.Fatalf("dist/*.yaml: %v, %v (want 3 files)", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m := header.FindSubmatch(raw)
			if m == nil {
				t.Fatalf("%s: no header naming its chart and values", f)
			}
			valuesRaw, err := os.ReadFile(filepath.Join(root, string(m[2])))
			if err != nil {
				t.Fatal(err)
			}
			var values map[string]any
			if err := yaml.Unmarshal(valuesRaw, &values); err != nil {
				t.Fatal(err)
			}
			got, err := render(string(m[1]), values)
			if err != nil {
				t.Fatalf("Helm 4: %v", err)
			}
			want := string(raw)
			for strings.HasPrefix(want, "#") {
				_, want, _ = strings.Cut(want, "\n")
			}
			if got != want {
				t.Errorf("Helm 4 renders %s differently from dist/%s (Helm 3):\n%s", m[1], filepath.Base(f), firstDiff(got, want))
			}
		})
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n helm4: %q\n dist:  %q", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d lines", len(al), len(bl))
}

// TestSchemaRejectsHelm4: the values manifests/testdata/invalid-values.yaml
// lists (which the root module's tests render with Helm 3) are refused by
// Helm 4 too, naming the same value.
func TestSchemaRejectsHelm4(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "manifests", "testdata", "invalid-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name, Chart, Path, Error string
		Values                   map[string]any
	}
	if err := yaml.UnmarshalStrict(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 20 {
		t.Fatalf("%d cases", len(cases))
	}
	index := regexp.MustCompile(`\[(\d+)\]`)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			_, err := render(c.Chart, c.Values)
			if err == nil {
				t.Fatalf("Helm 4 accepted %v for %s", c.Values, c.Chart)
			}
			want := c.Error
			if c.Path != "" {
				// The JSON pointer of the --set path.
				want = "'/" + strings.ReplaceAll(index.ReplaceAllString(c.Path, ".$1"), ".", "/") + "'"
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}
}
