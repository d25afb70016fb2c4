package mutate

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
)

// TestAPIServerAcceptsOutput stores what Mutate returns through a real
// kube-apiserver (v1.35.4), for every fixture version: the rewritten objects
// on CREATE, the rewrite of live ClusterIP objects on UPDATE, a binding
// change, and the restore. What the server stores and hands back must then
// be a fixed point of Mutate, so the webhook and the reconciler never
// fight the API server's defaulting.
func TestAPIServerAcceptsOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	env := testenv.Start(t, testenv.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client
	b := testBinding()
	moved := testBinding()
	moved.APIPort, moved.ProbePort, moved.GatewayPort = 7443, 24191, 24143

	n := 0
	for _, v := range fixtures.Versions() {
		for _, file := range linkFiles(v) {
			objs, err := fixtures.Objects(v, file)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				kind, _ := Classify(o)
				if kind == KindNone {
					continue
				}
				for _, flow := range []string{"create", "update"} {
					n++
					ns := fmt.Sprintf("t%d", n)
					name := fmt.Sprintf("%s/%s/%s-%s/%s", v, file, o.GetKind(), o.GetNamespace(), flow)
					t.Run(name, func(t *testing.T) {
						if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
							t.Fatal(err)
						}
						in := o.DeepCopy()
						in.SetNamespace(ns)
						key := client.ObjectKeyFromObject(in)
						get := func() *unstructured.Unstructured {
							t.Helper()
							u := &unstructured.Unstructured{}
							u.SetGroupVersionKind(in.GroupVersionKind())
							if err := c.Get(ctx, key, u); err != nil {
								t.Fatalf("get: %v", err)
							}
							return u
						}
						// store mutates live for binding bb and writes the result.
						store := func(live *unstructured.Unstructured, bb *Binding, create bool) {
							t.Helper()
							out, changed, w := mutate(t, live, bb, Options{})
							if !changed || len(w) > 0 {
								t.Fatalf("Mutate(binding %v): changed=%v warnings=%q", bb, changed, w)
							}
							if create {
								err = c.Create(ctx, out)
							} else {
								err = c.Update(ctx, out)
							}
							if err != nil {
								t.Fatalf("API server refused Mutate's output (binding %v, create=%v): %v", bb, create, err)
							}
						}
						fixedPoint := func(bb *Binding) *unstructured.Unstructured {
							t.Helper()
							live := get()
							if _, changed, w := mutate(t, live, bb, Options{}); changed || len(w) > 0 {
								t.Fatalf("stored object is not a fixed point (binding %v): warnings=%q", bb, w)
							}
							return live
						}

						if flow == "create" {
							store(in, b, true)
						} else {
							if err := c.Create(ctx, in); err != nil {
								t.Fatal(err)
							}
							store(get(), b, false)
						}
						live := fixedPoint(b)
						if kind == KindProbe {
							if typ, _, _ := unstructured.NestedString(live.Object, "spec", "type"); typ != "ExternalName" {
								t.Fatalf("stored type %q", typ)
							}
						}
						store(live, moved, false)
						store(fixedPoint(moved), nil, false)
						restored := fixedPoint(nil)
						if kind == KindProbe {
							ip, _, _ := unstructured.NestedString(restored.Object, "spec", "clusterIP")
							typ, _, _ := unstructured.NestedString(restored.Object, "spec", "type")
							if typ != "ClusterIP" || ip == "" {
								t.Errorf("restored probe Service: type %q clusterIP %q", typ, ip)
							}
						}
						for k := range restored.GetAnnotations() {
							if isOurs(k) {
								t.Errorf("restored object keeps annotation %s", k)
							}
						}
					})
				}
			}
		}
	}
}
