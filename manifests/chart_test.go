package manifests_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/internal/extension"
	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/manifests"
)

// required holds the values each chart cannot render without.
var required = map[string]map[string]any{
	manifests.ChartWebhook: {},
	manifests.ChartServer:  {"link": "home"},
	manifests.ChartClient:  {"link": "home", "serverURL": "wss://home.tunnel.example.com/tunnel", "token": map[string]any{"value": "t0ken"}},
}

// with returns the chart's required values with more merged over them
// (maps merged one level deep).
func with(chart string, more map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range required[chart] {
		out[k] = v
	}
	for k, v := range more {
		if m, ok := v.(map[string]any); ok {
			if old, ok := out[k].(map[string]any); ok {
				merged := map[string]any{}
				for k2, v2 := range old {
					merged[k2] = v2
				}
				for k2, v2 := range m {
					merged[k2] = v2
				}
				v = merged
			}
		}
		out[k] = v
	}
	return out
}

func render(t *testing.T, chart string, values map[string]any) []*unstructured.Unstructured {
	t.Helper()
	raw, err := manifests.Render(chart, ns, values)
	if err != nil {
		t.Fatalf("Render(%s, %v): %v", chart, values, err)
	}
	objs, err := fixtures.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// invalidValues are the cases of testdata/invalid-values.yaml (shared with
// hack/helm4, which renders them with Helm 4).
type invalidValues struct {
	Name, Chart string
	Path        string // the value the schema error names
	Error       string // or a text of the template's failure
	Values      map[string]any
}

func loadInvalidValues(t *testing.T) []invalidValues {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "invalid-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []invalidValues
	if err := yaml.UnmarshalStrict(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 20 {
		t.Fatalf("%d cases", len(cases))
	}
	return cases
}

// TestSchemaRejects: every chart's values.schema.json (or, for what a
// schema cannot say, the template) rejects bad values with an error naming
// the value the way --set does and saying what it wants.
func TestSchemaRejects(t *testing.T) {
	for _, c := range loadInvalidValues(t) {
		t.Run(c.Name, func(t *testing.T) {
			_, err := manifests.Render(c.Chart, ns, c.Values)
			if err == nil {
				t.Fatalf("Render(%s, %v) accepted the values", c.Chart, c.Values)
			}
			want := c.Error
			if c.Path != "" {
				want = "\n- " + c.Path + ": "
			}
			if !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "chart "+c.Chart+": ") {
				t.Errorf("error %q: want it to start with \"chart %s: \" and contain %q", err, c.Chart, want)
			}
		})
	}
	if _, err := manifests.Render(manifests.ChartWebhook, "Not_A_Namespace", nil); err == nil || !strings.Contains(err.Error(), "Not_A_Namespace") {
		t.Errorf("bad namespace: %v", err)
	}
	if _, err := manifests.Render("l5d-tunnel-nope", ns, nil); err == nil || !strings.Contains(err.Error(), "unknown chart") {
		t.Errorf("unknown chart: %v", err)
	}
}

// TestDefaults: Values returns each chart's defaults, the defaults with the
// required values render, rendering is deterministic (the server's random
// token aside) and in install order, and every object carries the
// extension's labels and stays in its namespaces.
func TestDefaults(t *testing.T) {
	for _, chart := range manifests.Charts {
		t.Run(chart, func(t *testing.T) {
			v, err := manifests.Values(chart)
			if err != nil {
				t.Fatal(err)
			}
			img, _ := v["image"].(map[string]any)
			if img == nil || img["tag"] != "" || !strings.HasPrefix(img["name"].(string), "ghcr.io/l5d-tunnel/") {
				t.Errorf("image defaults %v", img)
			}
			values := required[chart]
			if chart == manifests.ChartServer {
				values = with(chart, map[string]any{"token": map[string]any{"value": "fixed"}})
			}
			a, err := manifests.Render(chart, ns, values)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := manifests.Render(chart, ns, values)
			if !bytes.Equal(a, b) {
				t.Error("two renderings differ")
			}
			objs, err := fixtures.Decode(a)
			if err != nil {
				t.Fatal(err)
			}
			checkScope(t, chart, objs, []string{"linkerd-multicluster", "linkerd"})
		})
	}
	if _, err := manifests.Values("nope"); err == nil {
		t.Error("Values of an unknown chart")
	}
}

// installOrder is the part of Helm 4's install order the charts use.
var installOrder = []string{"Namespace", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "ConfigMap",
	"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment", "Ingress", "MutatingWebhookConfiguration"}

// checkScope: labels on every object, install order, namespaces (the
// release's, and for RoleBindings only the opted-in ones), and no object
// that is, labels or annotates a Linkerd namespace.
func checkScope(t *testing.T, chart string, objs []*unstructured.Unstructured, rewrite []string) {
	t.Helper()
	last := -1
	for _, o := range objs {
		id := o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
		for k, v := range map[string]string{extension.LabelExtension: extension.Name, "app.kubernetes.io/part-of": "l5d-tunnel"} {
			if o.GetLabels()[k] != v {
				t.Errorf("%s: label %s=%q, want %q", id, k, o.GetLabels()[k], v)
			}
		}
		pos := slices.Index(installOrder, o.GetKind())
		if pos < 0 {
			pos = len(installOrder) // other kinds come last, by name
		}
		if pos < last {
			t.Errorf("%s out of install order", id)
		}
		last = pos
		switch o.GetKind() {
		case "Namespace":
			if o.GetName() != ns || chart == manifests.ChartServer {
				t.Errorf("%s: only the webhook and client charts render a Namespace, their own", id)
			}
		case "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration":
			if o.GetNamespace() != "" {
				t.Errorf("%s: cluster-scoped object with a namespace", id)
			}
		case "RoleBinding":
			if o.GetNamespace() != ns && !slices.Contains(rewrite, o.GetNamespace()) {
				t.Errorf("%s: RoleBinding outside the release namespace and rewriteNamespaces %v", id, rewrite)
			}
		default:
			if o.GetNamespace() != ns {
				t.Errorf("%s: not in the release namespace %s", id, ns)
			}
		}
		if strings.HasPrefix(o.GetName(), "linkerd") {
			t.Errorf("%s: the extension must not render objects named like Linkerd's", id)
		}
	}
}

// fakeCluster answers Helm's lookup from objects.
type fakeCluster struct {
	client *dynamicfake.FakeDynamicClient
}

func newFakeCluster(objs ...runtime.Object) fakeCluster {
	return fakeCluster{dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), objs...)}
}

