package healthcheck

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// decodeJSON decodes `check -o json` strictly and returns its checks by
// description.
func decodeJSON(t *testing.T, out string) (JSONOutput, map[string]*JSONCheck) {
	t.Helper()
	doc := assertJSONShape(t, []byte(out))
	byDesc := map[string]*JSONCheck{}
	for _, c := range doc.Categories {
		for _, ch := range c.Checks {
			byDesc[ch.Description] = ch
		}
	}
	return doc, byDesc
}

func categoryNames(doc JSONOutput) string {
	var n []string
	for _, c := range doc.Categories {
		n = append(n, c.Name)
	}
	return strings.Join(n, ",")
}

// descriptions of the checks of the full setup, in order.
var allChecks = []string{
	"can initialize the client",
	"can query the Kubernetes API",
	"tunnel extension Namespace exists",
	"tunnel webhook or tunnel client is installed",
	"webhook Deployment is available",
	"webhook serving certificate is valid",
	"webhook serving certificate is not about to expire",
	"webhook configuration's caBundle trusts the serving certificate",
	"webhook answers admission requests",
	"Link linkerd-multicluster/home has a usable tunnel binding",
	"tunnel server of link home is ready (a client is connected)",
	"Link linkerd-multicluster/home is rewritten for the tunnel",
	"probe Service of link home is rewritten for the tunnel",
	"credentials Secrets of link home are rewritten for the tunnel",
	"tunnel client l5d-tunnel-home/home-tunnel-client is connected",
	"tunnel client l5d-tunnel-home/home-tunnel-client upstreams resolve",
	"tunnel client l5d-tunnel-home/home-tunnel-client upstream ports are Service ports",
}

// mustPass runs the check (waiting up to a minute, as `--wait` does) and
// fails the test unless every check passes.
func (c *cluster) mustPass(t *testing.T) JSONOutput {
	t.Helper()
	out, code := c.execute(t, "check", "-o", "json", "--wait=60s")
	doc, _ := decodeJSON(t, out)
	if code != 0 || !doc.Success {
		t.Fatalf("check exit %d, want 0:\n%s", code, out)
	}
	return doc
}

// expectFailure runs `check -o json --wait=0s` and checks that the check
// desc has the result want with an error containing msg and its hint.
func (c *cluster) expectFailure(t *testing.T, desc, want, anchor, msg string) map[string]*JSONCheck {
	t.Helper()
	out, code := c.execute(t, "check", "-o", "json", "--wait=0s")
	doc, by := decodeJSON(t, out)
	if want == ResultError && (code != 1 || doc.Success) {
		t.Errorf("exit %d, success %v; want exit 1", code, doc.Success)
	}
	ch := by[desc]
	switch {
	case ch == nil:
		t.Fatalf("no check %q in:\n%s", desc, out)
	case ch.Result != want || !strings.Contains(ch.Error, msg) || ch.Hint != HintBaseURL+anchor:
		t.Fatalf("check %q = %+v; want result %s, error containing %q, hint %s", desc, *ch, want, msg, HintBaseURL+anchor)
	}
	return by
}

