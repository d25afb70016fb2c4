package mutate

import (
	"encoding/base64"
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// written renders an AnnotationRewrittenValues value.
func written(kv ...string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	js, _ := json.Marshal(m)
	return string(js)
}

func TestMutateCredentials(t *testing.T) {
	b := testBinding()
	other := testBinding()
	other.APIPort = 7443
	ipKC := kubeconfig(t, "https://192.168.1.10:6443", nil)
	rewrittenIP := secret(t, kubeconfig(t, tunnelServer, func(c *clientcmdapi.Config) { c.Clusters["home"].TLSServerName = "192.168.1.10" }),
		map[string]string{
			AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
			AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "192.168.1.10"),
			AnnotationOriginalServer:  "https://192.168.1.10:6443",
		})
	type want struct {
		server, tls string            // in the current context's cluster; "" = absent
		ann         map[string]string // our annotations (others are checked unchanged)
	}
	tests := map[string]struct {
		in      *unstructured.Unstructured
		b       *Binding
		opts    Options
		want    *want // nil = unchanged
		warning string
	}{
		"IP server: tls-server-name is the IP": {
			in: secret(t, ipKC, nil), b: b,
			want: &want{server: tunnelServer, tls: "192.168.1.10", ann: rewrittenIP.GetAnnotations()},
		},
		"host name server: tls-server-name is the host": {
			in: secret(t, kubeconfig(t, "https://Home-API.example.internal.:6443", nil), nil), b: b,
			want: &want{server: tunnelServer, tls: "home-api.example.internal", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "home-api.example.internal"),
				AnnotationOriginalServer:  "https://Home-API.example.internal.:6443",
			}},
		},
		"IPv6 server": {
			in: secret(t, kubeconfig(t, "https://[fd00::10]:6443", nil), nil), b: b,
			want: &want{server: tunnelServer, tls: "fd00::10", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "fd00::10"),
				AnnotationOriginalServer:  "https://[fd00::10]:6443",
			}},
		},
		"bare host:port server": {
			in: secret(t, kubeconfig(t, "192.168.1.10:6443", nil), nil), b: b,
			want: &want{server: tunnelServer, tls: "192.168.1.10", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "192.168.1.10"),
				AnnotationOriginalServer:  "192.168.1.10:6443",
			}},
		},
		"existing tls-server-name is kept": {
			in: secret(t, kubeconfig(t, "https://192.168.1.10:6443", func(c *clientcmdapi.Config) { c.Clusters["home"].TLSServerName = "api.home.internal" }), nil),
			b:  b,
			want: &want{server: tunnelServer, tls: "api.home.internal", ann: map[string]string{
				AnnotationRewrittenFor:          "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues:       written(FieldServer, tunnelServer, FieldTLSServerName, "api.home.internal"),
				AnnotationOriginalServer:        "https://192.168.1.10:6443",
				AnnotationOriginalTLSServerName: "api.home.internal",
			}},
		},
		"server already at the tunnel (seed --api-server-address): default tls-server-name": {
			in: secret(t, kubeconfig(t, "https://tunnel-home.linkerd-tunnel.svc.cluster.local:443", nil), nil), b: b,
			want: &want{server: tunnelServer, tls: "kubernetes.default.svc", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "kubernetes.default.svc"),
				AnnotationOriginalServer:  "https://tunnel-home.linkerd-tunnel.svc.cluster.local:443",
			}},
		},
		"server at another in-cluster name: configured default tls-server-name": {
			in: secret(t, kubeconfig(t, "https://inlets-api.tunnels.svc:6443", nil), nil), b: b,
			opts: Options{DefaultTLSServerName: "api.home.internal"},
			want: &want{server: tunnelServer, tls: "api.home.internal", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "api.home.internal"),
				AnnotationOriginalServer:  "https://inlets-api.tunnels.svc:6443",
			}},
		},
		"server at the binding's short name": {
			in: secret(t, kubeconfig(t, "https://tunnel-home.linkerd-tunnel:6443", nil), nil), b: b,
			want: &want{server: tunnelServer, tls: "kubernetes.default.svc", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "kubernetes.default.svc"),
				AnnotationOriginalServer:  "https://tunnel-home.linkerd-tunnel:6443",
			}},
		},
		"cluster domain option": {
			in: secret(t, ipKC, nil), b: b, opts: Options{ClusterDomain: "corp.example"},
			want: &want{server: "https://tunnel-home.linkerd-tunnel.svc.corp.example:6443", tls: "192.168.1.10", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, "https://tunnel-home.linkerd-tunnel.svc.corp.example:6443", FieldTLSServerName, "192.168.1.10"),
				AnnotationOriginalServer:  "https://192.168.1.10:6443",
			}},
		},
		"binding moved: seed-style original still gets the default name": {
			in: secret(t, kubeconfig(t, "https://t.tunnels.svc.cluster.local:443", func(c *clientcmdapi.Config) { c.Clusters["home"].TLSServerName = "kubernetes.default.svc" }), map[string]string{
				AnnotationRewrittenFor:    "tunnels/t",
				AnnotationRewrittenValues: written(FieldServer, "https://t.tunnels.svc.cluster.local:443", FieldTLSServerName, "kubernetes.default.svc"),
				AnnotationOriginalServer:  "https://tunnel-old.tunnels.svc:443",
			}),
			b: b,
			want: &want{server: tunnelServer, tls: "kubernetes.default.svc", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "kubernetes.default.svc"),
				AnnotationOriginalServer:  "https://tunnel-old.tunnels.svc:443",
			}},
		},
		"rewritten Secret is left as is": {in: rewrittenIP, b: b},
		"rewritten Secret without binding is restored": {
			in:   rewrittenIP,
			want: &want{server: "https://192.168.1.10:6443"},
		},
		"api port change re-rewrites from the originals": {
			in: rewrittenIP, b: other,
			want: &want{server: "https://tunnel-home.linkerd-tunnel.svc.cluster.local:7443", tls: "192.168.1.10", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, "https://tunnel-home.linkerd-tunnel.svc.cluster.local:7443", FieldTLSServerName, "192.168.1.10"),
				AnnotationOriginalServer:  "https://192.168.1.10:6443",
			}},
		},
		"kubeconfig re-applied by the user (new server) is rewritten from its values": {
			in: secret(t, kubeconfig(t, "https://home-api.example.internal:6443", nil), rewrittenIP.GetAnnotations()), b: b,
			want: &want{server: tunnelServer, tls: "home-api.example.internal", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "home-api.example.internal"),
				AnnotationOriginalServer:  "https://home-api.example.internal:6443",
			}},
		},
		"other annotations and the linkerd-namespace copy": {
			in: func() *unstructured.Unstructured {
				u := secret(t, ipKC, map[string]string{"multicluster.linkerd.io/trust-domain": "cluster.local"})
				u.SetNamespace("linkerd")
				u.SetLabels(map[string]string{LinkerdLabelMCClusterName: "home"})
				return u
			}(),
			b: b,
			want: &want{server: tunnelServer, tls: "192.168.1.10", ann: map[string]string{
				AnnotationRewrittenFor:    "linkerd-tunnel/tunnel-home",
				AnnotationRewrittenValues: written(FieldServer, tunnelServer, FieldTLSServerName, "192.168.1.10"),
				AnnotationOriginalServer:  "https://192.168.1.10:6443",
			}},
		},
		"Secret without binding or annotations is not touched": {in: secret(t, ipKC, nil)},

		// Bad input: the warning never quotes the kubeconfig.
		"data.kubeconfig is not base64": {
			in: secret(t, "%%%"+testToken, nil), b: b, warning: "data.kubeconfig is not valid base64",
		},
		"data.kubeconfig is not a kubeconfig": {
			in:      secret(t, base64.StdEncoding.EncodeToString([]byte("token: "+testToken+"\n  - ]: 192.168.1.10")), nil),
			b:       b,
			warning: "data.kubeconfig does not parse as a kubeconfig",
		},
		"data.kubeconfig is a kubeconfig of the wrong kind": {
			in:      secret(t, base64.StdEncoding.EncodeToString([]byte("apiVersion: v1\nkind: Pod\n")), nil),
			b:       b,
			warning: "data.kubeconfig does not parse as a kubeconfig",
		},
		"no current context": {
			in: secret(t, kubeconfig(t, "https://192.168.1.10:6443", func(c *clientcmdapi.Config) { c.CurrentContext = "" }), nil), b: b,
			warning: "has no current-context",
		},
		"current context missing": {
			in: secret(t, kubeconfig(t, "https://192.168.1.10:6443", func(c *clientcmdapi.Config) { c.CurrentContext = "cloud" }), nil), b: b,
			warning: "has no context named by its current-context",
		},
		"cluster of the context missing": {
			in: secret(t, kubeconfig(t, "https://192.168.1.10:6443", func(c *clientcmdapi.Config) { c.Contexts["home"].Cluster = "gone" }), nil), b: b,
			warning: "has no cluster named by its current context",
		},
		"no server": {
			in: secret(t, kubeconfig(t, "", nil), nil), b: b,
			warning: "is not a URL with a host",
		},
		"empty data.kubeconfig": {
			in: secret(t, "", nil), b: b,
			warning: "has no current-context",
		},
		"data.kubeconfig is a number": {
			in: func() *unstructured.Unstructured {
				u := secret(t, ipKC, nil)
				u.Object["data"] = map[string]any{"kubeconfig": int64(12)}
				return u
			}(),
			b:       b,
			warning: "data.kubeconfig is a number, want a base64 string",
		},
		"data.kubeconfig missing": {
			in: func() *unstructured.Unstructured {
				u := secret(t, ipKC, nil)
				u.Object["data"] = map[string]any{"token": base64.StdEncoding.EncodeToString([]byte(testToken))}
				return u
			}(),
			b: b, warning: "data.kubeconfig is missing",
		},
		"data is a string": {
			in: func() *unstructured.Unstructured {
				u := secret(t, ipKC, nil)
				u.Object["data"] = "kubeconfig"
				return u
			}(),
			b: b, warning: "data is a string, want an object",
		},
		"stringData.kubeconfig set": {
			in: func() *unstructured.Unstructured {
				u := secret(t, ipKC, nil)
				u.Object["stringData"] = map[string]any{"kubeconfig": "apiVersion: v1"}
				return u
			}(),
			b: b, warning: "stringData.kubeconfig is set",
		},
		"malformed kubeconfig of a rewritten Secret is not restored": {
			in: secret(t, "bm90IHlhbWw6IDogOg==", rewrittenIP.GetAnnotations()), warning: "does not parse as a kubeconfig",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if k, c := Classify(tc.in); k != KindCredentials || c != "home" {
				t.Fatalf("Classify = %q, %q", k, c)
			}
			out, changed, warnings := mutate(t, tc.in, tc.b, tc.opts)
			checkWarning(t, warnings, tc.warning, tc.want == nil)
			if changed != (tc.want != nil) {
				t.Errorf("changed = %v", changed)
			}
			if tc.want == nil {
				if d := diff(tc.in, out); d != "" {
					t.Errorf("output (-want +got):\n%s", d)
				}
				return
			}
			inCfg, _ := loadKubeconfig(t, tc.in)
			cfg, cluster := loadKubeconfig(t, out)
			if cluster.Server != tc.want.server || cluster.TLSServerName != tc.want.tls {
				t.Errorf("server, tls-server-name = %q, %q; want %q, %q", cluster.Server, cluster.TLSServerName, tc.want.server, tc.want.tls)
			}
			// Everything else in the kubeconfig is kept: CA, token, contexts.
			cluster.Server, cluster.TLSServerName = "", ""
			inCluster := inCfg.Clusters[inCfg.Contexts[inCfg.CurrentContext].Cluster]
			inCluster.Server, inCluster.TLSServerName = "", ""
			if d := diffAny(inCfg, cfg); d != "" {
				t.Errorf("kubeconfig changed beyond server and tls-server-name (-in +out):\n%s", d)
			}
			// Annotations: ours as wanted, the others untouched.
			wantAnn := withoutOurs(tc.in.GetAnnotations())
			for k, v := range tc.want.ann {
				wantAnn[k] = v
			}
			if d := diffAny(wantAnn, out.GetAnnotations()); d != "" && !(len(wantAnn) == 0 && len(out.GetAnnotations()) == 0) {
				t.Errorf("annotations (-want +got):\n%s", d)
			}
			// Nothing but data.kubeconfig and annotations changed.
			strip := func(u *unstructured.Unstructured) *unstructured.Unstructured {
				c := u.DeepCopy()
				unstructured.RemoveNestedField(c.Object, "data", "kubeconfig")
				unstructured.RemoveNestedField(c.Object, "metadata", "annotations")
				return c
			}
			if d := diff(strip(tc.in), strip(out)); d != "" {
				t.Errorf("Secret changed beyond kubeconfig and annotations:\n%s", d)
			}
			if _, again, w := mutate(t, out, tc.b, tc.opts); again {
				t.Errorf("second Mutate changed the object again (warnings %v)", w)
			}
		})
	}
}