func (f fakeCluster) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, false, err
	}
	return f.client.Resource(gv.WithResource(strings.ToLower(kind) + "s")), true, nil
}

func tokenSecret(name, token string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Secret")
	u.SetNamespace(ns)
	u.SetName(name)
	_ = unstructured.SetNestedField(u.Object, base64.StdEncoding.EncodeToString([]byte(token)), "data", "token")
	return u
}

// secretToken returns the decoded token of the rendered Secret name, "" if
// there is none.
func secretToken(t *testing.T, raw []byte, name string) string {
	t.Helper()
	objs, err := fixtures.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range fixtures.OfKind(objs, "Secret") {
		if o.GetName() == name {
			s := as[corev1.Secret](t, o)
			return string(s.Data["token"])
		}
	}
	return ""
}

// TestToken: the server's token Secret takes token.value, else keeps the
// token already in the cluster (helm upgrade never rotates it), else is
// random; the client's takes token.value, else keeps the cluster's, else
// refuses to render; token.create=false renders no Secret.
func TestToken(t *testing.T) {
	const name = "home-tunnel-token"
	for _, chart := range []string{manifests.ChartServer, manifests.ChartClient} {
		t.Run(chart, func(t *testing.T) {
			base := with(chart, nil)
			delete(base, "token")
			given := with(chart, map[string]any{"token": map[string]any{"value": "given-token"}})
			raw, err := manifests.Render(chart, ns, given)
			if err != nil {
				t.Fatal(err)
			}
			if got := secretToken(t, raw, name); got != "given-token" {
				t.Errorf("token.value given: Secret holds %q", got)
			}
			// Reuse: the cluster already holds a token.
			raw, err = manifests.RenderWithCluster(chart, ns, base, newFakeCluster(tokenSecret(name, "existing-token")))
			if err != nil {
				t.Fatal(err)
			}
			if got := secretToken(t, raw, name); got != "existing-token" {
				t.Errorf("existing Secret: rendered token %q, want the cluster's", got)
			}
			// A Secret of another link is not reused.
			raw, err = manifests.RenderWithCluster(chart, ns, base, newFakeCluster(tokenSecret("other-tunnel-token", "other")))
			switch chart {
			case manifests.ChartServer:
				if err != nil {
					t.Fatal(err)
				}
				a := secretToken(t, raw, name)
				b := secretToken(t, must(manifests.Render(chart, ns, base)), name)
				if !regexp.MustCompile(`^[A-Za-z0-9]{48}$`).MatchString(a) || a == b || a == "other" {
					t.Errorf("no Secret yet: tokens %q and %q, want two different random 48-character tokens", a, b)
				}
			case manifests.ChartClient:
				if err == nil || !strings.Contains(err.Error(), "token.value is required") {
					t.Errorf("client without a token: %v", err)
				}
			}
			raw, err = manifests.Render(chart, ns, with(chart, map[string]any{"token": map[string]any{"create": false}}))
			if err != nil {
				t.Fatal(err)
			}
			objs, _ := fixtures.Decode(raw)
			if n := len(fixtures.OfKind(objs, "Secret")); n != 0 {
				t.Errorf("token.create=false: %d Secrets", n)
			}
			// Either way, the pod mounts the link's Secret.
			d := as[appsv1.Deployment](t, fixtures.OfKind(objs, "Deployment")[0])
			if v := d.Spec.Template.Spec.Volumes[0]; v.Secret == nil || v.Secret.SecretName != name {
				t.Errorf("token volume %+v, want Secret %s", v, name)
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestIngress: off by default; on, it routes exactly /tunnel on the host
// to the websocket Service with the class, TLS Secret and annotations
// given.
func TestIngress(t *testing.T) {
	if n := len(fixtures.OfKind(render(t, manifests.ChartServer, required[manifests.ChartServer]), "Ingress")); n != 0 {
		t.Errorf("ingress.enabled=false renders %d Ingresses", n)
	}
	objs := render(t, manifests.ChartServer, with(manifests.ChartServer, map[string]any{"ingress": map[string]any{
		"enabled": true, "host": "t.example.com", "className": "traefik",
		"annotations": map[string]any{"traefik.ingress.kubernetes.io/router.tls": "true"},
	}}))
	ings := fixtures.OfKind(objs, "Ingress")
	if len(ings) != 1 {
		t.Fatalf("%d Ingresses", len(ings))
	}
	ing := as[networkingv1.Ingress](t, ings[0])
	ws := as[corev1.Service](t, find(t, objs, "Service", ns, "home-tunnel-server-ws"))
	want := networkingv1.IngressSpec{
		IngressClassName: ptr("traefik"),
		TLS:              []networkingv1.IngressTLS{{Hosts: []string{"t.example.com"}, SecretName: "home-tunnel-server-ingress-tls"}},
		Rules: []networkingv1.IngressRule{{Host: "t.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/tunnel", PathType: ptr(networkingv1.PathTypeExact), Backend: networkingv1.IngressBackend{
				Service: &networkingv1.IngressServiceBackend{Name: ws.Name, Port: networkingv1.ServiceBackendPort{Name: "tunnel"}}}}}}}}},
	}
	if !reflect.DeepEqual(ing.Spec, want) {
		t.Errorf("Ingress spec\n got %+v\nwant %+v", ing.Spec, want)
	}
	if !reflect.DeepEqual(ing.Annotations, map[string]string{"traefik.ingress.kubernetes.io/router.tls": "true"}) {
		t.Errorf("annotations %v", ing.Annotations)
	}
	ing = as[networkingv1.Ingress](t, fixtures.OfKind(render(t, manifests.ChartServer, with(manifests.ChartServer, map[string]any{"ingress": map[string]any{
		"enabled": true, "host": "t.example.com", "tlsSecretName": "my-cert",
	}})), "Ingress")[0])
	if ing.Spec.IngressClassName != nil || ing.Spec.TLS[0].SecretName != "my-cert" || len(ing.Annotations) != 0 {
		t.Errorf("no class, own TLS Secret: %+v %v", ing.Spec, ing.Annotations)
	}
}

func ptr[T any](v T) *T { return &v }

// TestRewriteNamespaces: the one value drives the webhook's flag and the
// RoleBindings; the three namespaceSelectors only keep kube-system and the
// webhook's own namespace away (the webhook decides the rest, by name or
// label: mutate.OptedIn).
func TestRewriteNamespaces(t *testing.T) {
	rewrite := []string{"linkerd-multicluster", "linkerd", "team-a"}
	objs := render(t, manifests.ChartWebhook, map[string]any{"rewriteNamespaces": []any{"linkerd-multicluster", "linkerd", "team-a"}})
	checkScope(t, manifests.ChartWebhook, objs, rewrite)

	d := as[appsv1.Deployment](t, find(t, objs, "Deployment", ns, "l5d-tunnel-webhook"))
	if got, _ := flagValue(d.Spec.Template.Spec.Containers[0].Args, "rewrite-namespaces"); got != strings.Join(rewrite, ",") {
		t.Errorf("--rewrite-namespaces=%q, want %q", got, strings.Join(rewrite, ","))
	}
	mwc := as[admissionregistrationv1.MutatingWebhookConfiguration](t, fixtures.OfKind(objs, "MutatingWebhookConfiguration")[0])
	wantSel := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", ns}},
	}}
	for _, wh := range mwc.Webhooks {
		if !reflect.DeepEqual(wh.NamespaceSelector, wantSel) {
			t.Errorf("webhook %s: namespaceSelector %+v, want %+v", wh.Name, wh.NamespaceSelector, wantSel)
		}
	}
	bound := map[string]string{}
	for _, u := range fixtures.OfKind(objs, "RoleBinding") {
		rb := as[rbacv1.RoleBinding](t, u)
		if rb.Namespace != ns {
			bound[rb.Namespace] = rb.RoleRef.Name
		}
	}
	want := map[string]string{"linkerd-multicluster": "l5d-tunnel-webhook-rewrite", "linkerd": "l5d-tunnel-webhook-credentials", "team-a": "l5d-tunnel-webhook-rewrite"}
	if !reflect.DeepEqual(bound, want) {
		t.Errorf("RoleBindings outside %s: %v, want %v", ns, bound, want)
	}
	// Linkerd in another namespace (linkerd -L): its credentials-only
	// binding follows linkerdNamespace.
	objs = render(t, manifests.ChartWebhook, map[string]any{"rewriteNamespaces": []any{"mc", "l5d"}, "linkerdNamespace": "l5d"})
	for _, u := range fixtures.OfKind(objs, "RoleBinding") {
		rb := as[rbacv1.RoleBinding](t, u)
		if w := map[string]string{"mc": "l5d-tunnel-webhook-rewrite", "l5d": "l5d-tunnel-webhook-credentials", ns: "l5d-tunnel-webhook"}[rb.Namespace]; rb.RoleRef.Name != w {
			t.Errorf("RoleBinding %s/%s binds %s, want %s", rb.Namespace, rb.Name, rb.RoleRef.Name, w)
		}
	}
}

