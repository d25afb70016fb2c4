package manifests_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// certificate is what the tests need of a cert-manager Certificate.
type certificate struct {
	name, secretName, issuer string
	isCA                     bool
	duration, renewBefore    time.Duration
	rotation                 string
	dnsNames                 []string
}

func toCertificate(t *testing.T, u *unstructured.Unstructured) certificate {
	t.Helper()
	str := func(f ...string) string {
		v, _, _ := unstructured.NestedString(u.Object, append([]string{"spec"}, f...)...)
		return v
	}
	dur := func(f string) time.Duration {
		d, err := time.ParseDuration(str(f))
		if err != nil {
			t.Fatalf("Certificate %s: %s: %v", u.GetName(), f, err)
		}
		return d
	}
	isCA, _, _ := unstructured.NestedBool(u.Object, "spec", "isCA")
	dns, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "dnsNames")
	return certificate{name: u.GetName(), secretName: str("secretName"), issuer: str("issuerRef", "name"), isCA: isCA,
		duration: dur("duration"), renewBefore: dur("renewBefore"), rotation: str("privateKey", "rotationPolicy"), dnsNames: dns}
}

// servingCertificate returns the Certificate issued for the webhook
// Service's name, its Secret and its DNS names.
func servingCertificate(t *testing.T, objs []*unstructured.Unstructured) (certificate, string, []string) {
	t.Helper()
	for _, u := range fixtures.OfKind(objs, "Certificate") {
		c := toCertificate(t, u)
		for _, n := range c.dnsNames {
			if n == "l5d-tunnel-webhook."+ns+".svc" {
				return c, c.secretName, c.dnsNames
			}
		}
	}
	t.Fatal("no Certificate for l5d-tunnel-webhook." + ns + ".svc")
	return certificate{}, "", nil
}

// checkCAInjection: cainjector fills the caBundle from the Certificate that
// cert-manager.io/inject-ca-from names (the ca.crt of that Certificate's
// Secret). It must name the self-signed CA Certificate, not the serving
// one: the serving Secret's ca.crt is the CA as it was when the leaf was
// issued, and it changes only when the leaf is re-issued. When the CA
// renews itself (renewBefore ahead of its expiry) the bundle would keep the
// old CA until the next leaf renewal, up to the leaf's lifetime minus its
// renewBefore (45 days): API-server calls then fail with "x509: certificate
// has expired" and admission fails open. The real cert-manager reproduced
// it; TestCARenewalKeepsWebhookTrusted replays it with certificates.
func checkCAInjection(t *testing.T, objs []*unstructured.Unstructured, mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	inject := mwc.Annotations["cert-manager.io/inject-ca-from"]
	certNS, certName, ok := strings.Cut(inject, "/")
	if !ok || certNS != ns {
		t.Fatalf("cert-manager.io/inject-ca-from %q: want %s/<CA Certificate>", inject, ns)
	}
	ca := toCertificate(t, find(t, objs, "Certificate", certNS, certName))
	serving, _, _ := servingCertificate(t, objs)
	if ca.name == serving.name || !ca.isCA {
		t.Fatalf("cert-manager.io/inject-ca-from names Certificate %s (isCA %v): it must name the CA Certificate, not the serving one (the bundle would miss a renewed CA)", ca.name, ca.isCA)
	}
	if _, selfSigned, _ := unstructured.NestedMap(find(t, objs, "Issuer", ns, ca.issuer).Object, "spec", "selfSigned"); !selfSigned {
		t.Errorf("CA Certificate %s is issued by %s, which is not self-signed", ca.name, ca.issuer)
	}
	if ca.rotation != "Never" {
		t.Errorf("CA Certificate %s: privateKey.rotationPolicy %q, want Never (leaves signed before a CA renewal must verify against the renewed CA)", ca.name, ca.rotation)
	}
	caSecret, isCAIssuer, _ := unstructured.NestedString(find(t, objs, "Issuer", ns, serving.issuer).Object, "spec", "ca", "secretName")
	if !isCAIssuer || caSecret != ca.secretName {
		t.Errorf("serving Certificate %s is issued by %s (ca.secretName %q), want the CA Issuer of %s's Secret %s (a self-signed serving certificate races cainjector on renewal)",
			serving.name, serving.issuer, caSecret, ca.name, ca.secretName)
	}
}

