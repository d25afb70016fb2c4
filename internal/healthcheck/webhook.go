package healthcheck

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/extension"
	"github.com/l5d-tunnel/l5d-tunnel/internal/webhook"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// CertExpiryWarning is how long before its expiry the serving certificate
// gets a warning (cert-manager renews it 15 days before).
const CertExpiryWarning = 7 * 24 * time.Hour

// certExpiryWarning is CertExpiryWarning; the tests shorten it (envtest's
// serving certificates live exactly 7 days).
var certExpiryWarning = CertExpiryWarning

// webhookConfig is what the webhook Deployment's args configure, read
// with the webhook binary's own flag definitions.
type webhookConfig struct {
	namespace        string // the Deployment's
	trusted          []string
	rewrite          []string // --rewrite-namespaces (names opted in)
	opts             mutate.Options
	gatewayAddresses bool
	certDir          string
	container        *corev1.Container
}

func parseWebhookConfig(d *appsv1.Deployment) (*webhookConfig, error) {
	cs := d.Spec.Template.Spec.Containers
	if len(cs) == 0 {
		return nil, fmt.Errorf("webhook Deployment %s/%s has no container", d.Namespace, d.Name)
	}
	ct := &cs[0]
	for i := range cs {
		if cs[i].Name == "webhook" {
			ct = &cs[i]
		}
	}
	var args []string
	if len(ct.Command) > 1 {
		args = append(args, ct.Command[1:]...)
	}
	args = append(args, ct.Args...)
	o := webhook.DefaultOptions()
	o.TrustedNamespaces = nil // the default is the pod's namespace, not this process's
	fs := pflag.NewFlagSet("webhook", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	o.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("webhook Deployment %s/%s: container %s: args: %w", d.Namespace, d.Name, ct.Name, err)
	}
	cfg := &webhookConfig{namespace: d.Namespace, trusted: o.TrustedNamespaces, rewrite: o.RewriteNamespaces, opts: o.Mutate,
		gatewayAddresses: o.GatewayAddresses, certDir: o.CertDir, container: ct}
	if len(cfg.trusted) == 0 {
		cfg.trusted = []string{d.Namespace}
	}
	return cfg, nil
}

// optedIn tells whether the webhook rewrites in namespace ns, by its own
// rule, mutate.OptedIn (the webhook configuration never sends kube-system
// and its own namespace). A namespace that does not exist is not opted in.
func (e *env) optedIn(ctx context.Context, ns string) (bool, error) {
	if ns == "kube-system" || ns == e.wcfg.namespace {
		return false, nil
	}
	var n corev1.Namespace
	if err := e.c.Get(ctx, client.ObjectKey{Name: ns}, &n); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("the Namespace %s: %w", ns, err)
	}
	return mutate.OptedIn(n.Name, n.Labels, e.wcfg.rewrite), nil
}

// optInHint says how to opt a namespace in.
func (e *env) optInHint(ns string) string {
	return fmt.Sprintf("opt namespace %s in: add it to the webhook's rewriteNamespaces (`linkerd tunnel install --set rewriteNamespaces=...`, flag --rewrite-namespaces) or label it %s=%s",
		ns, mutate.LabelRewrite, mutate.LabelRewriteEnabled)
}

func (e *env) webhookChecks() []Checker {
	if e.webhook == nil {
		return nil
	}
	key := client.ObjectKeyFromObject(e.webhook)
	return []Checker{
		{Description: "webhook Deployment is available", Anchor: "webhook-available", Retry: true, Surface: true,
			Check: func(ctx context.Context) error {
				return e.deploymentAvailable(ctx, key, fmt.Sprintf("see `kubectl describe deployment -n %s %s` and the pods' events and logs", key.Namespace, key.Name))
			}},
		{Description: "webhook serving certificate is valid", Anchor: "webhook-cert", Retry: true, Surface: true, Check: e.checkServingCert},
		{Description: "webhook serving certificate is not about to expire", Anchor: "webhook-cert-expiry", Warning: true, Check: e.checkCertExpiry},
		{Description: "webhook configuration's caBundle trusts the serving certificate", Anchor: "webhook-ca-bundle", Retry: true, Surface: true, Check: e.checkCABundle},
		{Description: "webhook answers admission requests", Anchor: "webhook-answers", Retry: true, Surface: true, Check: e.checkAnswers},
	}
}

