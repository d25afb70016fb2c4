package testenv

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// TestControlPlaneServesLinks starts a real kube-apiserver with the Link CRD
// and stores the newest fixture's Link through it, then reads it back with
// kubectl (which refuses unstamped server versions).
func TestControlPlaneServesLinks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	env := Start(t, Options{})
	objs, err := fixtures.Objects(fixtures.Newest(), "link.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var link *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Link" {
			link = o
		}
	}
	if _, err := env.Kubectl(nil, "create", "namespace", link.GetNamespace()); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(context.Background(), link); err != nil {
		t.Fatalf("create Link: %v", err)
	}
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(link.GroupVersionKind())
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(link), got); err != nil {
		t.Fatal(err)
	}
	out, err := env.Kubectl(nil, "get", "links.multicluster.linkerd.io", "-A", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "link.multicluster.linkerd.io/home") {
		t.Fatalf("kubectl get links: %q", out)
	}
	ver, err := env.Kubectl(nil, "version", "-o", "json")
	if err != nil || !strings.Contains(string(ver), `"gitVersion": "v1.35.4"`) {
		t.Fatalf("kubectl version: %v %s", err, ver)
	}
}
