package mutate

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// testBinding is the binding most tests use: ports that differ from
// Linkerd's (4143, 4191) so that a forgotten rewrite shows.
func testBinding() *Binding {
	return &Binding{
		Cluster: "home", Namespace: "linkerd-tunnel", Service: "tunnel-home", Headless: "tunnel-home-gw",
		APIPort: 6443, ProbePort: 14191, GatewayPort: 14143,
	}
}

const (
	tunnelFQDN   = "tunnel-home.linkerd-tunnel.svc.cluster.local"
	headlessFQDN = "tunnel-home-gw.linkerd-tunnel.svc.cluster.local"
	tunnelServer = "https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443"
	testCAData   = "-----BEGIN CERTIFICATE-----\nnot-a-real-ca\n-----END CERTIFICATE-----\n"
	testToken    = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLXBheWxvYWQ.c2lnbmF0dXJl"
)

// obj decodes one YAML document.
func obj(t testing.TB, y string) *unstructured.Unstructured {
	t.Helper()
	objs, err := fixtures.Decode([]byte(y))
	if err != nil || len(objs) != 1 {
		t.Fatalf("decode test object: %v (%d objects)", err, len(objs))
	}
	return objs[0]
}

// kubeconfig builds a base64 kubeconfig like the one `linkerd multicluster
// link` prints; edit may change it before it is serialized.
func kubeconfig(t testing.TB, server string, edit func(*clientcmdapi.Config)) string {
	t.Helper()
	c := clientcmdapi.NewConfig()
	c.Clusters["home"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: []byte(testCAData)}
	c.AuthInfos["linkerd-service-mirror-remote-access-default"] = &clientcmdapi.AuthInfo{Token: testToken}
	c.Contexts["home"] = &clientcmdapi.Context{Cluster: "home", AuthInfo: "linkerd-service-mirror-remote-access-default"}
	c.CurrentContext = "home"
	if edit != nil {
		edit(c)
	}
	raw, err := clientcmd.Write(*c)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// secret builds a credentials Secret holding kubeconfig (base64).
func secret(t testing.TB, kc string, annotations map[string]string) *unstructured.Unstructured {
	t.Helper()
	u := obj(t, `
apiVersion: v1
kind: Secret
metadata:
  name: cluster-credentials-home
  namespace: linkerd-multicluster
type: mirror.linkerd.io/remote-kubeconfig
`)
	u.Object["data"] = map[string]any{"kubeconfig": kc}
	if annotations != nil {
		u.SetAnnotations(annotations)
	}
	return u
}

// loadKubeconfig decodes data.kubeconfig of a Secret and returns the cluster
// of the current context.
func loadKubeconfig(t testing.TB, u *unstructured.Unstructured) (*clientcmdapi.Config, *clientcmdapi.Cluster) {
	t.Helper()
	enc, _, _ := unstructured.NestedString(u.Object, "data", "kubeconfig")
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatalf("data.kubeconfig: %v", err)
	}
	c, err := clientcmd.Load(raw)
	if err != nil {
		t.Fatalf("kubeconfig does not load: %v", err)
	}
	ctx := c.Contexts[c.CurrentContext]
	if ctx == nil || c.Clusters[ctx.Cluster] == nil {
		t.Fatalf("kubeconfig has no current context/cluster")
	}
	return c, c.Clusters[ctx.Cluster]
}

// mutate calls Mutate and checks what holds for every call: the input is
// not modified, the output is a distinct copy, changed tells whether the
// output differs, and warnings never leak a Secret's contents.
func mutate(t testing.TB, in *unstructured.Unstructured, b *Binding, opts Options) (*unstructured.Unstructured, bool, []string) {
	t.Helper()
	before := in.DeepCopy()
	out, changed, warnings, err := Mutate(in, b, opts)
	if err != nil {
		t.Fatalf("Mutate: unexpected error %v", err)
	}
	if !reflect.DeepEqual(before.Object, in.Object) {
		t.Fatalf("Mutate modified its input:\n%s", cmp.Diff(before.Object, in.Object))
	}
	if out == in || out == nil {
		t.Fatalf("Mutate returned its input or nil")
	}
	if differs := !reflect.DeepEqual(in.Object, out.Object); differs != changed {
		t.Fatalf("changed=%v but output differs=%v", changed, differs)
	}
	checkNoLeak(t, in, warnings)
	return out, changed, warnings
}

// checkRow is the check of one row of a rewrite table: Mutate of in with b
// and opts gives the warning (none when warning is empty), the object want
// (in itself, unchanged, when want is empty) and changed accordingly, and a
// second Mutate of the output changes nothing. It returns the output.
func checkRow(t *testing.T, in *unstructured.Unstructured, b *Binding, opts Options, want, warning string) *unstructured.Unstructured {
	t.Helper()
	out, changed, warnings := mutate(t, in, b, opts)
	checkWarning(t, warnings, warning, want == "")
	wantObj := in
	if want != "" {
		wantObj = obj(t, want)
	}
	if d := diff(wantObj, out); d != "" {
		t.Errorf("output (-want +got):\n%s", d)
	}
	if changed != (want != "") {
		t.Errorf("changed = %v", changed)
	}
	if _, again, w := mutate(t, out, b, opts); again {
		t.Errorf("second Mutate changed the object again (warnings %v)", w)
	}
	return out
}

// checkWarning checks that there is exactly one warning containing want, or
// none when want is empty; a warning about an object left unchanged must say
// so.
func checkWarning(t *testing.T, warnings []string, want string, leftUnchanged bool) {
	t.Helper()
	switch {
	case want == "" && len(warnings) > 0:
		t.Errorf("unexpected warnings %q", warnings)
	case want != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], want)):
		t.Errorf("warnings = %q, want one containing %q", warnings, want)
	case want != "" && leftUnchanged != strings.Contains(warnings[0], "left unchanged"):
		t.Errorf("warning %q: says \"left unchanged\" = %v, want %v", warnings[0], !leftUnchanged, leftUnchanged)
	}
}

// checkNoLeak fails when a warning quotes Secret data.
func checkNoLeak(t testing.TB, in *unstructured.Unstructured, warnings []string) {
	t.Helper()
	if in.GetKind() != "Secret" {
		return
	}
	data, _ := in.Object["data"].(map[string]any)
	for _, w := range warnings {
		for _, secretish := range []string{testToken, "not-a-real-ca", "192.168.1.10", "home-api.example.internal", "eyJ"} {
			if strings.Contains(w, secretish) {
				t.Errorf("warning leaks Secret contents (%q): %s", secretish, w)
			}
		}
		for _, v := range data {
			if s, ok := v.(string); ok && len(s) > 8 && strings.Contains(w, s[:8]) {
				t.Errorf("warning quotes Secret data: %s", w)
			}
		}
	}
}

// diff compares two objects.
func diff(want, got *unstructured.Unstructured) string {
	return cmp.Diff(want.Object, got.Object)
}

// diffAny compares any two values.
func diffAny(want, got any) string { return cmp.Diff(want, got) }
