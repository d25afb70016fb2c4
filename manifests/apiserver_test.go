package manifests_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

const fieldManager = "l5d-tunnel-install"

// TestInstallOnAPIServer installs dist/*.yaml on a real kube-apiserver with
// cert-manager's CRDs and Linkerd's Link CRD, the way docs/install.md does,
// then proves on that server: every object is accepted and stored, a second
// apply changes nothing, the workloads pass the "restricted" Pod Security
// admission, the webhook configuration is registered as rendered, and the
// webhook ServiceAccount's RBAC is exactly the rules internal/webhook needs
// (that the webhook binary runs with them is internal/webhook's
// TestLeastPrivilege).
func TestInstallOnAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	env := testenv.Start(t, testenv.Options{CertManagerCRDs: true})
	ctx := t.Context()

	// Linkerd is installed first: its namespaces exist. They opt in by
	// name (the chart's rewriteNamespaces); nothing labels them. "demo" is
	// not opted in.
	for _, n := range []string{"linkerd", "linkerd-multicluster", "demo"} {
		kubectl(t, env, nil, "create", "namespace", n)
	}

	// What `linkerd multicluster link` printed before the tunnel existed.
	linkObjs := linkObjects(t, fixtures.Newest(), "link.yaml")
	for _, o := range linkObjs {
		if err := env.Client.Create(ctx, o.DeepCopy()); err != nil {
			t.Fatalf("create %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}

	// Server-side apply of every rendered file, in the documented order
	// (the webhook first: it creates the namespace the tunnel server lives
	// in). The client belongs in the home cluster; applying it here checks
	// that it is valid and that both files agree on the shared Namespace.
	for _, f := range []string{"install-webhook.yaml", "tunnel-server.yaml", "tunnel-client.yaml"} {
		raw, err := os.ReadFile(root("dist", f))
		if err != nil {
			t.Fatal(err)
		}
		_, stderr, err := env.KubectlStderr(raw, "apply", "--server-side", "--field-manager="+fieldManager, "-f", "-")
		if err != nil {
			t.Fatalf("server-side apply dist/%s: %v", f, err)
		}
		if bytes.Contains(stderr, []byte("Warning")) {
			t.Errorf("server-side apply dist/%s warned (Pod Security?):\n%s", f, stderr)
		}
		// Everything in the file is stored.
		for _, o := range loadDist(t, f) {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(o.GroupVersionKind())
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
				t.Errorf("dist/%s: %s %s/%s not stored: %v", f, o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
		}
	}
	// Re-applying is a no-op without conflicts.
	raw, _ := os.ReadFile(root("dist", "install-webhook.yaml"))
	if _, err := env.Kubectl(raw, "apply", "--server-side", "--field-manager="+fieldManager, "-f", "-"); err != nil {
		t.Fatalf("second server-side apply: %v", err)
	}

	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	shipped := as[admissionregistrationv1.MutatingWebhookConfiguration](t, fixtures.OfKind(loadDist(t, "install-webhook.yaml"), "MutatingWebhookConfiguration")[0])
	if err := env.Client.Get(ctx, types.NamespacedName{Name: shipped.Name}, mwc); err != nil {
		t.Fatalf("MutatingWebhookConfiguration %s: %v", shipped.Name, err)
	}
	if len(mwc.Webhooks) != len(shipped.Webhooks) || mwc.Annotations["cert-manager.io/inject-ca-from"] == "" {
		t.Fatalf("registered webhook configuration %s: %d webhooks, annotations %v", mwc.Name, len(mwc.Webhooks), mwc.Annotations)
	}

	t.Run("WebhookDown", func(t *testing.T) { checkWebhookDown(t, env, shipped) })
	t.Run("PodSecurity", func(t *testing.T) { checkPodSecurityAdmission(t, env) })
	t.Run("RBAC", func(t *testing.T) {
		checkRBACExact(t, env)
		checkRBACAccess(t, env)
	})
	t.Run("LinkerdNamespacesUntouched", func(t *testing.T) { checkLinkerdNamespaces(t, env) })
}

// checkLinkerdNamespaces: applying the install neither labelled, annotated
// nor took ownership of Linkerd's namespaces (no field manager of ours).
func checkLinkerdNamespaces(t *testing.T, env *testenv.Env) {
	for _, n := range []string{"linkerd", "linkerd-multicluster"} {
		got := &corev1.Namespace{}
		if err := env.Client.Get(t.Context(), types.NamespacedName{Name: n}, got); err != nil {
			t.Fatal(err)
		}
		for k := range got.Labels {
			if k != "kubernetes.io/metadata.name" {
				t.Errorf("namespace %s gained label %s", n, k)
			}
		}
		if len(got.Annotations) > 0 {
			t.Errorf("namespace %s gained annotations %v", n, got.Annotations)
		}
		for _, mf := range got.ManagedFields {
			if mf.Manager == fieldManager {
				t.Errorf("namespace %s has fields managed by %s", n, fieldManager)
			}
		}
	}
}

func kubectl(t *testing.T, env *testenv.Env, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := env.Kubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// linkObjects returns the Secrets, the Link and the probe Service of a
// fixture file (what the webhook rewrites).
func linkObjects(t *testing.T, version, file string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := fixtures.Objects(version, file)
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if k, _ := mutate.Classify(o); k != mutate.KindNone {
			out = append(out, o)
		}
	}
	if len(out) != 4 {
		t.Fatalf("%s/%s: %d link objects, want 2 Secrets, a Link and a probe Service", version, file, len(out))
	}
	return out
}

func probeService(t *testing.T, version, file string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range linkObjects(t, version, file) {
		if k, _ := mutate.Classify(o); k == mutate.KindProbe {
			return o
		}
	}
	t.Fatalf("%s/%s: no probe Service", version, file)
	return nil
}

// checkWebhookDown writes a probe Service while no webhook answers: the
// shipped failurePolicy decides what the API server does.
func checkWebhookDown(t *testing.T, env *testenv.Env, shipped *admissionregistrationv1.MutatingWebhookConfiguration) {
	var policy admissionregistrationv1.FailurePolicyType
	for _, wh := range shipped.Webhooks {
		for _, r := range wh.Rules {
			if slices.Contains(r.Resources, "services") {
				policy = *wh.FailurePolicy
			}
		}
	}
	probe := probeService(t, fixtures.Newest(), "link-legacy.yaml") // probe-gateway-home
	err := env.Client.Create(t.Context(), probe.DeepCopy())
	switch policy {
	case admissionregistrationv1.Fail:
		if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Fatalf("failurePolicy Fail with no webhook running: create probe Service = %v, want a webhook call failure", err)
		}
	case admissionregistrationv1.Ignore:
		if err != nil {
			t.Fatalf("failurePolicy Ignore with no webhook running: create probe Service: %v", err)
		}
		got := &corev1.Service{}
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(probe), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Fatalf("probe Service stored as %s while the webhook was down, want it unchanged (ClusterIP)", got.Spec.Type)
		}
	default:
		t.Fatalf("probe Service webhook failurePolicy %q", policy)
	}
	// A probe Service in kube-system never reaches the webhook, whatever
	// the policy (the namespaceSelector keeps it away).
	other := probe.DeepCopy()
	other.SetNamespace("kube-system")
	if err := env.Client.Create(t.Context(), other); err != nil {
		t.Fatalf("probe Service in kube-system: %v", err)
	}
}

// checkPodSecurityAdmission creates (dry-run) a Pod from each Deployment's
// template in the restricted namespace: the API server's PodSecurity
// admission must accept it. A root Pod is rejected, so the check can fail.
func checkPodSecurityAdmission(t *testing.T, env *testenv.Env) {
	ctx := t.Context()
	for f := range distFiles {
		for _, u := range fixtures.OfKind(loadDist(t, f), "Deployment") {
			d := as[appsv1.Deployment](t, u)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-psa", Namespace: d.Namespace, Labels: d.Spec.Template.Labels},
				Spec:       *d.Spec.Template.Spec.DeepCopy(),
			}
			if err := env.Client.Create(ctx, pod, client.DryRunAll); err != nil {
				t.Errorf("Pod of Deployment %s/%s rejected: %v", d.Namespace, d.Name, err)
			}
		}
	}
	root := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/root:1"}}},
	}
	if err := env.Client.Create(ctx, root, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "PodSecurity") {
		t.Errorf("a root Pod in %s was not rejected by PodSecurity: %v", ns, err)
	}
}

