package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// Ports that differ from Linkerd's (4143, 4191) so a forgotten rewrite shows.
func testBinding(cluster string) *mutate.Binding {
	return &mutate.Binding{
		Cluster: cluster, Namespace: "l5d-tunnel", Service: "tunnel-" + cluster, Headless: "tunnel-" + cluster + "-gw",
		APIPort: 16443, ProbePort: 14191, GatewayPort: 14143,
	}
}

// fakeBindings maps cluster → binding or error.
type fakeBindings struct {
	b   map[string]*mutate.Binding
	err map[string]error
}

func (f fakeBindings) Binding(_ context.Context, c string) (*mutate.Binding, error) {
	return f.b[c], f.err[c]
}

// fakeNamespaces opts in every namespace except those listed.
type fakeNamespaces struct{ out map[string]bool }

func (f fakeNamespaces) OptedIn(_ context.Context, ns string) (bool, error) { return !f.out[ns], nil }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHandler(b fakeBindings, ns fakeNamespaces) *Handler {
	return &Handler{Bindings: b, Namespaces: ns, Options: mutate.DefaultOptions(), Log: quietLog()}
}

// request builds the AdmissionRequest the API server would send for obj.
func request(t testing.TB, op admissionv1.Operation, obj *unstructured.Unstructured) admission.Request {
	t.Helper()
	raw, err := obj.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return rawRequest(op, obj.GetNamespace(), obj.GetName(), obj.GetKind(), raw)
}

func rawRequest(op admissionv1.Operation, ns, name, kind string, raw []byte) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "test-uid",
		Kind:      metav1.GroupVersionKind{Kind: kind},
		Namespace: ns,
		Name:      name,
		Operation: op,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

// apply applies resp's JSON patch to raw.
func apply(t testing.TB, raw []byte, resp admission.Response) []byte {
	t.Helper()
	if len(resp.Patches) == 0 {
		return raw
	}
	js, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(js)
	if err != nil {
		t.Fatalf("decode patch: %v", err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply patch %s: %v", js, err)
	}
	return out
}

func decode(t testing.TB, raw []byte) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		t.Fatal(err)
	}
	return u
}

