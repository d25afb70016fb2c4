package manifests

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
)

// The charts, one per job (docs/design.md): names of the folders under
// manifests/charts and of the Helm charts.
const (
	// ChartWebhook is the cloud cluster's webhook, installed once.
	ChartWebhook = "l5d-tunnel"
	// ChartServer is a cloud cluster's tunnel server for one link.
	ChartServer = "l5d-tunnel-server"
	// ChartClient is the home cluster's tunnel client for one link.
	ChartClient = "l5d-tunnel-client"
)

// Charts lists every chart, in the order they are installed.
var Charts = []string{ChartWebhook, ChartServer, ChartClient}

//go:embed all:charts
var chartFS embed.FS

// ChartsFS holds the charts' source files, each under its name
// ("l5d-tunnel/Chart.yaml", ...), as `helm package` would read them.
func ChartsFS() fs.FS {
	sub, err := fs.Sub(chartFS, "charts")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	return sub
}

// load reads one embedded chart.
func load(name string) (*chart.Chart, error) {
	if !slices.Contains(Charts, name) {
		return nil, fmt.Errorf("unknown chart %q (want one of %s)", name, strings.Join(Charts, ", "))
	}
	var files []*loader.BufferedFile
	err := fs.WalkDir(chartFS, path.Join("charts", name), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := chartFS.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: strings.TrimPrefix(p, "charts/"+name+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	return c, nil
}

// Values returns a chart's default values (its values.yaml).
func Values(chartName string) (map[string]any, error) {
	c, err := load(chartName)
	if err != nil {
		return nil, err
	}
	return chartutil.Values(c.Values).AsMap(), nil
}

// Render renders a chart as `helm template --namespace namespace` would,
// with values over the chart's defaults (nil: the defaults), validated
// against the chart's values.schema.json. The result is a YAML stream, one
// object per document, in Helm 4's install order (Namespace, ..., RBAC,
// Services, Deployments, ..., webhook configurations, then other kinds by
// name), each document preceded by "# Source: <chart>/templates/<file>".
//
// No cluster is consulted: a template's `lookup` finds nothing (the server
// chart then generates a token; pass token.value to keep one).
func Render(chartName, namespace string, values map[string]any) ([]byte, error) {
	return render(chartName, namespace, values, engine.Render)
}

// renderFunc is engine.Render or, in tests, a renderer whose lookup sees a
// fake cluster.
type renderFunc func(*chart.Chart, chartutil.Values) (map[string]string, error)

// installOrder is Helm 4's install order: Helm 3's, then the admission
// webhook configurations (Helm 3.20 sorts those among the kinds it does not
// know, by name, after Certificate). With it both Helm versions render the
// charts to the same bytes (hack/helm4 checks it).
var installOrder = append(slices.Clone(releaseutil.InstallOrder), "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")

var namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func render(chartName, namespace string, values map[string]any, tmpl renderFunc) ([]byte, error) {
	if len(namespace) > 63 || !namespaceRE.MatchString(namespace) {
		return nil, fmt.Errorf("namespace %q is not a valid namespace name (RFC 1123 label)", namespace)
	}
	c, err := load(chartName)
	if err != nil {
		return nil, err
	}
	if values == nil {
		values = map[string]any{}
	}
	opts := chartutil.ReleaseOptions{Name: chartName, Namespace: namespace, IsInstall: true, Revision: 1}
	vals, err := chartutil.ToRenderValuesWithSchemaValidation(c, values, opts, nil, false)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", chartName, explain(c.Schema, err))
	}
	files, err := tmpl(c, vals)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", chartName, err)
	}
	hooks, objs, err := releaseutil.SortManifests(files, nil, installOrder)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", chartName, err)
	}
	if len(hooks) > 0 {
		return nil, fmt.Errorf("chart %s: %s is a Helm hook; the charts must render plain objects", chartName, hooks[0].Path)
	}
	var out strings.Builder
	for _, m := range objs {
		if m.Head == nil || m.Head.Kind == "" {
			return nil, fmt.Errorf("chart %s: %s renders a document without kind", chartName, m.Name)
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", m.Name, strings.TrimSpace(m.Content))
	}
	if out.Len() == 0 {
		return nil, errors.New("chart " + chartName + " rendered nothing")
	}
	return []byte(out.String()), nil
}

var patternMsg = regexp.MustCompile(` does not match pattern '.*'$`)

var schemaErrLine = regexp.MustCompile(`^\s*- at '([^']*)': (.*)$`)

// explain rewrites Helm's schema error ("- at '/ports/api': minimum: got
// 0, want 1") into one line per bad value that names it the way a user
// sets it (ports.api) and says what the schema wants (its description).
func explain(schema []byte, err error) error {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		m := schemaErrLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		msg := m[2]
		if d := describe(schema, m[1]); d != "" {
			// The description says what the pattern means.
			msg = patternMsg.ReplaceAllString(msg, " is not valid") + " (want " + d + ")"
		}
		line := "- " + valuePath(m[1]) + ": " + msg
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		return err
	}
	return errors.New("invalid values:\n" + strings.Join(lines, "\n"))
}

// valuePath turns a JSON pointer into the dotted form of --set.
func valuePath(ptr string) string {
	if ptr == "" {
		return "(values)"
	}
	var b strings.Builder
	for _, seg := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if _, err := strconv.Atoi(seg); err == nil {
			b.WriteString("[" + seg + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteString(".")
		}
		b.WriteString(seg)
	}
	return b.String()
}

// describe returns the description of the schema node at ptr ("" if none).
func describe(schema []byte, ptr string) string {
	var root map[string]any
	if json.Unmarshal(schema, &root) != nil {
		return ""
	}
	child := func(n map[string]any, keys ...string) (map[string]any, bool) {
		for _, k := range keys {
			next, ok := n[k].(map[string]any)
			if !ok {
				return nil, false
			}
			n = next
		}
		return n, true
	}
	resolve := func(n map[string]any) map[string]any {
		if ref, ok := n["$ref"].(string); ok {
			if def, ok := child(root, "definitions", strings.TrimPrefix(ref, "#/definitions/")); ok {
				if _, own := n["description"]; !own {
					return def
				}
			}
		}
		return n
	}
	node := root
	if ptr != "" {
		for _, seg := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
			node = resolve(node)
			if p, ok := child(node, "properties", seg); ok {
				node = p
			} else if it, ok := child(node, "items"); ok {
				node = it
			} else if ap, ok := child(node, "additionalProperties"); ok {
				node = ap
			} else {
				return ""
			}
		}
	}
	d, _ := resolve(node)["description"].(string)
	return d
}
