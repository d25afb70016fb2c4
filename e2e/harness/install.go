package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/healthcheck"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testpki"
)

// The e2e installs l5d-tunnel the way a user does: it runs the extension
// CLI (`linkerd-tunnel install`, `server`, `client`) against the clusters and
// applies what it prints, server-side. What no process here provides is
// stood in for, each in one place: cert-manager (issueCertificates), the
// kubelet (PodProcess and the pod stand-in in pods.go) and an ingress (the
// tunnel server's --listen and TLS, in components.go).

// LinkerdTunnel runs the extension CLI inside ns against cp (its admin
// kubeconfig) and returns what it printed on stdout; a non-zero exit is an
// error.
func (t *Topology) LinkerdTunnel(ctx context.Context, ns *Netns, cp *ControlPlane, args ...string) ([]byte, error) {
	out, code, err := t.linkerdTunnel(ctx, ns, cp, args...)
	if err == nil && code != 0 {
		err = fmt.Errorf("linkerd-tunnel %s: exit %d", strings.Join(args, " "), code)
	}
	return out, err
}

// linkerdTunnel runs the CLI and returns stdout and the exit code; err is
// set when it could not run or wrote to stderr on a failure.
func (t *Topology) linkerdTunnel(ctx context.Context, ns *Netns, cp *ControlPlane, args ...string) ([]byte, int, error) {
	if t.Cfg.CLIBin == "" {
		return nil, -1, fmt.Errorf("%w: CLIBin (linkerd-tunnel) is empty", ErrBadConfig)
	}
	args = append(args, "--kubeconfig="+cp.Kubeconfig)
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, t.Cfg.CLIBin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := cmd.ProcessState.ExitCode()
	t.logf("linkerd-tunnel %s (%s): exit %d", strings.Join(args, " "), cp.Cfg.Name, code)
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return nil, -1, fmt.Errorf("linkerd-tunnel %s: %w", strings.Join(args, " "), err)
	}
	if code != 0 && stderr.Len() > 0 {
		return stdout.Bytes(), code, fmt.Errorf("linkerd-tunnel %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), code, nil
}

// Check runs `linkerd-tunnel check -o json --wait W` (as `linkerd check`
// runs an extension) inside ns against cp, decodes the report strictly and
// checks that the exit status agrees with it.
func (t *Topology) Check(ctx context.Context, ns *Netns, cp *ControlPlane, wait time.Duration) (*healthcheck.JSONOutput, error) {
	out, code, err := t.linkerdTunnel(ctx, ns, cp, "check", "--output", "json", "--wait", wait.String(), "--as-group=[]")
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	var r healthcheck.JSONOutput
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("check -o json printed what is not the report: %w\n%s", err, out)
	}
	if dec.More() {
		return nil, fmt.Errorf("check -o json printed more than one document:\n%s", out)
	}
	if len(r.Categories) == 0 {
		return nil, fmt.Errorf("check -o json: no categories:\n%s", out)
	}
	failed := false
	for _, c := range r.Categories {
		if c.Name == "" || len(c.Checks) == 0 {
			return nil, fmt.Errorf("check -o json: category %q without name or checks", c.Name)
		}
		for _, ch := range c.Checks {
			switch ch.Result {
			case healthcheck.ResultSuccess:
				if ch.Error != "" || ch.Hint != "" {
					return nil, fmt.Errorf("check -o json: %q succeeded with an error or hint", ch.Description)
				}
			case healthcheck.ResultWarning, healthcheck.ResultError:
				if ch.Error == "" || ch.Hint == "" {
					return nil, fmt.Errorf("check -o json: %q is %s without an error and a hint", ch.Description, ch.Result)
				}
				failed = failed || ch.Result == healthcheck.ResultError
			default:
				return nil, fmt.Errorf("check -o json: %q has result %q", ch.Description, ch.Result)
			}
		}
	}
	if r.Success == failed || (code == 0) != r.Success {
		return nil, fmt.Errorf("check -o json: success %v, a check failed %v, exit %d: they disagree", r.Success, failed, code)
	}
	return &r, nil
}

// ApplyRendered applies YAML the CLI rendered to cp (server-side, as
// `kubectl apply --server-side -f -`) and returns the objects.
func (t *Topology) ApplyRendered(ctx context.Context, cp *ControlPlane, yml []byte) ([]*unstructured.Unstructured, error) {
	objs, err := fixtures.Decode(yml)
	if err != nil {
		return nil, fmt.Errorf("rendered YAML: %w", err)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("rendered YAML holds no object")
	}
	if _, err := KubectlWith(ctx, cp.NS, filepath.Join(t.Cfg.BinDir, "kubectl"), cp.Kubeconfig, yml,
		"apply", "--server-side", "--field-manager=e2e-install", "-f", "-"); err != nil {
		return nil, fmt.Errorf("apply to %s: %w", cp.Cfg.Name, err)
	}
	return objs, nil
}