// linkObjects returns every object of a link fixture file.
func linkObjects(t testing.TB, version, file string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := fixtures.Objects(version, file)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func linkFiles(version string) []string {
	files := []string{"link.yaml"}
	if fixtures.Has(version, "link-legacy.yaml") {
		files = append(files, "link-legacy.yaml")
	}
	return files
}

// TestHandlerRewritesEveryFixture runs every object of every version's link
// output through the handler with a binding, applies the returned patch,
// checks the rewritten fields, and checks that a second pass (an UPDATE of
// the stored object) returns no patch.
func TestHandlerRewritesEveryFixture(t *testing.T) {
	b := testBinding("home")
	h := newHandler(fakeBindings{b: map[string]*mutate.Binding{"home": b}}, fakeNamespaces{})
	for _, v := range fixtures.Versions() {
		for _, file := range linkFiles(v) {
			t.Run(v+"/"+file, func(t *testing.T) {
				seen := map[mutate.Kind]int{}
				for _, obj := range linkObjects(t, v, file) {
					kind, _ := mutate.Classify(obj)
					req := request(t, admissionv1.Create, obj)
					resp := h.Handle(context.Background(), req)
					if !resp.Allowed {
						t.Fatalf("%s %s: denied: %v", obj.GetKind(), obj.GetName(), resp.Result)
					}
					if len(resp.Warnings) > 0 {
						t.Errorf("%s %s: warnings %q", obj.GetKind(), obj.GetName(), resp.Warnings)
					}
					out := apply(t, req.Object.Raw, resp)
					if kind == mutate.KindNone {
						if len(resp.Patches) != 0 {
							t.Errorf("%s %s is not a link object but got patches %v", obj.GetKind(), obj.GetName(), resp.Patches)
						}
						continue
					}
					seen[kind]++
					if len(resp.Patches) == 0 {
						t.Fatalf("%s %s: no patch", kind, obj.GetName())
					}
					got := decode(t, out)
					checkRewritten(t, kind, got, b)

					// Idempotence: the stored object goes through again.
					again := h.Handle(context.Background(), rawRequest(admissionv1.Update, got.GetNamespace(), got.GetName(), got.GetKind(), out))
					if len(again.Patches) != 0 || len(again.Warnings) != 0 {
						t.Errorf("%s %s: second pass patched %v, warned %q", kind, obj.GetName(), again.Patches, again.Warnings)
					}
					// Dry-run requests get the same answer.
					dry := req
					dry.DryRun = ptr.To(true)
					if d := h.Handle(context.Background(), dry); len(d.Patches) != len(resp.Patches) {
						t.Errorf("%s %s: dry run got %d patches, want %d", kind, obj.GetName(), len(d.Patches), len(resp.Patches))
					}
				}
				wantCreds := 2
				if v == "stable-2.12.6" {
					wantCreds = 1
				}
				if seen[mutate.KindLink] != 1 || seen[mutate.KindProbe] != 1 || seen[mutate.KindCredentials] != wantCreds {
					t.Errorf("link objects seen: %v, want 1 link, 1 probe, %d credentials", seen, wantCreds)
				}
			})
		}
	}
}

// checkRewritten asserts the fields of docs/design.md, independently of
// pkg/mutate's own code.
func checkRewritten(t testing.TB, kind mutate.Kind, u *unstructured.Unstructured, b *mutate.Binding) {
	t.Helper()
	ann := u.GetAnnotations()
	if ann[mutate.AnnotationRewrittenFor] != b.String() {
		t.Errorf("%s %s: annotation %s = %q, want %q", kind, u.GetName(), mutate.AnnotationRewrittenFor, ann[mutate.AnnotationRewrittenFor], b.String())
	}
	svc := b.Service + "." + b.Namespace + ".svc.cluster.local"
	hl := b.GatewayAddress("cluster.local") // the headless name unless addresses are ready
	switch kind {
	case mutate.KindLink:
		spec, _, _ := unstructured.NestedMap(u.Object, "spec")
		if spec["gatewayAddress"] != hl {
			t.Errorf("Link gatewayAddress = %v, want %s", spec["gatewayAddress"], hl)
		}
		if want := fmt.Sprint(b.GatewayPort); spec["gatewayPort"] != want {
			t.Errorf("Link gatewayPort = %#v, want string %q", spec["gatewayPort"], want)
		}
		if p, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "probeSpec", "port"); p != fmt.Sprint(b.ProbePort) {
			t.Errorf("Link probeSpec.port = %#v, want string \"%d\"", p, b.ProbePort)
		}
		if ann[mutate.AnnotationOriginalGatewayAddress] == "" {
			t.Errorf("Link lacks %s", mutate.AnnotationOriginalGatewayAddress)
		}
	case mutate.KindProbe:
		spec, _, _ := unstructured.NestedMap(u.Object, "spec")
		if spec["type"] != "ExternalName" || spec["externalName"] != svc {
			t.Errorf("probe Service type %v externalName %v, want ExternalName %s", spec["type"], spec["externalName"], svc)
		}
		for _, f := range []string{"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"} {
			if _, ok := spec[f]; ok {
				t.Errorf("probe Service keeps spec.%s", f)
			}
		}
		ports, _, _ := unstructured.NestedSlice(u.Object, "spec", "ports")
		if len(ports) != 1 || fmt.Sprint(ports[0].(map[string]any)["port"]) != fmt.Sprint(b.ProbePort) {
			t.Errorf("probe Service ports %v, want one port %d", ports, b.ProbePort)
		}
		if u.GetLabels()[mutate.LinkerdLabelMirroredGateway] != "true" || u.GetLabels()[mutate.LinkerdLabelClusterName] != b.Cluster {
			t.Errorf("probe Service lost Linkerd's labels: %v", u.GetLabels())
		}
	case mutate.KindCredentials:
		data, _, _ := unstructured.NestedString(u.Object, "data", "kubeconfig")
		raw, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.Load(raw)
		if err != nil {
			t.Fatalf("rewritten kubeconfig does not load: %v", err)
		}
		c := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
		if want := fmt.Sprintf("https://%s:%d", svc, b.APIPort); c.Server != want {
			t.Errorf("kubeconfig server %q, want %q", c.Server, want)
		}
		orig := ann[mutate.AnnotationOriginalServer]
		if orig == "" || !strings.Contains(orig, c.TLSServerName) || c.TLSServerName == "" {
			t.Errorf("tls-server-name %q does not name the original server %q", c.TLSServerName, orig)
		}
		if len(cfg.AuthInfos) != 1 {
			t.Errorf("kubeconfig users: %d, want 1", len(cfg.AuthInfos))
		}
	}
}

// TestHandlerLeavesMirrorsAlone sends every object the service mirror
// creates through the handler: none is patched or warned about.
func TestHandlerLeavesMirrorsAlone(t *testing.T) {
	h := newHandler(fakeBindings{b: map[string]*mutate.Binding{"home": testBinding("home")}}, fakeNamespaces{})
	for _, v := range fixtures.Versions() {
		for _, obj := range linkObjects(t, v, "mirrored.yaml") {
			if kind, _ := mutate.Classify(obj); kind == mutate.KindProbe {
				continue // the probe Service is in link.yaml; mirrored.yaml has its Endpoints
			}
			resp := h.Handle(context.Background(), request(t, admissionv1.Create, obj))
			if !resp.Allowed || len(resp.Patches) != 0 || len(resp.Warnings) != 0 {
				t.Errorf("%s: %s %s/%s: allowed=%v patches=%v warnings=%q", v, obj.GetKind(), obj.GetNamespace(), obj.GetName(), resp.Allowed, resp.Patches, resp.Warnings)
			}
		}
	}
}

