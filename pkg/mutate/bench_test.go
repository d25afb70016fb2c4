package mutate

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// BenchmarkMutate measures Mutate on the newest fixture's objects, per kind:
// the first rewrite (CREATE), an already rewritten object (re-apply, the
// common UPDATE), the restore, and an object of KindNone (what every other
// admission request through the webhook costs).
//
//	go test ./pkg/mutate -run '^$' -bench BenchmarkMutate -benchmem
func BenchmarkMutate(b *testing.B) {
	objs, err := fixtures.Objects(fixtures.Newest(), "link.yaml")
	if err != nil {
		b.Fatal(err)
	}
	byKind := map[Kind]*unstructured.Unstructured{}
	var other *unstructured.Unstructured
	for _, o := range objs {
		k, _ := Classify(o)
		if k == KindNone && o.GetKind() == "Deployment" {
			other = o
		}
		if _, seen := byKind[k]; !seen && k != KindNone {
			byKind[k] = asAdmitted(b, o, 1)
		}
	}
	bind := testBinding()
	run := func(name string, in *unstructured.Unstructured, bb *Binding, wantChanged bool) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, changed, _, err := Mutate(in, bb, Options{})
				if err != nil || changed != wantChanged {
					b.Fatalf("changed=%v err=%v", changed, err)
				}
			}
		})
	}
	for _, k := range []Kind{KindProbe, KindLink, KindCredentials} {
		in := byKind[k]
		rw, _, _, err := Mutate(in, bind, Options{})
		if err != nil {
			b.Fatal(err)
		}
		run(string(k)+"/rewrite", in, bind, true)
		run(string(k)+"/unchanged", rw, bind, false)
		run(string(k)+"/restore", rw, nil, true)
	}
	run("none/deployment", other, bind, false)
}

// BenchmarkClassify measures the check every admission request pays.
func BenchmarkClassify(b *testing.B) {
	objs, err := fixtures.Objects(fixtures.Newest(), "link.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, o := range objs {
			Classify(o)
		}
	}
}
