package manifests_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

const fieldManager = "l5d-tunnel-install"

// The example binding as the webhook must see it once dist/tunnel-server.yaml
// is applied.
var exampleBinding = mutate.Binding{Cluster: exampleCluster, Namespace: ns, Service: "home-tunnel-server",
	Headless: "home-tunnel-server-gateway", APIPort: 6443, ProbePort: 4191, GatewayPort: 4143}

// TestInstallOnAPIServer installs dist/*.yaml on a real kube-apiserver with
// cert-manager's CRDs and Linkerd's Link CRD, the way docs/install.md does,
// then proves on that server: the workloads pass the "restricted" Pod
// Security admission, the webhook configuration is registered as shipped,
// the webhook ServiceAccount's RBAC is exactly what it needs, and the webhook
// binary, running with that ServiceAccount's token and the shipped flags,
// reconciles objects written before it ran and rewrites new ones through the
// shipped webhook configuration.
func TestInstallOnAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	// Build the webhook while the control plane starts.
	var (
		bin    string
		binErr error
		built  sync.WaitGroup
	)
	built.Add(1)
	go func() {
		defer built.Done()
		bin, binErr = goBuild(t, "webhook")
	}()

	env := testenv.Start(t, testenv.Options{CertManagerCRDs: true})
	ctx := t.Context()

	// Linkerd is installed first: its namespaces exist and the user opts
	// them in (docs/install.md, step 1). "demo" does not opt in.
	for _, n := range []string{"linkerd", "linkerd-multicluster", "demo"} {
		kubectl(t, env, nil, "create", "namespace", n)
	}
	kubectl(t, env, nil, "label", "namespace", "linkerd", "linkerd-multicluster", mutate.LabelRewrite+"="+mutate.LabelRewriteEnabled)

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
	shipped := as[admissionregistrationv1.MutatingWebhookConfiguration](t, ofKind(loadDist(t, "install-webhook.yaml"), "MutatingWebhookConfiguration")[0])
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
	t.Run("WebhookBinary", func(t *testing.T) {
		built.Wait()
		if binErr != nil {
			t.Fatalf("build cmd/webhook: %v", binErr)
		}
		runWebhook(t, env, bin, mwc, linkObjs)
	})
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
	// A probe Service in a namespace that did not opt in never reaches the
	// webhook, whatever the policy.
	other := probe.DeepCopy()
	other.SetNamespace("demo")
	if err := env.Client.Create(t.Context(), other); err != nil {
		t.Fatalf("probe Service in a namespace that did not opt in: %v", err)
	}
}

// checkPodSecurityAdmission creates (dry-run) a Pod from each Deployment's
// template in the restricted namespace: the API server's PodSecurity
// admission must accept it. A root Pod is rejected, so the check can fail.
func checkPodSecurityAdmission(t *testing.T, env *testenv.Env) {
	ctx := t.Context()
	for f := range distFiles {
		for _, u := range ofKind(loadDist(t, f), "Deployment") {
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
		"tunnel-client":      tunnelChecks,
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

// runWebhook runs bin/webhook with the Deployment's own arguments, the
// webhook ServiceAccount's token (TokenRequest) and a serving certificate,
// points the registered webhook configuration at it (URL instead of the
// in-cluster Service, nothing else changed) and checks that it does its job
// with nothing but the shipped RBAC.
func runWebhook(t *testing.T, env *testenv.Env, bin string, mwc *admissionregistrationv1.MutatingWebhookConfiguration, linkObjs []*unstructured.Unstructured) {
	ctx := t.Context()
	dir := t.TempDir()
	token := strings.TrimSpace(string(kubectl(t, env, nil, "create", "token", webhookSA, "-n", ns, "--duration=1h")))
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos[webhookSA] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: webhookSA}
	kc.CurrentContext = "sa"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(dir, "certs")
	caPEM := writeServingCert(t, certDir)

	ports := freePorts(t, 3)
	d := as[appsv1.Deployment](t, find(t, loadDist(t, "install-webhook.yaml"), "Deployment", ns, "l5d-tunnel-webhook"))
	var args []string
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch name {
		case "cert-dir":
			a = "--cert-dir=" + certDir
		case "port":
			a = "--port=" + strconv.Itoa(ports[0])
		case "health-addr":
			a = "--health-addr=127.0.0.1:" + strconv.Itoa(ports[1])
		case "metrics-addr":
			a = "--metrics-addr=127.0.0.1:" + strconv.Itoa(ports[2])
		}
		args = append(args, a)
	}
	args = append(args, "--bind-address=127.0.0.1", "--kubeconfig="+kubeconfig)

	// The API server calls the local webhook; everything else in the
	// registered configuration stays as shipped.
	for i := range mwc.Webhooks {
		ref := mwc.Webhooks[i].ClientConfig.Service
		url := "https://127.0.0.1:" + strconv.Itoa(ports[0]) + *ref.Path
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
	}
	if err := env.Client.Update(ctx, mwc); err != nil {
		t.Fatalf("point the webhook configuration at the local webhook: %v", err)
	}

	var logs syncBuffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+ns)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("webhook did not stop within 20s of SIGTERM")
		}
	}
	t.Cleanup(func() { _ = stop() })
	defer func() {
		if t.Failed() {
			t.Logf("webhook logs:\n%s", logs.String())
		}
	}()

	readyz := "http://127.0.0.1:" + strconv.Itoa(ports[1]) + "/readyz"
	waitFor(t, 60*time.Second, "webhook /readyz", exited, func() error {
		resp, err := http.Get(readyz)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	// The reconciler repairs what was written before it ran: the four
	// objects of `linkerd multicluster link` and the probe Service written
	// while the webhook was down.
	want := mutate.DefaultOptions()
	b := exampleBinding
	waitFor(t, 60*time.Second, "reconciled link objects", exited, func() error {
		for _, o := range append(slices.Clone(linkObjs), probeService(t, fixtures.Newest(), "link-legacy.yaml")) {
			if err := checkRewritten(ctx, env, o, &b, want); err != nil {
				return err
			}
		}
		return nil
	})

	// Admission through the shipped rules: a new probe Service is
	// rewritten when it is created.
	probe := probeService(t, "stable-2.14.10", "link.yaml")
	probe.SetName("probe-gateway-home-2")
	if err := env.Client.Create(ctx, probe); err != nil {
		t.Fatalf("create probe Service with the webhook up: %v", err)
	}
	if probe.Object["spec"].(map[string]any)["type"] != "ExternalName" {
		t.Errorf("probe Service created with the webhook up came back as %v, want ExternalName", probe.Object["spec"])
	}

	// Leader election used the Lease the RBAC allows.
	lease := &coordinationv1.Lease{}
	waitFor(t, 30*time.Second, "leader Lease", exited, func() error {
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "l5d-tunnel-webhook"}, lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})

	if err := stop(); err != nil {
		t.Errorf("webhook exit after SIGTERM: %v", err)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "forbidden") || strings.Contains(l, "cannot list") || strings.Contains(l, "cannot update") {
			t.Errorf("webhook hit RBAC: %s", line)
		}
	}
	if strings.Contains(logs.String(), token) {
		t.Error("the webhook logged its token")
	}
}

