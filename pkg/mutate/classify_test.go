package mutate

import (
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestClassify(t *testing.T) {
	svc := func(labels, annotations string) string {
		return `
apiVersion: v1
kind: Service
metadata:
  name: x
  namespace: linkerd-multicluster
  labels: ` + labels + `
  annotations: ` + annotations + `
spec:
  ports: [{name: mc-probe, port: 4191}]
`
	}
	tests := map[string]struct {
		in      string
		kind    Kind
		cluster string
	}{
		"probe Service":                    {svc(`{mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}`, `{}`), KindProbe, "home"},
		"probe Service of another cluster": {svc(`{mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: east}`, `{}`), KindProbe, "east"},
		"mirrored-gateway false":           {svc(`{mirror.linkerd.io/mirrored-gateway: "false", mirror.linkerd.io/cluster-name: home}`, `{}`), KindNone, ""},
		"probe labels without cluster":     {svc(`{mirror.linkerd.io/mirrored-gateway: "true"}`, `{}`), KindNone, ""},
		"name alone is not enough":         {edit(t, svc(`{mirror.linkerd.io/cluster-name: home}`, `{}`), "name: x", "name: probe-gateway-home"), KindNone, ""},
		"mirror Service":                   {svc(`{mirror.linkerd.io/mirrored-service: "true", mirror.linkerd.io/cluster-name: home}`, `{}`), KindNone, ""},
		"mirror Service that also claims to be a gateway": {
			svc(`{mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/mirrored-service: "true", mirror.linkerd.io/cluster-name: home}`, `{}`), KindNone, "",
		},
		"endpoint mirror with gateway label": {
			svc(`{mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/headless-mirror-svc-name: cache-home, mirror.linkerd.io/cluster-name: home}`, `{}`), KindNone, "",
		},
		"remote-discovery mirror with gateway label": {
			svc(`{mirror.linkerd.io/mirrored-gateway: "true", multicluster.linkerd.io/remote-discovery: home, mirror.linkerd.io/cluster-name: home}`, `{}`), KindNone, "",
		},
		"federated Service with gateway label": {
			svc(`{mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}`, `{multicluster.linkerd.io/remote-discovery: frontend@home}`), KindNone, "",
		},
		"locally federated Service with gateway label": {
			svc(`{mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}`, `{multicluster.linkerd.io/local-discovery: frontend}`), KindNone, "",
		},
		"Endpoints of the probe Service": {
			edit(t, svc(`{mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}`, `{}`), "kind: Service", "kind: Endpoints"), KindNone, "",
		},
		"Service of another API group": {
			edit(t, svc(`{mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}`, `{}`), "apiVersion: v1", "apiVersion: serving.knative.dev/v1"), KindNone, "",
		},
		"Link v1alpha3":                    {linkV3, KindLink, "home"},
		"Link v1alpha1":                    {edit(t, linkV3, "v1alpha3", "v1alpha1"), KindLink, "home"},
		"Link of a future version":         {edit(t, linkV3, "v1alpha3", "v1"), KindLink, "home"},
		"Link named after another cluster": {edit(t, linkV3, "  name: home\n", "  name: link-1\n"), KindLink, "home"},
		"Link without targetClusterName":   {edit(t, linkV3, "  targetClusterName: home\n", ""), KindLink, "home"},
		"Link of another group":            {edit(t, linkV3, "multicluster.linkerd.io/v1alpha3", "example.com/v1"), KindNone, ""},
		"credentials Secret": {`
apiVersion: v1
kind: Secret
metadata: {name: cluster-credentials-home, namespace: linkerd-multicluster}
type: mirror.linkerd.io/remote-kubeconfig
`, KindCredentials, "home"},
		"credentials Secret copy in linkerd, by label": {`
apiVersion: v1
kind: Secret
metadata: {name: cluster-credentials-home, namespace: linkerd, labels: {multicluster.linkerd.io/cluster-name: east}}
type: mirror.linkerd.io/remote-kubeconfig
`, KindCredentials, "east"},
		"kubeconfig Secret named otherwise": {`
apiVersion: v1
kind: Secret
metadata: {name: home-kubeconfig, namespace: linkerd-multicluster}
type: mirror.linkerd.io/remote-kubeconfig
`, KindNone, ""},
		"Opaque Secret named like credentials": {`
apiVersion: v1
kind: Secret
metadata: {name: cluster-credentials-home, namespace: linkerd-multicluster}
type: Opaque
`, KindNone, ""},
		"bare prefix": {`
apiVersion: v1
kind: Secret
metadata: {name: cluster-credentials-, namespace: linkerd-multicluster}
type: mirror.linkerd.io/remote-kubeconfig
`, KindNone, ""},
		"ConfigMap": {`
apiVersion: v1
kind: ConfigMap
metadata: {name: cluster-credentials-home, namespace: linkerd-multicluster, labels: {mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}}
`, KindNone, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := obj(t, tc.in)
			k, c := Classify(in)
			if k != tc.kind || c != tc.cluster {
				t.Errorf("Classify = %q, %q; want %q, %q", k, c, tc.kind, tc.cluster)
			}
			if k == KindNone {
				// Never touched, even with a binding, and without warnings.
				out, changed, w := mutate(t, in, testBinding(), Options{})
				if changed || len(w) > 0 || diff(in, out) != "" {
					t.Errorf("KindNone object changed=%v warnings=%v", changed, w)
				}
			}
		})
	}
	if k, c := Classify(nil); k != KindNone || c != "" {
		t.Errorf("Classify(nil) = %q, %q", k, c)
	}
	bad := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "a/b/c", "kind": "Link", "metadata": map[string]any{"name": "home"}}}
	if k, _ := Classify(bad); k != KindNone {
		t.Errorf("Classify(bad apiVersion) = %q", k)
	}
	if k, _ := Classify(&unstructured.Unstructured{}); k != KindNone {
		t.Errorf("Classify(empty) = %q", k)
	}
}