func TestCheck(t *testing.T) {
	c := startCluster(t)

	t.Run("passing setup", func(t *testing.T) {
		doc := c.mustPass(t)
		var got []string
		for _, cat := range doc.Categories {
			for _, ch := range cat.Checks {
				got = append(got, ch.Description)
			}
		}
		if strings.Join(got, "\n") != strings.Join(allChecks, "\n") {
			t.Errorf("checks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(allChecks, "\n"))
		}
		if n := categoryNames(doc); n != "linkerd-tunnel,linkerd-tunnel-webhook,linkerd-tunnel-links,linkerd-tunnel-client" {
			t.Errorf("categories %s", n)
		}
	})

	t.Run("table output", func(t *testing.T) {
		out, code := c.execute(t, "check", "--wait=0s")
		if code != 0 || !strings.HasSuffix(out, "\nStatus check results are √\n") || !strings.HasPrefix(out, "linkerd-tunnel\n--------------\n√ can initialize the client\n") {
			t.Errorf("exit %d, table:\n%s", code, out)
		}
		out, code = c.execute(t, "check", "-o", "short", "--wait=0s")
		if code != 0 || out != "Status check results are √\n" {
			t.Errorf("short: exit %d, %q", code, out)
		}
	})

	t.Run("linkerd check's flags and unknown flags", func(t *testing.T) {
		// what `linkerd check` appends (getExtensionCheckFlags), and a flag
		// of some future version
		out, code := c.execute(t, "check", "--as-group=[]", "--linkerd-namespace=linkerd", "--verbose=false",
			"--namespace=default", "--proxy=false", "--wait=5m0s", "--future-flag=1", "--other-future-flag", "--output=json")
		if doc, _ := decodeJSON(t, out); code != 0 || !doc.Success {
			t.Errorf("exit %d:\n%s", code, out)
		}
		if _, code := c.execute(t, "check", "-o", "yaml"); code != 2 {
			t.Errorf("-o yaml: exit %d, want 2", code)
		}
		out, code = c.execute(t, "check", "--pre", "-o", "json")
		doc, by := decodeJSON(t, out)
		if code != 0 || categoryNames(doc) != CategoryPre || by["the Link CRD is installed (needed in the cloud cluster)"].Result != ResultSuccess {
			t.Errorf("--pre: exit %d:\n%s", code, out)
		}
		if ch := by["cert-manager is installed (needed in the cloud cluster)"]; ch == nil || ch.Result != ResultWarning {
			t.Errorf("--pre without cert-manager: %+v, want a warning", ch)
		}
	})

	t.Run("tunnel not ready, then ready within --wait", func(t *testing.T) {
		c.writeSlice(t, extNS, "home-tunnel-server-gateway", "10.244.0.10", false)
		c.expectFailure(t, "tunnel server of link home is ready (a client is connected)", ResultError, "link-tunnel-ready", "check the tunnel client in the home cluster")
		done := make(chan int)
		go func() {
			_, code := c.execute(t, "check", "-o", "json", "--wait=60s")
			done <- code
		}()
		time.Sleep(time.Second)
		c.writeSlice(t, extNS, "home-tunnel-server-gateway", "10.244.0.10", true)
		if code := <-done; code != 0 {
			t.Errorf("check with --wait while the tunnel came up: exit %d", code)
		}
	})

	t.Run("home: client not connected", func(t *testing.T) {
		c.setAvailable(t, clientNS, "home-tunnel-client", 0)
		c.expectFailure(t, "tunnel client l5d-tunnel-home/home-tunnel-client is connected", ResultError, "client-connected", "/readyz")
		c.setAvailable(t, clientNS, "home-tunnel-client", 1)
	})

	t.Run("home: upstream without endpoint", func(t *testing.T) {
		c.writeSlice(t, mcNS, "linkerd-gateway", "10.244.5.5", false)
		c.expectFailure(t, "tunnel client l5d-tunnel-home/home-tunnel-client upstreams resolve", ResultError, "client-upstreams",
			"upstream gateway: Service linkerd-multicluster/linkerd-gateway has no ready endpoint")
		c.writeSlice(t, mcNS, "linkerd-gateway", "10.244.5.5", true)
	})

	t.Run("home: upstream port is no Service port (warning)", func(t *testing.T) {
		c.editClientArgs(t, "probe=linkerd-gateway.linkerd-multicluster:4191", "probe=linkerd-gateway.linkerd-multicluster:4999")
		c.expectFailure(t, "tunnel client l5d-tunnel-home/home-tunnel-client upstream ports are Service ports", ResultWarning, "client-upstream-ports",
			"upstream probe: Service linkerd-multicluster/linkerd-gateway has no port 4999")
		out, code := c.execute(t, "check", "--wait=0s")
		if code != 0 || !strings.Contains(out, "\n‼ tunnel client l5d-tunnel-home/home-tunnel-client upstream ports are Service ports\n") ||
			!strings.HasSuffix(out, "\n\nStatus check results are √\n") {
			t.Errorf("a warning alone must not fail the check: exit %d\n%s", code, out)
		}
		c.editClientArgs(t, "probe=linkerd-gateway.linkerd-multicluster:4999", "probe=linkerd-gateway.linkerd-multicluster:4191")
	})

	t.Run("webhook Deployment unavailable", func(t *testing.T) {
		c.setAvailable(t, extNS, "l5d-tunnel-webhook", 0)
		c.expectFailure(t, "webhook Deployment is available", ResultError, "webhook-available", "no replica of Deployment l5d-tunnel/l5d-tunnel-webhook is available")
		c.setAvailable(t, extNS, "l5d-tunnel-webhook", 2)
	})

	// the certificate cases replace the Secret and put the original back
	var orig corev1.Secret
	if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: extNS, Name: servingSc}, &orig); err != nil {
		t.Fatal(err)
	}
	restoreCert := func(t *testing.T) { c.setServingSecret(t, orig.Data["tls.crt"], orig.Data["tls.key"]) }
	t.Run("serving Secret missing", func(t *testing.T) {
		if err := c.Client.Delete(t.Context(), orig.DeepCopy()); err != nil {
			t.Fatal(err)
		}
		by := c.expectFailure(t, "webhook serving certificate is valid", ResultError, "webhook-cert", "Secret l5d-tunnel/l5d-tunnel-webhook-tls not found")
		if by["webhook serving certificate is not about to expire"] != nil {
			t.Errorf("the expiry check ran without a certificate")
		}
		restoreCert(t)
	})
	now := time.Now()
	t.Run("serving certificate expired", func(t *testing.T) {
		crt, key := issue(t, now.Add(-48*time.Hour), now.Add(-time.Hour))
		c.setServingSecret(t, crt, key)
		c.expectFailure(t, "webhook serving certificate is valid", ResultError, "webhook-cert", "expired at")
		restoreCert(t)
	})
	t.Run("serving certificate expires soon (warning), other CA", func(t *testing.T) {
		crt, key := issue(t, now.Add(-time.Hour), now.Add(12*time.Hour))
		c.setServingSecret(t, crt, key)
		c.expectFailure(t, "webhook serving certificate is not about to expire", ResultWarning, "webhook-cert-expiry", "the serving certificate expires in 1")
		c.expectFailure(t, "webhook configuration's caBundle trusts the serving certificate", ResultError, "webhook-ca-bundle",
			"its caBundle does not verify the serving certificate of Secret l5d-tunnel/l5d-tunnel-webhook-tls")
		restoreCert(t)
	})
	t.Run("serving certificate and key do not match", func(t *testing.T) {
		_, key := issue(t, now.Add(-time.Hour), now.Add(30*24*time.Hour))
		c.setServingSecret(t, orig.Data["tls.crt"], key)
		c.expectFailure(t, "webhook serving certificate is valid", ResultError, "webhook-cert", "are not a key pair")
		restoreCert(t)
	})
	c.mustPass(t)

	t.Run("Link namespace not opted in", func(t *testing.T) {
		c.editArgs(t, extNS, "l5d-tunnel-webhook", "--rewrite-namespaces="+rewriteNS, "--rewrite-namespaces=linkerd")
		c.expectFailure(t, "Link linkerd-multicluster/home has a usable tunnel binding", ResultError, "link-binding",
			"namespace linkerd-multicluster is not opted in, so the webhook leaves the link alone: opt namespace linkerd-multicluster in")
		c.editArgs(t, extNS, "l5d-tunnel-webhook", "--rewrite-namespaces=linkerd", "--rewrite-namespaces="+rewriteNS)
	})

	t.Run("no Link: the webhook's check echo answers", func(t *testing.T) {
		c.kubectl(t, "delete", "link", "-n", mcNS, "home")
		doc := c.mustPass(t)
		if n := categoryNames(doc); n != "linkerd-tunnel,linkerd-tunnel-webhook,linkerd-tunnel-client" {
			t.Errorf("categories without a Link: %s", n)
		}
	})

	t.Run("webhook not called", func(t *testing.T) {
		c.stopWebhook()
		c.expectFailure(t, "webhook answers admission requests", ResultError, "webhook-answers", "got no answer from the webhook")
	})

	t.Run("Link not rewritten", func(t *testing.T) {
		// re-applied while no webhook runs: stored as Linkerd wrote it
		raw, err := fixturesLink()
		if err != nil {
			t.Fatal(err)
		}
		c.apply(t, raw)
		c.expectFailure(t, "Link linkerd-multicluster/home is rewritten for the tunnel", ResultError, "link-rewritten", "is not rewritten for binding l5d-tunnel/home-tunnel-server (differs in ")
	})

	t.Run("binding changed: probe Service and credentials out of date", func(t *testing.T) {
		c.apply(t, strings.NewReplacer("port: 6443", "port: 7443", "port: 4191", "port: 5191").Replace(bindingYAML(extNS)))
		c.expectFailure(t, "probe Service of link home is rewritten for the tunnel", ResultError, "link-probe-rewritten", "is rewritten for l5d-tunnel/home-tunnel-server but out of date")
		c.expectFailure(t, "credentials Secrets of link home are rewritten for the tunnel", ResultError, "link-credentials-rewritten", "differs in data.kubeconfig")
	})

	t.Run("binding in an untrusted namespace", func(t *testing.T) {
		c.kubectl(t, "delete", "service", "-n", extNS, "-l", "l5d-tunnel.io/link=home")
		c.kubectl(t, "create", "namespace", "elsewhere")
		c.apply(t, bindingYAML("elsewhere"))
		c.expectFailure(t, "Link linkerd-multicluster/home has a usable tunnel binding", ResultError, "link-binding", "not trusted")
	})

	t.Run("no binding", func(t *testing.T) {
		c.kubectl(t, "delete", "service", "-n", "elsewhere", "-l", "l5d-tunnel.io/link=home")
		by := c.expectFailure(t, "Link linkerd-multicluster/home has a usable tunnel binding", ResultError, "link-binding",
			"no Service is labelled l5d-tunnel.io/link=home in the trusted namespaces (l5d-tunnel): install the tunnel server")
		if by["tunnel server of link home is ready (a client is connected)"] != nil {
			t.Errorf("the Link's other checks ran without a binding")
		}
	})

	t.Run("no webhook or client Deployment", func(t *testing.T) {
		for _, d := range []client.ObjectKey{{Namespace: extNS, Name: "l5d-tunnel-webhook"}, {Namespace: clientNS, Name: "home-tunnel-client"}} {
			c.kubectl(t, "label", "deployment", "-n", d.Namespace, d.Name, LabelComponent+"-")
		}
		c.expectFailure(t, "tunnel webhook or tunnel client is installed", ResultError, "ext-components", "install the webhook in the cloud cluster")
	})

	t.Run("no extension Namespace", func(t *testing.T) {
		for _, ns := range []string{extNS, clientNS} {
			c.kubectl(t, "label", "namespace", ns, "linkerd.io/extension-")
		}
		out, code := c.execute(t, "check", "--wait=0s")
		want := "linkerd-tunnel\n--------------\n√ can initialize the client\n√ can query the Kubernetes API\n× tunnel extension Namespace exists\n" +
			"    no Namespace is labelled linkerd.io/extension=tunnel: install the extension (cloud: `linkerd tunnel install | kubectl apply -f -`; home: `linkerd tunnel client NAME --server-url URL | kubectl apply -f -`)\n" +
			"    see " + HintBaseURL + "ext-namespace for hints\n\nStatus check results are ×\n"
		if code != 1 || out != want {
			t.Errorf("exit %d, table:\n%s\nwant:\n%s", code, out, want)
		}
	})
}