// TestCARenewalKeepsWebhookTrusted replays, with the chart's durations,
// the worst case of a CA renewal: the serving certificate was issued just
// before the CA renewed, and the API server connects after the old CA
// expired but before the leaf is renewed. It models what cainjector copies
// (the ca.crt of the Secret of the Certificate inject-ca-from names: the
// CA's own Secret holds the current CA, the serving Secret the CA of the day
// the leaf was issued) and verifies the leaf against that bundle as the API
// server does. With the chart's choice the leaf verifies; injecting from the
// serving Certificate fails with an expired CA, which the test also checks
// (so it can fail).
func TestCARenewalKeepsWebhookTrusted(t *testing.T) {
	objs := loadDist(t, "install-webhook.yaml")
	mwc := fixtures.OfKind(objs, "MutatingWebhookConfiguration")[0]
	_, injected, _ := strings.Cut(mwc.GetAnnotations()["cert-manager.io/inject-ca-from"], "/")
	serving, _, _ := servingCertificate(t, objs)
	var ca certificate
	for _, u := range fixtures.OfKind(objs, "Certificate") {
		if c := toCertificate(t, u); c.isCA {
			ca = c
		}
	}
	if ca.name == "" || ca.rotation != "Never" {
		t.Fatalf("no CA Certificate keeping its key: %+v", ca)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	newCA := func(serial int64, from time.Time) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "l5d-tunnel-webhook-ca"},
			NotBefore: from, NotAfter: from.Add(ca.duration), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
		return sign(tmpl, tmpl, &key.PublicKey)
	}
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	caV1 := newCA(1, t0)
	caRenewal := caV1.NotAfter.Add(-ca.renewBefore)
	leafIssued := caRenewal.Add(-time.Hour) // just before the CA renews
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := sign(&x509.Certificate{SerialNumber: big.NewInt(10), Subject: pkix.Name{CommonName: serving.dnsNames[0]}, DNSNames: serving.dnsNames,
		NotBefore: leafIssued, NotAfter: leafIssued.Add(serving.duration), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, caV1, &leafKey.PublicKey)
	caV2 := newCA(2, caRenewal) // same key: rotationPolicy Never
	leafRenewal := leaf.NotAfter.Add(-serving.renewBefore)
	at := caV1.NotAfter.Add(24 * time.Hour) // old CA expired, leaf not yet renewed
	if !at.Before(leafRenewal) {
		t.Fatalf("with these durations the leaf renews (%s) before the old CA expires (%s): nothing to replay", leafRenewal, caV1.NotAfter)
	}

	// The ca.crt of each Certificate's Secret at time at.
	caCrt := map[string]*x509.Certificate{ca.name: caV2, serving.name: caV1}
	verify := func(bundle *x509.Certificate) error {
		roots := x509.NewCertPool()
		roots.AddCert(bundle)
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at, DNSName: serving.dnsNames[0]})
		return err
	}
	bundle, ok := caCrt[injected]
	if !ok {
		t.Fatalf("inject-ca-from names %q, neither %s nor %s", injected, ca.name, serving.name)
	}
	if err := verify(bundle); err != nil {
		t.Errorf("%s after the CA renewed and the old CA expired, the caBundle injected from %s does not verify the serving certificate: %v",
			at.Sub(caRenewal).Round(time.Hour), injected, err)
	}
	if err := verify(caCrt[serving.name]); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("a bundle from the serving Certificate's ca.crt should fail with an expired CA at that time, got %v", err)
	}
}