func TestMutateProgrammingErrors(t *testing.T) {
	link := obj(t, linkV3)
	east := testBinding()
	east.Cluster = "east"
	tests := map[string]struct {
		in   *unstructured.Unstructured
		b    *Binding
		opts Options
		want error
	}{
		"nil object":                 {nil, testBinding(), Options{}, ErrNilObject},
		"empty object":               {&unstructured.Unstructured{}, testBinding(), Options{}, ErrNilObject},
		"binding of another cluster": {link, east, Options{}, ErrClusterMismatch},
		"invalid cluster domain":     {link, testBinding(), Options{ClusterDomain: "Not A Domain"}, ErrInvalidOptions},
		"invalid TLS name":           {link, testBinding(), Options{DefaultTLSServerName: "-x-"}, ErrInvalidOptions},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, changed, _, err := Mutate(tc.in, tc.b, tc.opts)
			if !errors.Is(err, tc.want) || out != nil || changed {
				t.Errorf("Mutate = %v, %v, %v; want error %v", out, changed, err, tc.want)
			}
		})
	}
	// A binding without a cluster name is accepted for any cluster.
	b := testBinding()
	b.Cluster = ""
	if _, changed, _ := mutate(t, link, b, Options{}); !changed {
		t.Error("binding without cluster name not applied")
	}
}

func TestOptions(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Options{DefaultTLSServerName: "fd00::1"}).Validate(); err != nil {
		t.Errorf("IP as TLS server name: %v", err)
	}
	if got := (Options{}).withDefaults(); got != DefaultOptions() {
		t.Errorf("empty options default to %+v", got)
	}
	b := testBinding()
	if got := b.ServiceFQDN(""); got != tunnelFQDN {
		t.Errorf("ServiceFQDN = %q", got)
	}
	if got := b.HeadlessFQDN("example.org."); got != "tunnel-home-gw.linkerd-tunnel.svc.example.org" {
		t.Errorf("HeadlessFQDN = %q", got)
	}
	if got := b.APIServerURL("cluster.local"); got != tunnelServer {
		t.Errorf("APIServerURL = %q", got)
	}
	if got := b.String(); got != "linkerd-tunnel/tunnel-home" {
		t.Errorf("String = %q", got)
	}
}

func TestRewrittenFor(t *testing.T) {
	if v, ok := RewrittenFor(obj(t, linkV3Rewritten)); !ok || v != "linkerd-tunnel/tunnel-home" {
		t.Errorf("RewrittenFor(rewritten) = %q, %v", v, ok)
	}
	for name, u := range map[string]*unstructured.Unstructured{"plain": obj(t, linkV3), "nil": nil, "empty": {}} {
		if v, ok := RewrittenFor(u); ok || v != "" {
			t.Errorf("RewrittenFor(%s) = %q, %v", name, v, ok)
		}
	}
}