// checkRewritten compares the stored object with what pkg/mutate makes of
// the original for the binding.
func checkRewritten(ctx context.Context, env *testenv.Env, orig *unstructured.Unstructured, b *mutate.Binding, o mutate.Options) error {
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(orig.GroupVersionKind())
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(orig), got); err != nil {
		return err
	}
	key := fmt.Sprintf("%s %s/%s", got.GetKind(), got.GetNamespace(), got.GetName())
	if got.GetAnnotations()[mutate.AnnotationRewrittenFor] != b.String() {
		return fmt.Errorf("%s: %s=%q, want %q", key, mutate.AnnotationRewrittenFor, got.GetAnnotations()[mutate.AnnotationRewrittenFor], b.String())
	}
	// Stored state is a fixed point of Mutate for this binding.
	if _, changed, _, err := mutate.Mutate(got, b, o); err != nil || changed {
		return fmt.Errorf("%s: Mutate of the stored object changed=%v err=%v: not fully rewritten", key, changed, err)
	}
	switch k, _ := mutate.Classify(got); k {
	case mutate.KindProbe:
		if en, _, _ := unstructured.NestedString(got.Object, "spec", "externalName"); en != b.ServiceFQDN(o.ClusterDomain) {
			return fmt.Errorf("%s: externalName %q, want %q", key, en, b.ServiceFQDN(o.ClusterDomain))
		}
	case mutate.KindLink:
		if ga, _, _ := unstructured.NestedString(got.Object, "spec", "gatewayAddress"); ga != b.HeadlessFQDN(o.ClusterDomain) {
			return fmt.Errorf("%s: gatewayAddress %q, want %q", key, ga, b.HeadlessFQDN(o.ClusterDomain))
		}
	case mutate.KindCredentials:
		kc, _, _ := unstructured.NestedString(got.Object, "data", mutate.LinkerdKubeconfigKey)
		raw, err := base64.StdEncoding.DecodeString(kc)
		if err != nil {
			return fmt.Errorf("%s: %v", key, err)
		}
		if !bytes.Contains(raw, []byte(b.APIServerURL(o.ClusterDomain))) {
			return fmt.Errorf("%s: kubeconfig does not point at %s", key, b.APIServerURL(o.ClusterDomain))
		}
	}
	return nil
}

func waitFor(t *testing.T, timeout time.Duration, what string, exited <-chan error, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case e := <-exited:
			t.Fatalf("waiting for %s: the webhook exited: %v", what, e)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// goBuild builds ./cmd/<name> into a temporary folder.
func goBuild(t *testing.T, name string) (string, error) {
	out := filepath.Join(t.TempDir(), name)
	return out, repo.GoBuild("./cmd/"+name, out)
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// writeServingCert writes a self-signed certificate for 127.0.0.1 as
// tls.crt/tls.key (the layout cert-manager's Secret has) and returns it as
// the CA bundle.
func writeServingCert(t *testing.T, dir string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "l5d-tunnel-webhook.l5d-tunnel.svc"},
		DNSNames:              []string{"l5d-tunnel-webhook.l5d-tunnel.svc"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM
}

// syncBuffer is a bytes.Buffer safe for the process's writers and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