// servingCert is the parsed serving certificate.
type servingCert struct {
	secret string // namespace/name
	leaf   *x509.Certificate
	chain  []*x509.Certificate // intermediates in tls.crt after the leaf
}

// servingSecret names the Secret mounted at the webhook's --cert-dir.
func (e *env) servingSecret() (client.ObjectKey, error) {
	key := client.ObjectKey{Namespace: e.webhook.Namespace}
	mounted := ""
	for _, m := range e.wcfg.container.VolumeMounts {
		if strings.TrimSuffix(m.MountPath, "/") == strings.TrimSuffix(e.wcfg.certDir, "/") {
			mounted = m.Name
		}
	}
	var secrets []string
	for _, v := range e.webhook.Spec.Template.Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		if v.Name == mounted {
			key.Name = v.Secret.SecretName
			return key, nil
		}
		secrets = append(secrets, v.Secret.SecretName)
	}
	if len(secrets) == 1 {
		key.Name = secrets[0]
		return key, nil
	}
	return key, fmt.Errorf("webhook Deployment %s/%s mounts no Secret volume at --cert-dir %q: reinstall it (`linkerd tunnel install | kubectl apply -f -`)",
		e.webhook.Namespace, e.webhook.Name, e.wcfg.certDir)
}

func (e *env) checkServingCert(ctx context.Context) error {
	e.serving = nil
	key, err := e.servingSecret()
	if err != nil {
		return err
	}
	var s corev1.Secret
	if err := e.c.Get(ctx, key, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("the Secret %s not found: cert-manager has not issued the serving certificate; see `kubectl describe certificate -n %s` and cert-manager's logs", key, key.Namespace)
		}
		return fmt.Errorf("the Secret %s: %w", key, err)
	}
	crt, keyPEM := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	certs, err := parseCerts(crt)
	if err == nil && len(certs) == 0 {
		err = fmt.Errorf("no PEM CERTIFICATE block")
	}
	if err != nil {
		return fmt.Errorf("the Secret %s: %s does not hold a certificate (%w): delete the Secret so that cert-manager issues it again", key, corev1.TLSCertKey, err)
	}
	if _, err := tls.X509KeyPair(crt, keyPEM); err != nil {
		return fmt.Errorf("the Secret %s: %s and %s are not a key pair (%w): delete the Secret so that cert-manager issues it again", key, corev1.TLSCertKey, corev1.TLSPrivateKeyKey, err)
	}
	leaf, now := certs[0], e.now()
	switch {
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("the Secret %s: the serving certificate is valid only from %s: check the clocks", key, leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return fmt.Errorf("the Secret %s: the serving certificate expired at %s: renew it (`cmctl renew -n %s <Certificate>`, or delete the Secret) and check cert-manager", key, leaf.NotAfter.UTC().Format(time.RFC3339), key.Namespace)
	}
	e.serving = &servingCert{secret: key.String(), leaf: leaf, chain: certs[1:]}
	return nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

func (e *env) checkCertExpiry(context.Context) error {
	if e.serving == nil {
		return errSkip // reported by the certificate check
	}
	left := e.serving.leaf.NotAfter.Sub(e.now())
	if left < certExpiryWarning {
		return fmt.Errorf("the Secret %s: the serving certificate expires in %s (at %s), and cert-manager renews it 15 days before: check the Certificate (`kubectl describe certificate -n %s`) and cert-manager",
			e.serving.secret, left.Round(time.Minute), e.serving.leaf.NotAfter.UTC().Format(time.RFC3339), e.webhook.Namespace)
	}
	return nil
}

// webhookConfigurations lists the MutatingWebhookConfigurations of the
// extension: labelled as its objects are, or calling the webhook's paths in
// its namespace.
func (e *env) webhookConfigurations(ctx context.Context) ([]admissionregistrationv1.MutatingWebhookConfiguration, error) {
	var list admissionregistrationv1.MutatingWebhookConfigurationList
	if err := e.c.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("cannot list MutatingWebhookConfigurations: %w", err)
	}
	var out []admissionregistrationv1.MutatingWebhookConfiguration
	for _, m := range list.Items {
		if m.Labels[extension.LabelExtension] == extension.Name || e.callsUs(&m) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no MutatingWebhookConfiguration labelled %s=%s calls the webhook: reinstall it (`linkerd tunnel install | kubectl apply -f -`)",
			extension.LabelExtension, extension.Name)
	}
	return out, nil
}