// rule is one (namespace, apiGroup, resource, verb) grant; namespace "*"
// means cluster-wide.
type rule struct{ ns, group, resource, verb string }

func (r rule) String() string { return fmt.Sprintf("%s %s/%s %s", r.ns, r.group, r.resource, r.verb) }

func expand(ns string, rules []rbacv1.PolicyRule) []rule {
	var out []rule
	for _, pr := range rules {
		for _, g := range pr.APIGroups {
			for _, r := range pr.Resources {
				for _, v := range pr.Verbs {
					out = append(out, rule{ns, g, r, v})
				}
			}
		}
	}
	return out
}

// checkRBACExact collects every grant bound to the webhook ServiceAccount
// and compares it with the list below: exactly what internal/webhook calls
// (its informers, the reconciler's uncached reads and Updates, leader
// election, events). A grant added without need fails here.
func checkRBACExact(t *testing.T, env *testenv.Env) {
	ctx := t.Context()
	isSA := func(subjects []rbacv1.Subject) bool {
		for _, s := range subjects {
			if s.Kind == rbacv1.ServiceAccountKind && s.Name == webhookSA && s.Namespace == ns {
				return true
			}
		}
		return false
	}
	clusterRole := func(name string) []rbacv1.PolicyRule {
		cr := &rbacv1.ClusterRole{}
		if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, cr); err != nil {
			t.Fatalf("ClusterRole %s: %v", name, err)
		}
		if cr.AggregationRule != nil {
			t.Errorf("ClusterRole %s aggregates other roles", name)
		}
		return cr.Rules
	}
	var got []rule
	crbs := &rbacv1.ClusterRoleBindingList{}
	if err := env.Client.List(ctx, crbs); err != nil {
		t.Fatal(err)
	}
	for _, b := range crbs.Items {
		if isSA(b.Subjects) {
			got = append(got, expand("*", clusterRole(b.RoleRef.Name))...)
		}
	}
	rbs := &rbacv1.RoleBindingList{}
	if err := env.Client.List(ctx, rbs); err != nil {
		t.Fatal(err)
	}
	for _, b := range rbs.Items {
		if !isSA(b.Subjects) {
			continue
		}
		if b.RoleRef.Kind == "ClusterRole" {
			got = append(got, expand(b.Namespace, clusterRole(b.RoleRef.Name))...)
			continue
		}
		r := &rbacv1.Role{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.RoleRef.Name}, r); err != nil {
			t.Fatalf("Role %s/%s: %v", b.Namespace, b.RoleRef.Name, err)
		}
		got = append(got, expand(b.Namespace, r.Rules)...)
	}
	want := []rule{
		{"*", "", "namespaces", "list"}, {"*", "", "namespaces", "watch"},
		{ns, "", "services", "list"}, {ns, "", "services", "watch"},
		{ns, "discovery.k8s.io", "endpointslices", "list"}, {ns, "discovery.k8s.io", "endpointslices", "watch"},
		{ns, "coordination.k8s.io", "leases", "get"}, {ns, "coordination.k8s.io", "leases", "create"}, {ns, "coordination.k8s.io", "leases", "update"},
		{ns, "", "events", "create"}, {ns, "", "events", "patch"},
		{ns, "events.k8s.io", "events", "create"}, {ns, "events.k8s.io", "events", "patch"},
	}
	for _, r := range []string{"services", "secrets"} {
		for _, v := range []string{"list", "update"} {
			want = append(want, rule{"linkerd-multicluster", "", r, v})
		}
	}
	want = append(want,
		rule{"linkerd-multicluster", "multicluster.linkerd.io", "links", "list"}, rule{"linkerd-multicluster", "multicluster.linkerd.io", "links", "update"},
		rule{"linkerd-multicluster", "events.k8s.io", "events", "create"}, rule{"linkerd-multicluster", "events.k8s.io", "events", "patch"},
		rule{"linkerd", "", "secrets", "list"}, rule{"linkerd", "", "secrets", "update"},
		rule{"linkerd", "", "services", "list"}, rule{"linkerd", "multicluster.linkerd.io", "links", "list"},
	)
	str := func(rs []rule) []string {
		out := make([]string, 0, len(rs))
		for _, r := range rs {
			out = append(out, r.String())
		}
		sort.Strings(out)
		return slices.Compact(out)
	}
	if g, w := str(got), str(want); !slices.Equal(g, w) {
		var extra, missing []string
		for _, r := range g {
			if !slices.Contains(w, r) {
				extra = append(extra, r)
			}
		}
		for _, r := range w {
			if !slices.Contains(g, r) {
				missing = append(missing, r)
			}
		}
		t.Errorf("webhook ServiceAccount grants differ from what internal/webhook needs:\n  extra:   %v\n  missing: %v", extra, missing)
	}
}