func newestObject(t testing.TB, kind mutate.Kind, namespace string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range linkObjects(t, fixtures.Newest(), "link.yaml") {
		if k, _ := mutate.Classify(o); k == kind && (namespace == "" || o.GetNamespace() == namespace) {
			return o
		}
	}
	t.Fatalf("no %s in the newest fixture", kind)
	return nil
}

// TestHandlerAdmitsUnchanged covers every case that must admit the object
// as it is: with or without a warning, never a denial.
func TestHandlerAdmitsUnchanged(t *testing.T) {
	b := testBinding("home")
	bindings := fakeBindings{b: map[string]*mutate.Binding{"home": b}}
	link := newestObject(t, mutate.KindLink, "")
	secret := newestObject(t, mutate.KindCredentials, "linkerd-multicluster")

	badKubeconfig := secret.DeepCopy()
	if err := unstructured.SetNestedField(badKubeconfig.Object, base64.StdEncoding.EncodeToString([]byte("clusters: [not: a kubeconfig")), "data", "kubeconfig"); err != nil {
		t.Fatal(err)
	}
	noProbeSpec := link.DeepCopy()
	unstructured.RemoveNestedField(noProbeSpec.Object, "spec", "probeSpec")
	otherCluster := link.DeepCopy()
	otherCluster.SetName("elsewhere")
	if err := unstructured.SetNestedField(otherCluster.Object, "elsewhere", "spec", "targetClusterName"); err != nil {
		t.Fatal(err)
	}

	for name, tc := range map[string]struct {
		h       *Handler
		req     admission.Request
		warning string // substring of the only warning; "" = no warning
	}{
		"namespace not opted in": {
			h:   newHandler(bindings, fakeNamespaces{out: map[string]bool{link.GetNamespace(): true}}),
			req: request(t, admissionv1.Create, link),
		},
		"cluster without binding": {
			h:   newHandler(bindings, fakeNamespaces{}),
			req: request(t, admissionv1.Create, otherCluster),
		},
		"binding in untrusted namespace": {
			h:   newHandler(fakeBindings{err: map[string]error{"home": mutate.ErrUntrustedBinding}}, fakeNamespaces{}),
			req: request(t, admissionv1.Create, link),
		},
		"binding missing a port": {
			h:       newHandler(fakeBindings{err: map[string]error{"home": mutate.ErrIncompleteBinding}}, fakeNamespaces{}),
			req:     request(t, admissionv1.Create, link),
			warning: "incomplete tunnel binding",
		},
		"malformed kubeconfig": {
			h:       newHandler(bindings, fakeNamespaces{}),
			req:     request(t, admissionv1.Create, badKubeconfig),
			warning: "kubeconfig",
		},
		"Link without probeSpec": {
			h:       newHandler(bindings, fakeNamespaces{}),
			req:     request(t, admissionv1.Create, noProbeSpec),
			warning: "probeSpec",
		},
		"object that does not decode": {
			h:       newHandler(bindings, fakeNamespaces{}),
			req:     rawRequest(admissionv1.Create, "linkerd-multicluster", "x", "Link", []byte(`{"kind": 7`)),
			warning: "does not decode",
		},
		"delete": {
			h:   newHandler(bindings, fakeNamespaces{}),
			req: request(t, admissionv1.Delete, link),
		},
	} {
		t.Run(name, func(t *testing.T) {
			resp := tc.h.Handle(context.Background(), tc.req)
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			if len(resp.Patches) != 0 {
				t.Errorf("patched: %v", resp.Patches)
			}
			switch {
			case tc.warning == "" && len(resp.Warnings) != 0:
				t.Errorf("unexpected warnings %q", resp.Warnings)
			case tc.warning != "" && (len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], tc.warning) || !strings.HasPrefix(resp.Warnings[0], WarningPrefix)):
				t.Errorf("warnings %q, want one starting %q containing %q", resp.Warnings, WarningPrefix, tc.warning)
			}
			for _, w := range resp.Warnings {
				if strings.Contains(w, "eyJ") || strings.Contains(w, "BEGIN CERTIFICATE") {
					t.Errorf("warning leaks Secret contents: %q", w)
				}
			}
		})
	}
}