func (e *env) callsUs(m *admissionregistrationv1.MutatingWebhookConfiguration) bool {
	for _, h := range m.Webhooks {
		if s := h.ClientConfig.Service; s != nil && s.Namespace == e.webhook.Namespace && s.Path != nil && slices.Contains(webhook.Paths, *s.Path) {
			return true
		}
	}
	return false
}

// serverName is the name the API server verifies the webhook's certificate
// for: <service>.<namespace>.svc, or the host of a URL.
func serverName(cc admissionregistrationv1.WebhookClientConfig) (string, error) {
	if cc.Service != nil {
		return cc.Service.Name + "." + cc.Service.Namespace + ".svc", nil
	}
	if cc.URL == nil {
		return "", fmt.Errorf("clientConfig has neither service nor url")
	}
	u, err := url.Parse(*cc.URL)
	if err != nil {
		return "", fmt.Errorf("clientConfig.url: %w", err)
	}
	return u.Hostname(), nil
}

func (e *env) checkCABundle(ctx context.Context) error {
	if e.serving == nil {
		return errSkip // reported by the certificate check
	}
	mwcs, err := e.webhookConfigurations(ctx)
	if err != nil {
		return err
	}
	for _, m := range mwcs {
		for _, h := range m.Webhooks {
			what := fmt.Sprintf("webhook %s of MutatingWebhookConfiguration %s", h.Name, m.Name)
			if len(h.ClientConfig.CABundle) == 0 {
				return fmt.Errorf("%s has an empty caBundle: cert-manager's cainjector has not injected it (annotation cert-manager.io/inject-ca-from); check that cainjector runs", what)
			}
			roots, err := parseCerts(h.ClientConfig.CABundle)
			if err == nil && len(roots) == 0 {
				err = fmt.Errorf("no PEM CERTIFICATE block")
			}
			if err != nil {
				return fmt.Errorf("%s: caBundle does not hold a certificate (%w): delete the caBundle so that cainjector injects it again", what, err)
			}
			name, err := serverName(h.ClientConfig)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			pool, inter := x509.NewCertPool(), x509.NewCertPool()
			for _, c := range roots {
				pool.AddCert(c)
			}
			for _, c := range e.serving.chain {
				inter.AddCert(c)
			}
			if _, err := e.serving.leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: name,
				CurrentTime: e.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("%s: its caBundle does not verify the serving certificate of Secret %s for %s (%w): the API server cannot call the webhook; point cert-manager.io/inject-ca-from at the CA Certificate and let cainjector re-inject",
					what, e.serving.secret, name, err)
			}
		}
	}
	return nil
}

// checkAnswers proves that the API server calls the webhook: a server-side
// dry-run create of a probe Service in an opted-in namespace. For a cluster
// with a usable binding the answer must be the rewrite pkg/mutate computes;
// without one the webhook's check echo (a warning naming the request's
// nonce) must come back, saying the handler saw the namespace opted in.
func (e *env) checkAnswers(ctx context.Context) error {
	ns, cluster, b, err := e.probeTarget(ctx)
	if err != nil {
		return err
	}
	nonce, err := newNonce()
	if err != nil {
		return err
	}
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{
		Name: mutate.LinkerdProbePortName, Port: 4191, Protocol: corev1.ProtocolTCP}}}}
	svc.Name, svc.Namespace = "l5d-tunnel-check-"+nonce, ns
	svc.Labels = map[string]string{mutate.LinkerdLabelMirroredGateway: "true", mutate.LinkerdLabelClusterName: cluster}
	svc.Annotations = map[string]string{mutate.AnnotationCheck: nonce}
	svc.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Service"))
	want, err := e.expectedProbe(svc, b)
	if err != nil {
		return err
	}

	warns := &warnings{}
	cfg := rest.CopyConfig(e.cfg)
	cfg.WarningHandler, cfg.WarningHandlerWithContext = nil, warns
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	if err := c.Create(ctx, svc, client.DryRunAll); err != nil {
		return fmt.Errorf("dry-run create of probe Service %s/%s: %w", ns, svc.Name, err)
	}
	echo := ""
	for _, w := range warns.list() {
		if r, ok := strings.CutPrefix(w, webhook.CheckEchoPrefix+nonce+": "); ok {
			echo = r
		}
	}
	switch echo {
	case "":
		return fmt.Errorf("a dry-run probe Service in namespace %s got no answer from the webhook (failurePolicy Ignore admitted it unchanged): the API server does not reach it; check the webhook Service's endpoints, the NetworkPolicy, and the API server's log for calls to the webhook", ns)
	case webhook.ResultIgnored:
		return fmt.Errorf("the webhook answered but does not treat namespace %s as opted in: %s", ns, e.optInHint(ns))
	}
	if b == nil {
		return nil
	}
	got := fmt.Sprintf("type %s, externalName %q, ports %v", svc.Spec.Type, svc.Spec.ExternalName, probePorts(svc))
	if exp := fmt.Sprintf("type %s, externalName %q, ports %v", want.Spec.Type, want.Spec.ExternalName, probePorts(want)); got != exp {
		return fmt.Errorf("the webhook answered (%s) but a dry-run probe Service of cluster %s came back %s, want %s: restart the webhook (`kubectl rollout restart deployment -n %s %s`) and see its log",
			echo, cluster, got, exp, e.webhook.Namespace, e.webhook.Name)
	}
	return nil
}