// TestClientValues: upstreams, the server URL's port in the egress policy,
// and the CA bundle reach the client.
func TestClientValues(t *testing.T) {
	pem := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	objs := render(t, manifests.ChartClient, with(manifests.ChartClient, map[string]any{
		"serverURL": "wss://t.example.com:8443/tunnel", "caBundle": pem,
		"upstreams": map[string]any{"api": "10.0.0.1:16443"},
	}))
	d := as[appsv1.Deployment](t, find(t, objs, "Deployment", ns, "home-tunnel-client"))
	c := d.Spec.Template.Spec.Containers[0]
	if got := flagValues(c.Args, "upstream"); !slices.Contains(got, "api=10.0.0.1:16443") {
		t.Errorf("--upstream %v", got)
	}
	caFile, ok := flagValue(c.Args, "ca-file")
	if !ok || !mountedFile(c, caFile) {
		t.Errorf("--ca-file %q not in a mounted volume", caFile)
	}
	cm := as[corev1.ConfigMap](t, find(t, objs, "ConfigMap", ns, "home-tunnel-client-ca"))
	if strings.TrimSpace(cm.Data["ca.crt"]) != strings.TrimSpace(pem) {
		t.Errorf("CA ConfigMap %q", cm.Data["ca.crt"])
	}
	np := as[networkingv1.NetworkPolicy](t, find(t, objs, "NetworkPolicy", ns, "home-tunnel-client"))
	var egress []int32
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			egress = append(egress, p.Port.IntVal)
		}
	}
	for _, p := range []int32{8443, 16443, 4143, 4191} {
		if !slices.Contains(egress, p) {
			t.Errorf("egress ports %v lack %d", egress, p)
		}
	}
	// Without a CA bundle: no ConfigMap, no --ca-file.
	objs = render(t, manifests.ChartClient, required[manifests.ChartClient])
	if len(fixtures.OfKind(objs, "ConfigMap")) != 0 {
		t.Error("ConfigMap without caBundle")
	}
	if _, ok := flagValue(as[appsv1.Deployment](t, fixtures.OfKind(objs, "Deployment")[0]).Spec.Template.Spec.Containers[0].Args, "ca-file"); ok {
		t.Error("--ca-file without caBundle")
	}
}