// TestHandlerRestoresWithoutBinding: an object rewritten earlier goes back
// to Linkerd's values when its binding is gone, and the round trip gives
// back the object Linkerd wrote.
func TestHandlerRestoresWithoutBinding(t *testing.T) {
	b := testBinding("home")
	with := newHandler(fakeBindings{b: map[string]*mutate.Binding{"home": b}}, fakeNamespaces{})
	without := newHandler(fakeBindings{}, fakeNamespaces{})
	for _, kind := range []mutate.Kind{mutate.KindLink, mutate.KindProbe, mutate.KindCredentials} {
		t.Run(string(kind), func(t *testing.T) {
			orig := newestObject(t, kind, "")
			req := request(t, admissionv1.Create, orig)
			rewritten := apply(t, req.Object.Raw, with.Handle(context.Background(), req))
			resp := without.Handle(context.Background(), rawRequest(admissionv1.Update, orig.GetNamespace(), orig.GetName(), orig.GetKind(), rewritten))
			if len(resp.Patches) == 0 {
				t.Fatal("no restore patch")
			}
			restored := decode(t, apply(t, rewritten, resp))
			for k := range restored.GetAnnotations() {
				if strings.HasPrefix(k, mutate.AnnotationPrefix) {
					t.Errorf("restored object keeps annotation %s", k)
				}
			}
			want := orig.DeepCopy()
			if kind == mutate.KindProbe {
				// ClusterIPs are not restored: the API server allocates new ones.
				for _, f := range []string{"clusterIP", "clusterIPs"} {
					unstructured.RemoveNestedField(want.Object, "spec", f)
					unstructured.RemoveNestedField(restored.Object, "spec", f)
				}
			}
			if kind == mutate.KindCredentials {
				// The kubeconfig is re-serialized: compare its meaning.
				w, _, _ := unstructured.NestedString(want.Object, "data", "kubeconfig")
				g, _, _ := unstructured.NestedString(restored.Object, "data", "kubeconfig")
				if kubeconfigServer(t, w) != kubeconfigServer(t, g) {
					t.Errorf("restored server %q, want %q", kubeconfigServer(t, g), kubeconfigServer(t, w))
				}
				unstructured.RemoveNestedField(want.Object, "data")
				unstructured.RemoveNestedField(restored.Object, "data")
			}
			wj, _ := json.Marshal(want.Object)
			gj, _ := json.Marshal(restored.Object)
			if string(wj) != string(gj) {
				t.Errorf("restored object differs:\n got %s\nwant %s", gj, wj)
			}
		})
	}
}

func kubeconfigServer(t testing.TB, b64 string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
	return c.Server + " tls-server-name=" + c.TLSServerName
}

// TestHandlerNeverLogsSecretContents: objects that do not decode (here a
// Secret without kind, whose decode error quotes the whole object) and bad
// kubeconfigs are logged and warned about without their data.
func TestHandlerNeverLogsSecretContents(t *testing.T) {
	const secretData = "c2VjcmV0LXRva2VuLXZhbHVl" // base64 of a pretend token
	var logs strings.Builder
	h := newHandler(fakeBindings{b: map[string]*mutate.Binding{"home": testBinding("home")}}, fakeNamespaces{})
	h.Log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	secret := newestObject(t, mutate.KindCredentials, "linkerd-multicluster")
	bad := secret.DeepCopy()
	_ = unstructured.SetNestedField(bad.Object, base64.StdEncoding.EncodeToString([]byte("token: "+secretData+"\nclusters: [")), "data", "kubeconfig")
	for name, raw := range map[string][]byte{
		"no kind":        []byte(`{"apiVersion":"v1","metadata":{"name":"cluster-credentials-home"},"type":"mirror.linkerd.io/remote-kubeconfig","data":{"kubeconfig":"` + secretData + `"}}`),
		"bad JSON":       []byte(`{"apiVersion":"v1","kind":"Secret","data":{"kubeconfig":"` + secretData + `"`),
		"bad kubeconfig": func() []byte { js, _ := bad.MarshalJSON(); return js }(),
	} {
		logs.Reset()
		resp := h.Handle(context.Background(), rawRequest(admissionv1.Create, "linkerd-multicluster", "cluster-credentials-home", "Secret", raw))
		if !resp.Allowed || len(resp.Patches) != 0 || len(resp.Warnings) != 1 {
			t.Errorf("%s: allowed=%v patches=%d warnings=%q", name, resp.Allowed, len(resp.Patches), resp.Warnings)
		}
		enc := base64.StdEncoding.EncodeToString([]byte(secretData))
		for _, out := range []string{logs.String(), strings.Join(resp.Warnings, "\n")} {
			if strings.Contains(out, secretData) || strings.Contains(out, enc) || strings.Contains(out, "token:") {
				t.Errorf("%s: Secret contents leaked: %s", name, out)
			}
		}
		if logs.Len() == 0 {
			t.Errorf("%s: nothing logged", name)
		}
	}
}
