package mutate

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// seedObjects are the rewritable objects of every fixture version, each as
// printed and rewritten (so that both rewrite and restore get bad input).
func seedObjects(t testing.TB) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, v := range fixtures.Versions() {
		for _, file := range linkFiles(v) {
			objs, err := fixtures.Objects(v, file)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if k, _ := Classify(o); k == KindNone {
					continue
				}
				rw, _, _, err := Mutate(o, testBinding(), Options{})
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, o, rw)
			}
		}
	}
	return out
}

// paths lists every node of a JSON tree.
func paths(v any, prefix []any, out *[][]any) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := append(append([]any{}, prefix...), k)
			*out = append(*out, p)
			paths(x[k], p, out)
		}
	case []any:
		for i := range x {
			p := append(append([]any{}, prefix...), i)
			*out = append(*out, p)
			paths(x[i], p, out)
		}
	}
}

// replaceAt sets (or with del, removes) the node at path.
func replaceAt(root map[string]any, path []any, v any, del bool) {
	var cur any = root
	for i, step := range path {
		last := i == len(path)-1
		switch c := cur.(type) {
		case map[string]any:
			k := step.(string)
			if last {
				if del {
					delete(c, k)
				} else {
					c[k] = v
				}
				return
			}
			cur = c[k]
		case []any:
			j := step.(int)
			if last {
				c[j] = v
				if del { // deleting from a list is replacing with null here
					c[j] = nil
				}
				return
			}
			cur = c[j]
		default:
			return
		}
	}
}

var substitutes = []any{
	nil, true, false, int64(0), int64(-1), int64(7), int64(1 << 40), float64(1.5), "", "x", "14191", "None",
	"ExternalName", "LoadBalancer", map[string]any{}, map[string]any{"a": "b"},
	[]any{}, []any{int64(1), "two"}, "bm90IGEga3ViZWNvbmZpZw==", "{}", "{\"server\":1}",
}

// TestRobustness substitutes random nodes of real objects with values of
// random types and checks that Mutate never panics or errs, never modifies
// its input, and either leaves the object unchanged or rewrites it
// completely (never half).
func TestRobustness(t *testing.T) {
	rng := rand.New(rand.NewSource(42))
	seeds := seedObjects(t)
	const rounds = 4000
	stats := map[string]int{}
	for i := 0; i < rounds; i++ {
		in := seeds[rng.Intn(len(seeds))].DeepCopy()
		for n := 1 + rng.Intn(2); n > 0; n-- {
			var ps [][]any
			paths(in.Object, nil, &ps)
			p := ps[rng.Intn(len(ps))]
			replaceAt(in.Object, p, deepCopyJSON(substitutes[rng.Intn(len(substitutes))]), rng.Intn(5) == 0)
		}
		for _, b := range []*Binding{testBinding(), nil} {
			name := fmt.Sprintf("round %d binding %v", i, b)
			func() {
				defer func() {
					if r := recover(); r != nil {
						js, _ := json.Marshal(in.Object)
						t.Fatalf("%s: panic %v on %s", name, r, js)
					}
				}()
				kind, cluster := Classify(in)
				if b != nil && kind != KindNone && cluster != "home" {
					b = &Binding{Cluster: cluster, Namespace: "linkerd-tunnel", Service: "tunnel-home", Headless: "tunnel-home-gw", APIPort: 6443, ProbePort: 14191, GatewayPort: 14143}
				}
				out, changed, w := mutate(t, in, b, Options{})
				for _, x := range w {
					if strings.Contains(x, "left unchanged") && changed {
						t.Fatalf("%s: warning %q but changed", name, x)
					}
				}
				switch {
				case !changed:
					stats["unchanged"]++
				case b == nil:
					stats["restored"]++
					for k := range out.GetAnnotations() {
						if isOurs(k) {
							t.Fatalf("%s: restored object keeps %s", name, k)
						}
					}
				default:
					stats["rewritten"]++
					checkComplete(t, name, kind, out, b)
				}
			}()
		}
	}
	t.Logf("%d rounds: %v", rounds, stats)
	if stats["unchanged"] == 0 || stats["rewritten"] == 0 || stats["restored"] == 0 {
		t.Errorf("robustness rounds did not cover every outcome: %v", stats)
	}
}

// checkComplete checks that a rewritten object holds every tunnel value and
// is a fixed point.
func checkComplete(t *testing.T, name string, kind Kind, out *unstructured.Unstructured, b *Binding) {
	t.Helper()
	r := newRewriter(kind)
	got, err := r.read(out)
	if err != nil {
		t.Fatalf("%s: rewritten object does not read back: %v", name, err)
	}
	want := map[Kind]values{
		KindProbe:       {FieldServiceType: present("ExternalName"), FieldExternalName: present(b.ServiceFQDN("")), FieldProbePort: present("14191"), FieldProbeTargetPort: present("14191"), FieldClusterIP: {}, FieldIPFamilies: {}},
		KindLink:        {FieldGatewayAddress: present(b.HeadlessFQDN("")), FieldGatewayPort: present("14143"), FieldProbePort: present("14191")},
		KindCredentials: {FieldServer: present(b.APIServerURL(""))},
	}[kind]
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: half rewritten: %s = %+v, want %+v", name, k, got[k], v)
		}
	}
	if _, again, w := mutate(t, out, b, Options{}); again {
		t.Fatalf("%s: rewritten object is not a fixed point (warnings %q)", name, w)
	}
}

func deepCopyJSON(v any) any {
	if v == nil {
		return nil
	}
	return runtimeDeepCopy(v)
}

// runtimeDeepCopy copies a JSON value of an unstructured object.
func runtimeDeepCopy(v any) any {
	u := &unstructured.Unstructured{Object: map[string]any{"v": v}}
	return u.DeepCopy().Object["v"]
}

// FuzzMutate feeds arbitrary JSON objects to Classify and Mutate (seeded
// with every fixture object); run it with
// go test ./pkg/mutate -run '^$' -fuzz FuzzMutate -fuzztime 20s.
func FuzzMutate(f *testing.F) {
	for _, o := range seedObjects(f) {
		js, err := json.Marshal(o.Object)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(js)
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		in := &unstructured.Unstructured{}
		if err := in.UnmarshalJSON(js); err != nil {
			return
		}
		kind, cluster := Classify(in)
		b := testBinding()
		b.Cluster = cluster
		for _, bb := range []*Binding{b, nil} {
			out, changed, warnings := mutate(t, in, bb, Options{})
			if changed && kind == KindNone {
				t.Fatalf("KindNone object changed")
			}
			if changed && bb != nil {
				checkComplete(t, "fuzz", kind, out, bb)
				if _, marked := in.GetAnnotations()[AnnotationRewrittenFor]; kind == KindCredentials && !marked {
					// restore(rewrite(x)) gives back x's kubeconfig bytes
					checkKubeconfigKept(t, in, out)
				}
			}
			for _, w := range warnings {
				if strings.Contains(w, "left unchanged") && changed {
					t.Fatalf("warning %q but changed", w)
				}
			}
		}
	})
}