// ofKind returns the objects of kind (fixtures.OfKind), converted to T.
func ofKind[T any](objs []*unstructured.Unstructured, kind string) ([]*T, error) {
	var out []*T
	for _, o := range fixtures.OfKind(objs, kind) {
		v := new(T)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, v); err != nil {
			return nil, fmt.Errorf("%s %s: %w", kind, o.GetName(), err)
		}
		out = append(out, v)
	}
	return out, nil
}

// oneDeployment returns the one Deployment of a rendered release.
func oneDeployment(objs []*unstructured.Unstructured) (*appsv1.Deployment, error) {
	ds, err := ofKind[appsv1.Deployment](objs, "Deployment")
	if err != nil {
		return nil, err
	}
	if len(ds) != 1 {
		return nil, fmt.Errorf("want one Deployment in the rendered release, found %d", len(ds))
	}
	return ds[0], nil
}

// --- cert-manager stand-in ---------------------------------------------------

// certManagerGroup is the API group of Issuers and Certificates.
const certManagerGroup = "cert-manager.io"

func isCertManager(o *unstructured.Unstructured, kind string) bool {
	return o.GetKind() == kind && o.GroupVersionKind().Group == certManagerGroup
}

// issueCertificates does what cert-manager's controller and cainjector do
// for the rendered Issuers and Certificates: a Certificate whose Issuer is
// selfSigned becomes a self-signed CA, one whose Issuer is a CA Issuer is
// signed by the CA in that Issuer's Secret; each lands in its secretName
// with tls.crt, tls.key and ca.crt. Then every MutatingWebhookConfiguration
// annotated cert-manager.io/inject-ca-from=<ns>/<certificate> gets that
// Certificate's Secret's ca.crt as its caBundle, as cainjector injects it.
func (t *Topology) issueCertificates(ctx context.Context, cp *ControlPlane, objs []*unstructured.Unstructured) error {
	issuers := map[string]map[string]any{} // ns/name -> spec
	for _, o := range objs {
		if isCertManager(o, "Issuer") {
			spec, _, _ := unstructured.NestedMap(o.Object, "spec")
			issuers[o.GetNamespace()+"/"+o.GetName()] = spec
		}
	}
	cas := map[string]*testpki.CA{}       // secret ns/name -> CA
	issued := map[string]*corev1.Secret{} // certificate ns/name -> Secret
	// Self-signed first, then CA-issued: the chain is at most two deep.
	for pass := 0; pass < 2; pass++ {
		for _, o := range objs {
			if !isCertManager(o, "Certificate") {
				continue
			}
			key := o.GetNamespace() + "/" + o.GetName()
			if issued[key] != nil {
				continue
			}
			issuerName, _, _ := unstructured.NestedString(o.Object, "spec", "issuerRef", "name")
			issuer, ok := issuers[o.GetNamespace()+"/"+issuerName]
			if !ok {
				return fmt.Errorf("cert-manager stand-in: Certificate %s: Issuer %s is not in the rendered objects", key, issuerName)
			}
			secretName, _, _ := unstructured.NestedString(o.Object, "spec", "secretName")
			cn, _, _ := unstructured.NestedString(o.Object, "spec", "commonName")
			dns, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "dnsNames")
			isCA, _, _ := unstructured.NestedBool(o.Object, "spec", "isCA")
			validity := 90 * 24 * time.Hour // cert-manager's default duration
			if d, ok, _ := unstructured.NestedString(o.Object, "spec", "duration"); ok {
				v, err := time.ParseDuration(d)
				if err != nil {
					return fmt.Errorf("cert-manager stand-in: Certificate %s: duration %q: %w", key, d, err)
				}
				validity = v
			}
			data := map[string][]byte{}
			switch {
			case issuer["selfSigned"] != nil:
				if !isCA {
					return fmt.Errorf("cert-manager stand-in: Certificate %s: only self-signed CAs are stood in for", key)
				}
				ca, err := testpki.NewCAValid(cn, validity)
				if err != nil {
					return err
				}
				keyPEM, err := ca.KeyPEM()
				if err != nil {
					return err
				}
				cas[o.GetNamespace()+"/"+secretName] = ca
				data["tls.crt"], data["tls.key"], data["ca.crt"] = ca.CertPEM, keyPEM, ca.CertPEM
			case issuer["ca"] != nil:
				caSecret, _, _ := unstructured.NestedString(issuer, "ca", "secretName")
				ca := cas[o.GetNamespace()+"/"+caSecret]
				if ca == nil {
					if pass == 0 {
						continue // its CA is issued in this pass
					}
					return fmt.Errorf("cert-manager stand-in: Certificate %s: CA Secret %s was not issued", key, caSecret)
				}
				if cn == "" && len(dns) > 0 {
					cn = dns[0]
				}
				kp, err := ca.Issue(testpki.CertSpec{CommonName: cn, DNSNames: dns, Server: true, Validity: validity})
				if err != nil {
					return err
				}
				data["tls.crt"], data["tls.key"], data["ca.crt"] = kp.CertPEM, kp.KeyPEM, ca.CertPEM
			default:
				return fmt.Errorf("cert-manager stand-in: Certificate %s: Issuer %s is neither selfSigned nor ca", key, issuerName)
			}
			s := &corev1.Secret{Type: corev1.SecretTypeTLS, Data: data}
			s.Name, s.Namespace = secretName, o.GetNamespace()
			s.Annotations = map[string]string{"cert-manager.io/certificate-name": o.GetName()}
			if err := cp.Client.Create(ctx, s); err != nil {
				return fmt.Errorf("cert-manager stand-in: Secret %s/%s: %w", s.Namespace, s.Name, err)
			}
			issued[key] = s
		}
	}
	return t.injectCABundles(ctx, cp, objs, issued)
}

