package extension

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"helm.sh/helm/v3/pkg/strvals"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/manifests"
)

// DefaultNamespace is where install and server put the extension in the
// cloud, and client puts the tunnel client in home.
const DefaultNamespace = "l5d-tunnel"

// chartFlags are the flags of every command that renders a chart: where, which
// images, how many replicas, Helm-style value overrides and the output format.
type chartFlags struct {
	chart      string
	namespace  string
	registry   string
	imageTag   string
	pullPolicy string
	replicas   int
	files      []string // -f/--values
	set        []string // --set
	setString  []string // --set-string
	setFile    []string // --set-file
	output     string

	user map[string]any // -f and --set* merged, once (stdin can be read once)
}

func (f *chartFlags) add(fs *pflag.FlagSet, nsHelp string) {
	fs.StringVar(&f.namespace, "namespace", DefaultNamespace, nsHelp)
	fs.StringVar(&f.registry, "registry", "", "Registry (and owner) of the image, replacing the chart's (e.g. registry.example.com/l5d-tunnel)")
	fs.StringVar(&f.imageTag, "image-tag", "", "Image tag (default: the chart's appVersion)")
	fs.StringVar(&f.pullPolicy, "image-pull-policy", "", "Image pull policy: Always, IfNotPresent or Never (default: the chart's)")
	fs.IntVar(&f.replicas, "replicas", 0, "Number of replicas (default: the chart's)")
	fs.StringArrayVarP(&f.files, "values", "f", nil, "Values from a YAML file (- for stdin; repeatable, later files win)")
	fs.StringArrayVar(&f.set, "set", nil, "Set values on the command line (key1=val1,key2=val2; repeatable)")
	fs.StringArrayVar(&f.setString, "set-string", nil, "Set STRING values on the command line (key1=val1,key2=val2; repeatable)")
	fs.StringArrayVar(&f.setFile, "set-file", nil, "Set values from files (key1=path1,key2=path2; repeatable)")
	fs.StringVarP(&f.output, "output", "o", "yaml", "Output format: yaml or json (one object per line)")
}

// values returns the chart values of a command: derived (defaults the
// command computes, e.g. from --linkerd-namespace) under the -f files, under
// --set, --set-string and --set-file (merged as Helm merges them), under the
// typed flags given on the command line (the image flags here, the command's
// own in typed), under managed (values the command owns, such as the link
// name; setting one through -f or --set is a usage error). The chart's own
// defaults apply below all of them when rendering. Keys are dotted paths.
func (f *chartFlags) values(cmd *cobra.Command, derived, typed, managed map[string]any) (map[string]any, error) {
	if err := f.validate(cmd); err != nil {
		return nil, err
	}
	if f.user == nil {
		user, err := f.merge(cmd.InOrStdin())
		if err != nil {
			return nil, err
		}
		f.user = user
	}
	for key := range managed {
		if _, ok := lookup(f.user, key); ok {
			return nil, UsageErrorf("value %s is set by %s itself; drop it from --values/--set", key, cmd.CommandPath())
		}
	}
	vals := mergeMaps(nestKeys(derived), f.user)
	typed = maps.Clone(typed)
	if typed == nil {
		typed = map[string]any{}
	}
	fs := cmd.Flags()
	if fs.Changed("registry") {
		defaults, err := manifests.Values(f.chart)
		if err != nil {
			return nil, err
		}
		name, _ := lookup(defaults, "image.name")
		s, _ := name.(string)
		if s == "" {
			return nil, fmt.Errorf("chart %s has no default image.name to move to --registry %s", f.chart, f.registry)
		}
		typed["image.name"] = strings.TrimSuffix(f.registry, "/") + "/" + path.Base(s)
	}
	if fs.Changed("image-tag") {
		typed["image.tag"] = f.imageTag
	}
	if fs.Changed("image-pull-policy") {
		typed["image.pullPolicy"] = f.pullPolicy
	}
	if fs.Changed("replicas") {
		typed["replicas"] = f.replicas
	}
	vals = mergeMaps(vals, nestKeys(typed))
	return mergeMaps(vals, nestKeys(managed)), nil
}