func probePorts(s *corev1.Service) []string {
	var out []string
	for _, p := range s.Spec.Ports {
		out = append(out, fmt.Sprintf("%s:%d", p.Name, p.Port))
	}
	return out
}

// expectedProbe is what the webhook must make of the dry-run probe: the
// rewrite for b, or the object unchanged without a binding.
func (e *env) expectedProbe(svc *corev1.Service, b *mutate.Binding) (*corev1.Service, error) {
	if b == nil {
		return svc.DeepCopy(), nil
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(svc)
	if err != nil {
		return nil, err
	}
	out, _, warns, err := mutate.Mutate(&unstructured.Unstructured{Object: m}, b, e.wcfg.opts)
	if err != nil {
		return nil, err
	}
	if len(warns) > 0 {
		return nil, fmt.Errorf("the dry-run probe Service would not be rewritten: %s", strings.Join(warns, "; "))
	}
	want := &corev1.Service{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(out.Object, want); err != nil {
		return nil, err
	}
	return want, nil
}

// probeTarget picks where to send the dry-run: the namespace and cluster
// of a Link whose binding is usable, else an opted-in namespace and a
// cluster without a binding.
func (e *env) probeTarget(ctx context.Context) (ns, cluster string, b *mutate.Binding, err error) {
	links, err := e.listLinks(ctx)
	if err != nil {
		return "", "", nil, err
	}
	for _, l := range links {
		_, c := mutate.Classify(l.obj)
		in, err := e.optedIn(ctx, l.obj.GetNamespace())
		if err != nil || !in {
			continue
		}
		if b, err := e.binding(ctx, c); err == nil && b != nil {
			return l.obj.GetNamespace(), c, b, nil
		}
	}
	candidates := slices.Clone(e.wcfg.rewrite)
	var labelled corev1.NamespaceList
	if err := e.c.List(ctx, &labelled, client.MatchingLabels{mutate.LabelRewrite: mutate.LabelRewriteEnabled}); err != nil {
		return "", "", nil, fmt.Errorf("cannot list Namespaces: %w", err)
	}
	for _, n := range labelled.Items {
		candidates = append(candidates, n.Name)
	}
	for _, c := range candidates {
		var n corev1.Namespace
		if err := e.c.Get(ctx, client.ObjectKey{Name: c}, &n); err != nil || n.DeletionTimestamp != nil {
			continue
		}
		if in, err := e.optedIn(ctx, c); err == nil && in {
			return c, "l5d-tunnel-check", nil, nil
		}
	}
	return "", "", nil, fmt.Errorf("no opted-in namespace exists to send a dry-run to (rewrite namespaces %v, none labelled %s=%s): install Linkerd's multicluster extension (`linkerd multicluster install`), or %s",
		e.wcfg.rewrite, mutate.LabelRewrite, mutate.LabelRewriteEnabled, e.optInHint("linkerd-multicluster"))
}

func newNonce() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// warnings collects the API server's warnings of one client.
type warnings struct {
	mu sync.Mutex
	w  []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.w = append(w.w, text)
}

func (w *warnings) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.w)
}