// injectCABundles does what cainjector does: every
// MutatingWebhookConfiguration annotated cert-manager.io/inject-ca-from=
// <ns>/<certificate> gets that Certificate's Secret's ca.crt as caBundle.
func (t *Topology) injectCABundles(ctx context.Context, cp *ControlPlane, objs []*unstructured.Unstructured, issued map[string]*corev1.Secret) error {
	for _, o := range objs {
		if o.GetKind() != "MutatingWebhookConfiguration" {
			continue
		}
		from := o.GetAnnotations()["cert-manager.io/inject-ca-from"]
		if from == "" {
			continue
		}
		s := issued[from]
		if s == nil {
			return fmt.Errorf("cainjector stand-in: %s injects from Certificate %s, which was not issued", o.GetName(), from)
		}
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := cp.Client.Get(ctx, types.NamespacedName{Name: o.GetName()}, live); err != nil {
			return err
		}
		hooks, _, _ := unstructured.NestedSlice(live.Object, "webhooks")
		for i := range hooks {
			if err := unstructured.SetNestedField(hooks[i].(map[string]any), encodeB64(s.Data["ca.crt"]), "clientConfig", "caBundle"); err != nil {
				return err
			}
		}
		if err := unstructured.SetNestedSlice(live.Object, hooks, "webhooks"); err != nil {
			return err
		}
		if err := cp.Client.Update(ctx, live); err != nil {
			return fmt.Errorf("cainjector stand-in: %s: %w", o.GetName(), err)
		}
		t.logf("cert-manager stand-in: issued %d certificates; %s trusts the ca.crt of Certificate %s", len(issued), o.GetName(), from)
	}
	return nil
}

// --- in-cluster credentials stand-in -----------------------------------------

// serviceAccountKubeconfig writes a kubeconfig for cp with a token of the
// Deployment's ServiceAccount: what a pod's in-cluster configuration would
// give the process, so the rendered RBAC is what the process runs with.
func serviceAccountKubeconfig(ctx context.Context, cp *ControlPlane, d *appsv1.Deployment, path string) error {
	sa := d.Spec.Template.Spec.ServiceAccountName
	if sa == "" {
		return fmt.Errorf("deployment %s has no serviceAccountName", d.Name)
	}
	token, err := cp.ServiceAccountToken(ctx, d.Namespace, sa)
	if err != nil {
		return err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[cp.Cfg.Name] = &clientcmdapi.Cluster{Server: cp.URL(), CertificateAuthorityData: cp.ServingCA.CertPEM}
	kc.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts[sa] = &clientcmdapi.Context{Cluster: cp.Cfg.Name, AuthInfo: sa, Namespace: d.Namespace}
	kc.CurrentContext = sa
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*kc, path)
}

// volumeFiles reads a Secret or ConfigMap volume's keys from cp.
func volumeFiles(ctx context.Context, cp *ControlPlane, namespace string) func(corev1.Volume) (map[string][]byte, error) {
	return func(v corev1.Volume) (map[string][]byte, error) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, err := readVolume(ctx, cp, namespace, v)
			if err == nil || time.Now().After(deadline) {
				return out, err
			}
			time.Sleep(200 * time.Millisecond) // e.g. a Secret cert-manager has yet to write
		}
	}
}

func readVolume(ctx context.Context, cp *ControlPlane, namespace string, v corev1.Volume) (map[string][]byte, error) {
	switch {
	case v.Secret != nil:
		s := &corev1.Secret{}
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: v.Secret.SecretName}, s); err != nil {
			return nil, err
		}
		out := map[string][]byte{}
		for k, b := range s.Data {
			out[k] = b
		}
		for k, s := range s.StringData {
			out[k] = []byte(s)
		}
		return out, nil
	case v.ConfigMap != nil:
		c := &corev1.ConfigMap{}
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: v.ConfigMap.Name}, c); err != nil {
			return nil, err
		}
		out := map[string][]byte{}
		for k, s := range c.Data {
			out[k] = []byte(s)
		}
		for k, b := range c.BinaryData {
			out[k] = b
		}
		return out, nil
	}
	return nil, fmt.Errorf("volume %s: neither Secret nor ConfigMap", v.Name)
}