func (f *chartFlags) validate(cmd *cobra.Command) error {
	fs := cmd.Flags()
	if errs := validation.IsDNS1123Label(f.namespace); len(errs) > 0 {
		return UsageErrorf("--namespace %q is not a namespace name: %s", f.namespace, errs[0])
	}
	switch f.pullPolicy {
	case "", "Always", "IfNotPresent", "Never":
	default:
		return UsageErrorf("--image-pull-policy %q: want Always, IfNotPresent or Never", f.pullPolicy)
	}
	if fs.Changed("image-pull-policy") && f.pullPolicy == "" {
		return UsageErrorf("--image-pull-policy is empty: want Always, IfNotPresent or Never")
	}
	if fs.Changed("replicas") && f.replicas < 1 {
		return UsageErrorf("--replicas %d: want 1 or more", f.replicas)
	}
	if fs.Changed("image-tag") && f.imageTag == "" {
		return UsageErrorf("--image-tag is empty")
	}
	if fs.Changed("registry") && strings.Trim(f.registry, "/") == "" {
		return UsageErrorf("--registry is empty")
	}
	switch f.output {
	case "yaml", "json":
	default:
		return UsageErrorf("--output %q: want yaml or json", f.output)
	}
	return nil
}

// merge reads the -f files and the --set flags the way Helm's
// values.Options.MergeValues does (files merged key by key, then --set,
// --set-string, --set-file parsed by Helm's strvals into the result). Errors
// name the flag.
func (f *chartFlags) merge(stdin io.Reader) (map[string]any, error) {
	base := map[string]any{}
	read := func(name string) ([]byte, error) {
		if strings.TrimSpace(name) == "-" {
			return io.ReadAll(stdin)
		}
		return os.ReadFile(name)
	}
	for _, file := range f.files {
		raw, err := read(file)
		if err != nil {
			return nil, UsageErrorf("--values %s: %v", file, err)
		}
		m := map[string]any{}
		if err := yaml.Unmarshal(raw, &m); err != nil {
			return nil, UsageErrorf("--values %s: %v", file, err)
		}
		base = mergeMaps(base, m)
	}
	for _, s := range f.set {
		if err := strvals.ParseInto(s, base); err != nil {
			return nil, UsageErrorf("--set %s: %v", s, err)
		}
	}
	for _, s := range f.setString {
		if err := strvals.ParseIntoString(s, base); err != nil {
			return nil, UsageErrorf("--set-string %s: %v", s, err)
		}
	}
	for _, s := range f.setFile {
		reader := func(rs []rune) (any, error) {
			b, err := read(string(rs))
			return string(b), err
		}
		if err := strvals.ParseIntoFile(s, base, reader); err != nil {
			return nil, UsageErrorf("--set-file %s: %v", s, err)
		}
	}
	return base, nil
}

// render renders the command's chart with vals into w in the --output format.
// renderWithToken renders the chart for a command whose token.value comes
// from the cluster: every flag is validated (with an empty token) before
// token is asked for, so a bad flag fails without reading the cluster.
func (f *chartFlags) renderWithToken(cmd *cobra.Command, typed, managed map[string]any, token func() (string, error)) error {
	managed["token.value"] = ""
	if _, err := f.values(cmd, nil, typed, managed); err != nil {
		return err
	}
	tok, err := token()
	if err != nil {
		return err
	}
	managed["token.value"] = tok
	vals, err := f.values(cmd, nil, typed, managed)
	if err != nil {
		return err
	}
	return f.render(cmd.OutOrStdout(), vals)
}

func (f *chartFlags) render(w io.Writer, vals map[string]any) error {
	out, err := manifests.Render(f.chart, f.namespace, vals)
	if err != nil {
		return fmt.Errorf("render chart %s: %w", f.chart, err)
	}
	return writeAs(w, out, f.output)
}

// writeAs writes a YAML stream as it is, or as JSON with one object per line
// (as the linkerd CLI's -o json does); kubectl apply -f takes both.
func writeAs(w io.Writer, stream []byte, format string) error {
	if format != "json" {
		_, err := w.Write(stream)
		return err
	}
	docs, err := splitYAML(stream)
	if err != nil {
		return err
	}
	for _, d := range docs {
		js, err := yaml.YAMLToJSON(d)
		if err != nil {
			return err
		}
		if _, err := w.Write(append(js, '\n')); err != nil {
			return err
		}
	}
	return nil
}

// splitYAML splits a YAML stream into its non-empty documents.
func splitYAML(stream []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var out [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			return nil, err
		}
		if v != nil {
			out = append(out, doc)
		}
	}
}

// nestKeys turns {"a.b": v} into {"a": {"b": v}}.
func nestKeys(flat map[string]any) map[string]any {
	out := map[string]any{}
	for key, v := range flat {
		parts := strings.Split(key, ".")
		m := out
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
	}
	return out
}

// lookup finds a dotted key in nested maps.
func lookup(m map[string]any, key string) (any, bool) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return nil, false
		}
		m = next
	}
	v, ok := m[parts[len(parts)-1]]
	return v, ok
}

// mergeMaps merges b into a copy of a, key by key for nested maps, b winning
// (Helm's values.Options merge).
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}