// checkRBACAccess asks the API server's authorizer (SubjectAccessReview, as
// `kubectl auth can-i --as` does) what each ServiceAccount of the install
// may do.
func checkRBACAccess(t *testing.T, env *testenv.Env) {
	type check struct {
		verb, group, resource, ns string
		allowed                   bool
	}
	const mc, linkerd, links = "linkerd-multicluster", "linkerd", "links"
	const lg = "multicluster.linkerd.io"
	webhookChecks := []check{
		// Its job.
		{"list", "", "namespaces", "", true},
		{"watch", "", "namespaces", "", true},
		{"list", "", "services", ns, true},
		{"watch", "", "services", ns, true},
		{"list", lg, links, mc, true},
		{"update", lg, links, mc, true},
		{"list", "", "services", mc, true},
		{"update", "", "services", mc, true},
		{"list", "", "secrets", mc, true},
		{"update", "", "secrets", mc, true},
		{"list", "", "secrets", linkerd, true},
		{"update", "", "secrets", linkerd, true},
		{"get", "coordination.k8s.io", "leases", ns, true},
		{"create", "coordination.k8s.io", "leases", ns, true},
		{"update", "coordination.k8s.io", "leases", ns, true},
		{"create", "", "events", ns, true},
		{"list", "discovery.k8s.io", "endpointslices", ns, true},
		{"watch", "discovery.k8s.io", "endpointslices", ns, true},
		{"create", "events.k8s.io", "events", mc, true},
		{"patch", "events.k8s.io", "events", mc, true},
		// Not its job: Secrets elsewhere, anything cluster-wide but
		// namespaces, deleting, escalating, its own configuration.
		{"list", "", "secrets", "", false},
		{"get", "", "secrets", "default", false},
		{"list", "", "secrets", "kube-system", false},
		{"list", "", "secrets", ns, false},
		{"get", "", "secrets", ns, false},
		{"list", "", "secrets", "demo", false},
		{"watch", "", "secrets", mc, false},
		{"list", "", "services", "", false},
		{"list", "discovery.k8s.io", "endpointslices", "", false},
		{"list", "discovery.k8s.io", "endpointslices", mc, false},
		{"update", "discovery.k8s.io", "endpointslices", ns, false},
		{"get", "", "endpoints", ns, false},
		{"create", "events.k8s.io", "events", "default", false},
		{"update", "", "services", "", false},
		{"update", "", "services", "demo", false},
		{"update", "", "services", linkerd, false},
		{"update", "", "services", ns, false},
		{"update", lg, links, linkerd, false},
		{"list", lg, links, "", false},
		{"delete", "", "services", mc, false},
		{"delete", "", "secrets", mc, false},
		{"delete", lg, links, mc, false},
		{"create", "", "secrets", mc, false},
		{"create", "", "services", mc, false},
		{"update", "", "namespaces", "", false},
		{"get", "", "configmaps", ns, false},
		{"create", "", "pods", ns, false},
		{"create", "rbac.authorization.k8s.io", "rolebindings", ns, false},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", false},
		{"delete", "coordination.k8s.io", "leases", ns, false},
		{"list", "coordination.k8s.io", "leases", "kube-system", false},
	}
	// The tunnel ServiceAccounts have no grants at all.
	tunnelChecks := []check{
		{"get", "", "secrets", ns, false},
		{"list", "", "services", ns, false},
		{"list", "", "pods", ns, false},
		{"list", "", "namespaces", "", false},
	}
	for sa, checks := range map[string][]check{
		webhookSA:            webhookChecks,
		"home-tunnel-server": tunnelChecks,
		"home-tunnel-client": tunnelChecks,
	} {
		for _, c := range checks {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:" + ns + ":" + sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: c.ns, Verb: c.verb, Group: c.group, Resource: c.resource,
				},
			}}
			if err := env.Client.Create(t.Context(), sar); err != nil {
				t.Fatal(err)
			}
			if sar.Status.Allowed != c.allowed {
				where := c.ns
				if where == "" {
					where = "cluster-wide"
				}
				t.Errorf("%s: %s %s.%s in %s: allowed=%v, want %v", sa, c.verb, c.resource, c.group, where, sar.Status.Allowed, c.allowed)
			}
		}
	}
}

// goBuild builds ./cmd/<name> into a temporary folder.
func goBuild(t *testing.T, name string) (string, error) {
	out := filepath.Join(t.TempDir(), name)
	return out, repo.GoBuild("./cmd/"+name, out)
}