// TestRestoreCredentialsIsExact checks that a kubeconfig written by clientcmd
// comes back byte for byte after rewrite and restore.
func TestRestoreCredentialsIsExact(t *testing.T) {
	for name, kc := range map[string]string{
		"IP":               kubeconfig(t, "https://192.168.1.10:6443", nil),
		"tls-server-name":  kubeconfig(t, "https://192.168.1.10:6443", func(c *clientcmdapi.Config) { c.Clusters["home"].TLSServerName = "api.home" }),
		"two contexts":     kubeconfig(t, "https://192.168.1.10:6443", func(c *clientcmdapi.Config) { c.Contexts["x"] = &clientcmdapi.Context{Cluster: "home", AuthInfo: "y"} }),
		"seed tunnel name": kubeconfig(t, "https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443", nil),
	} {
		t.Run(name, func(t *testing.T) {
			in := secret(t, kc, map[string]string{"a": "b"})
			rw, changed, _ := mutate(t, in, testBinding(), Options{})
			if !changed {
				t.Fatal("not rewritten")
			}
			back, changed, _ := mutate(t, rw, nil, Options{})
			if !changed {
				t.Fatal("not restored")
			}
			if d := diff(in, back); d != "" {
				t.Errorf("restore differs (-original +restored):\n%s", d)
			}
		})
	}
}
