package harness

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testpki"
)

// LinkOutput must change exactly the server, CA and token of each
// kubeconfig, and not one other byte of the fixture.
func TestLinkOutputChangesOnlyTheHomeValues(t *testing.T) {
	ca, err := testpki.NewCA("test-home-ca")
	if err != nil {
		t.Fatal(err)
	}
	home := HomeCredentials{Server: "https://192.168.1.10:6443", CAData: ca.CertPEM, Token: "header.payload.signature"}
	for _, v := range fixtures.Versions() {
		for _, file := range []string{"link.yaml", "link-legacy.yaml"} {
			if !fixtures.Has(v, file) {
				continue
			}
			t.Run(v+"/"+file, func(t *testing.T) {
				raw, _ := fixtures.Raw(v, file)
				out, err := LinkOutput(raw, home)
				if err != nil {
					t.Fatal(err)
				}
				inLines, outLines := bytes.Split(raw, []byte("\n")), bytes.Split(out, []byte("\n"))
				if len(inLines) != len(outLines) {
					t.Fatalf("line count %d -> %d", len(inLines), len(outLines))
				}
				changed := 0
				for i := range inLines {
					if !bytes.Equal(inLines[i], outLines[i]) {
						changed++
						if !strings.HasPrefix(strings.TrimSpace(string(inLines[i])), "kubeconfig:") {
							t.Errorf("line %d changed and is not a kubeconfig: %q", i+1, inLines[i])
						}
					}
				}
				in, _ := fixtures.Decode(raw)
				got, _ := fixtures.Decode(out)
				secrets := 0
				for i := range in {
					if in[i].GetKind() != "Secret" {
						continue
					}
					secrets++
					a, err := secretConfig(in[i].Object)
					if err != nil {
						t.Fatal(err)
					}
					b, err := secretConfig(got[i].Object)
					if err != nil {
						t.Fatal(err)
					}
					ctx := b.Contexts[b.CurrentContext]
					cl, ai := b.Clusters[ctx.Cluster], b.AuthInfos[ctx.AuthInfo]
					if cl.Server != home.Server || !bytes.Equal(cl.CertificateAuthorityData, home.CAData) || ai.Token != home.Token {
						t.Errorf("Secret %s/%s does not carry the home values", in[i].GetNamespace(), in[i].GetName())
					}
					// put the fixture's values back: the rest must be identical
					actx := a.Contexts[a.CurrentContext]
					cl.Server = a.Clusters[actx.Cluster].Server
					cl.CertificateAuthorityData = a.Clusters[actx.Cluster].CertificateAuthorityData
					ai.Token = a.AuthInfos[actx.AuthInfo].Token
					ya, _ := clientcmd.Write(*a)
					yb, _ := clientcmd.Write(*b)
					if !bytes.Equal(ya, yb) {
						t.Errorf("Secret %s/%s: more than server, CA and token changed:\n%s\n---\n%s", in[i].GetNamespace(), in[i].GetName(), ya, yb)
					}
				}
				if changed != secrets || secrets == 0 {
					t.Errorf("%d lines changed for %d credentials Secrets", changed, secrets)
				}
			})
		}
	}
}

func TestLinkOutputRejectsOutputWithoutKubeconfig(t *testing.T) {
	if _, err := LinkOutput([]byte("apiVersion: v1\nkind: Service\n"), HomeCredentials{}); err == nil {
		t.Fatal("no error for a link output without credentials")
	}
}

func TestParseBinding(t *testing.T) {
	good := `
apiVersion: v1
kind: Service
metadata: {name: home-tunnel-server, namespace: l5d-tunnel, labels: {l5d-tunnel.io/link: home}}
spec:
  ports: [{name: api, port: 6443, targetPort: 6443}, {name: probe, port: 4191, targetPort: 4191}]
---
apiVersion: v1
kind: Service
metadata: {name: home-tunnel-server-gateway, namespace: l5d-tunnel, labels: {l5d-tunnel.io/link: home}}
spec:
  clusterIP: None
  ports: [{name: gateway, port: 4143, targetPort: 4143}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: l5d-tunnel}
spec: {ports: [{name: api, port: 1}]}
`
	b, err := ParseBinding([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if b.ServiceFQDN() != "home-tunnel-server.l5d-tunnel.svc.cluster.local" || b.HeadlessFQDN() != "home-tunnel-server-gateway.l5d-tunnel.svc.cluster.local" ||
		b.APIPort != 6443 || b.ProbePort != 4191 || b.GatewayPort != 4143 || len(b.Objects) != 2 {
		t.Errorf("parsed %+v", b)
	}
	for name, bad := range map[string]string{
		"no headless":         strings.Split(good, "---")[0],
		"port != targetPort":  strings.Replace(good, "{name: api, port: 6443, targetPort: 6443}", "{name: api, port: 443, targetPort: 6443}", 1),
		"two namespaces":      strings.Replace(good, "home-tunnel-server-gateway, namespace: l5d-tunnel", "home-tunnel-server-gateway, namespace: elsewhere", 1),
		"missing probe port":  strings.Replace(good, ", {name: probe, port: 4191, targetPort: 4191}", "", 1),
		"unlabelled services": strings.ReplaceAll(good, "labels: {l5d-tunnel.io/link: home}", ""),
	} {
		if _, err := ParseBinding([]byte(bad)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