func fixturesLink() (string, error) {
	raw, err := fixtures.Raw(fixtures.Newest(), "link.yaml")
	return string(raw), err
}

// editClientArgs replaces one arg of the tunnel client container.
func (c *cluster) editClientArgs(t *testing.T, from, to string) {
	t.Helper()
	c.editArgs(t, clientNS, "home-tunnel-client", from, to)
}

// editArgs replaces one arg of a Deployment's first container.
func (c *cluster) editArgs(t *testing.T, ns, name, from, to string) {
	t.Helper()
	var d appsv1.Deployment
	if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
		t.Fatal(err)
	}
	args := d.Spec.Template.Spec.Containers[0].Args
	found := false
	for i := range args {
		if args[i] == from {
			args[i], found = to, true
		}
	}
	if !found {
		t.Fatalf("no arg %q in %q", from, args)
	}
	if err := c.Client.Update(t.Context(), &d); err != nil {
		t.Fatal(err)
	}
}

// issue makes a serving certificate for the envtest webhook address signed
// by a new CA (so no caBundle trusts it) and valid in [from, to].
func issue(t *testing.T, from, to time.Time) (crtPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: from.Add(-time.Hour), NotAfter: to.Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "l5d-tunnel-webhook.l5d-tunnel.svc"},
		DNSNames: []string{"l5d-tunnel-webhook.l5d-tunnel.svc", "localhost"}, NotBefore: from, NotAfter: to,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}
