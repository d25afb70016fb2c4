package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testpki"
)

// --- webhook -----------------------------------------------------------------

// WebhookService is the Service the webhook configuration calls.
type WebhookService struct {
	Namespace, Name string
	Port            int32
}

func webhookService(cfg []byte) (*unstructured.Unstructured, WebhookService, error) {
	var ws WebhookService
	objs, err := fixtures.Decode(cfg)
	if err != nil {
		return nil, ws, fmt.Errorf("webhook configuration: %w", err)
	}
	for _, o := range objs {
		if o.GetKind() != "MutatingWebhookConfiguration" {
			continue
		}
		hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
		if len(hooks) == 0 {
			return nil, ws, fmt.Errorf("webhook configuration %s has no webhooks", o.GetName())
		}
		for i, h := range hooks {
			hm, _ := h.(map[string]any)
			ns, _, _ := unstructured.NestedString(hm, "clientConfig", "service", "namespace")
			name, _, _ := unstructured.NestedString(hm, "clientConfig", "service", "name")
			port, found, _ := unstructured.NestedInt64(hm, "clientConfig", "service", "port")
			if !found {
				port = 443
			}
			if name == "" {
				return nil, ws, fmt.Errorf("webhook %d of %s does not call a Service", i, o.GetName())
			}
			w := WebhookService{Namespace: ns, Name: name, Port: int32(port)}
			if i > 0 && w != ws {
				return nil, ws, fmt.Errorf("webhooks of %s call different Services (%v, %v)", o.GetName(), ws, w)
			}
			ws = w
		}
		return o, ws, nil
	}
	return nil, ws, fmt.Errorf("no MutatingWebhookConfiguration in the webhook configuration YAML")
}

func (t *Topology) startWebhook(ctx context.Context) error {
	cfgObj, ws, err := webhookService(t.Cfg.WebhookConfig)
	if err != nil {
		return err
	}
	dir := filepath.Join(t.Cfg.WorkDir, "webhook")
	certDir := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	// cert-manager's way: a CA (self-signed root) issues the serving cert
	ca, err := testpki.NewCA("l5d-tunnel-webhook-ca")
	if err != nil {
		return err
	}
	serving, err := ca.Issue(testpki.CertSpec{CommonName: ws.Name + "." + ws.Namespace + ".svc", Server: true,
		DNSNames: []string{ws.Name + "." + ws.Namespace + ".svc", ws.Name + "." + ws.Namespace + ".svc.cluster.local"}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(certDir, "tls.crt"), serving.CertPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(certDir, "tls.key"), serving.KeyPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), ca.CertPEM, 0o600); err != nil {
		return err
	}
	// The webhook "pod" runs at WebhookPodIP. No pods and no kube-proxy here:
	// a selectorless Service with Endpoints (mirrored into EndpointSlices by
	// kube-controller-manager) and --enable-aggregator-routing make the API
	// server dial the endpoint IP.
	if err := t.CloudCP.EnsureNamespace(ctx, ws.Namespace, nil); err != nil {
		return err
	}
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
		Name: "webhook", Port: ws.Port, TargetPort: intstr.FromInt32(WebhookPort), Protocol: corev1.ProtocolTCP}}}}
	svc.Name, svc.Namespace = ws.Name, ws.Namespace
	ep := &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck // selectorless Service: Endpoints, mirrored to slices
		Addresses: []corev1.EndpointAddress{{IP: WebhookPodIP}},
		Ports:     []corev1.EndpointPort{{Name: "webhook", Port: WebhookPort, Protocol: corev1.ProtocolTCP}},
	}}}
	ep.Name, ep.Namespace = ws.Name, ws.Namespace
	for _, o := range []client.Object{svc, ep} {
		if err := t.CloudCP.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("cloud: create webhook %T: %w", o, err)
		}
	}
	args := []string{
		"--kubeconfig=" + t.CloudCP.Kubeconfig,
		"--cert-dir=" + certDir,
		"--port=" + strconv.Itoa(WebhookPort),
		"--trusted-namespaces=" + t.Binding.Namespace,
		"--health-addr=" + net.JoinHostPort(WebhookPodIP, strconv.Itoa(WebhookHealth)),
		"--metrics-addr=" + net.JoinHostPort(WebhookPodIP, strconv.Itoa(WebhookMetric)),
	}
	t.Webhook, err = StartProc(t.Cloud, t.Cfg.WorkDir, "cloud-webhook", t.Cfg.WebhookBin, args, []string{"POD_NAMESPACE=" + TunnelNamespace})
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, t.Cloud, t.Webhook, "http://"+net.JoinHostPort(WebhookPodIP, strconv.Itoa(WebhookHealth))+"/readyz", time.Minute); err != nil {
		return err
	}
	// wait for the mirrored EndpointSlice the API server routes by
	if err := Poll(ctx, time.Minute, func() error {
		var slices discoveryv1.EndpointSliceList
		if err := t.CloudCP.Client.List(ctx, &slices, client.InNamespace(ws.Namespace),
			client.MatchingLabels{discoveryv1.LabelServiceName: ws.Name}); err != nil {
			return err
		}
		for _, s := range slices.Items {
			if len(s.Endpoints) > 0 {
				return nil
			}
		}
		return fmt.Errorf("no EndpointSlice for Service %s/%s yet (kube-controller-manager mirrors Endpoints)", ws.Namespace, ws.Name)
	}); err != nil {
		return err
	}
	// register the shipped configuration with the CA bundle cert-manager's
	// cainjector would write
	hooks, _, _ := unstructured.NestedSlice(cfgObj.Object, "webhooks")
	for i := range hooks {
		hm := hooks[i].(map[string]any)
		if err := unstructured.SetNestedField(hm, encodeB64(ca.CertPEM), "clientConfig", "caBundle"); err != nil {
			return err
		}
	}
	if err := unstructured.SetNestedSlice(cfgObj.Object, hooks, "webhooks"); err != nil {
		return err
	}
	if err := t.CloudCP.Client.Create(ctx, cfgObj); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cloud: register %s: %w", cfgObj.GetName(), err)
	}
	t.logf("webhook %s/%s serving at %s:%d, configuration %s registered", ws.Namespace, ws.Name, WebhookPodIP, WebhookPort, cfgObj.GetName())
	return nil
}

// WaitWebhookLive waits until the API server calls the webhook: a server-side
// dry-run create of a probe Service for the bound cluster comes back as
// ExternalName. The binding must exist.
func (t *Topology) WaitWebhookLive(ctx context.Context, timeout time.Duration) error {
	return Poll(ctx, timeout, func() error {
		if t.Webhook != nil && t.Webhook.Exited() {
			return permanent(t.Webhook.Err())
		}
		svc := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "mc-probe", Port: 4191}}}}
		svc.Name, svc.Namespace = "e2e-webhook-canary", "linkerd-multicluster"
		svc.Labels = map[string]string{"mirror.linkerd.io/mirrored-gateway": "true", "mirror.linkerd.io/cluster-name": LinkName}
		if err := t.CloudCP.Client.Create(ctx, svc, client.DryRunAll); err != nil {
			return err
		}
		if svc.Spec.Type != corev1.ServiceTypeExternalName {
			return fmt.Errorf("dry-run probe Service came back %s: the webhook is not called yet", svc.Spec.Type)
		}
		return nil
	})
}

// --- tunnel ------------------------------------------------------------------

// TunnelServerAdmin is the server's admin address in cloud.
func TunnelServerAdmin() string { return net.JoinHostPort(TunnelPodIP, strconv.Itoa(TunnelAdmin)) }

func (t *Topology) startTunnel(ctx context.Context) error {
	dir := filepath.Join(t.Cfg.WorkDir, "tunnel")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	t.tokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(t.tokenFile, []byte(randomHex(32)+"\n"), 0o600); err != nil {
		return err
	}
	if t.Cfg.TunnelTLS {
		ca, err := testpki.NewCA("cloud-ingress-ca")
		if err != nil {
			return err
		}
		kp, err := ca.Issue(testpki.CertSpec{CommonName: TunnelHost, DNSNames: []string{TunnelHost}, Server: true})
		if err != nil {
			return err
		}
		if t.ingressCert, t.ingressKey, err = kp.Write(dir, "ingress"); err != nil {
			return err
		}
		t.ingressCAFile = filepath.Join(dir, "ingress-ca.crt")
		if err := os.WriteFile(t.ingressCAFile, ca.CertPEM, 0o600); err != nil {
			return err
		}
	}
	if err := t.StartTunnelServer(ctx); err != nil {
		return err
	}
	if _, err := t.StartTunnelClient(ctx); err != nil {
		return err
	}
	return t.WaitTunnelReady(ctx, 30*time.Second)
}

// StartTunnelServer starts (or restarts) the tunnel server in cloud.
func (t *Topology) StartTunnelServer(ctx context.Context) error {
	p, err := t.startServer(ctx, 0)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.TunnelServer = p
	t.mu.Unlock()
	return nil
}

// tunnelPodIPs are the "pod" addresses of the tunnel servers: the first
// (TunnelServer) and the second (SecondServer).
var tunnelPodIPs = [...]string{TunnelPodIP, TunnelPod2IP}

// startServer starts tunnel server i (0 or 1): its listeners on
// tunnelPodIPs[i], its websocket endpoint on TunnelWSPort+i.
func (t *Topology) startServer(ctx context.Context, i int) (*Proc, error) {
	b := t.Binding
	podIP := tunnelPodIPs[i]
	pod := func(port int32) string { return net.JoinHostPort(podIP, strconv.Itoa(int(port))) }
	admin := pod(TunnelAdmin)
	args := []string{"server",
		"--listen=" + net.JoinHostPort(CloudVethIP, strconv.Itoa(TunnelWSPort+i)),
		"--port=api=" + pod(b.APIPort),
		"--port=probe=" + pod(b.ProbePort),
		"--port=gateway=" + pod(b.GatewayPort),
		"--token-file=" + t.tokenFile,
		"--admin-addr=" + admin,
	}
	if t.Cfg.TunnelTLS {
		args = append(args, "--tls-cert="+t.ingressCert, "--tls-key="+t.ingressKey)
	}
	args = append(args, t.Cfg.ServerArgs...)
	name := "cloud-tunnel-server"
	if i > 0 {
		name = fmt.Sprintf("cloud-tunnel-server-%d", i)
	}
	p, err := StartProc(t.Cloud, t.Cfg.WorkDir, name, t.Cfg.TunnelBin, args, nil)
	if err != nil {
		return nil, err
	}
	return p, waitHTTP(ctx, t.Cloud, p, "http://"+admin+"/healthz", 30*time.Second)
}

// StartSecondTunnel starts a second tunnel server (at TunnelPod2IP) and a
// home client for it, and waits until the server has its session: from
// then on the binding's headless Service has two ready endpoints.
func (t *Topology) StartSecondTunnel(ctx context.Context) error {
	p, err := t.startServer(ctx, 1)
	t.mu.Lock()
	t.SecondServer = p
	t.mu.Unlock()
	if err != nil {
		return err
	}
	c, err := t.startClient(ctx, t.tunnelURL(1))
	t.mu.Lock()
	t.SecondClient = c
	t.mu.Unlock()
	if err != nil {
		return err
	}
	return waitHTTP(ctx, t.Cloud, p, "http://"+net.JoinHostPort(TunnelPod2IP, strconv.Itoa(TunnelAdmin))+"/readyz", 30*time.Second)
}

// KillSecondServer SIGKILLs the second tunnel server (its endpoint turns
// not ready, as a pod whose container died).
func (t *Topology) KillSecondServer() {
	t.mu.Lock()
	p := t.SecondServer
	t.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// StopSecondTunnel stops the second server and its client and removes the
// second "pod" from the binding's endpoints.
func (t *Topology) StopSecondTunnel() {
	t.mu.Lock()
	s, c := t.SecondServer, t.SecondClient
	t.SecondServer, t.SecondClient = nil, nil
	t.mu.Unlock()
	for _, p := range []*Proc{c, s} {
		if p != nil {
			p.Stop(5 * time.Second)
		}
	}
}

// TunnelURL is the websocket URL the (first) client dials.
func (t *Topology) TunnelURL() string { return t.tunnelURL(0) }

func (t *Topology) tunnelURL(i int) string {
	scheme := "ws"
	if t.Cfg.TunnelTLS {
		scheme = "wss"
	}
	return fmt.Sprintf("%s://%s:%d/tunnel", scheme, TunnelHost, TunnelWSPort+i)
}

// StartTunnelClient starts one more tunnel client in home (its own admin
// port, so a stopped predecessor does not hold it) and returns it.
func (t *Topology) StartTunnelClient(ctx context.Context) (*Proc, error) {
	p, err := t.startClient(ctx, t.TunnelURL())
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.TunnelClients = append(t.TunnelClients, p)
	t.mu.Unlock()
	return p, nil
}

// startClient starts a tunnel client in home dialing url.
func (t *Topology) startClient(_ context.Context, url string) (*Proc, error) {
	t.mu.Lock()
	seq := t.clientSeq
	t.clientSeq++
	t.mu.Unlock()
	args := []string{"client",
		"--server=" + url,
		"--upstream=api=kubernetes.default.svc.cluster.local:" + strconv.Itoa(HomeAPIPort),
		"--upstream=gateway=" + GatewayHost + ":" + strconv.Itoa(GatewayPort),
		"--upstream=probe=" + GatewayHost + ":" + strconv.Itoa(ProbePort),
		"--token-file=" + t.tokenFile,
		"--admin-addr=" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ClientAdmin+seq)),
	}
	if t.Cfg.TunnelTLS {
		args = append(args, "--ca-file="+t.ingressCAFile)
	}
	args = append(args, t.Cfg.ClientArgs...)
	p, err := StartProc(t.Home, t.Cfg.WorkDir, fmt.Sprintf("home-tunnel-client-%d", seq), t.Cfg.TunnelBin, args, nil)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if t.clientAdmin == nil {
		t.clientAdmin = map[*Proc]int{}
	}
	t.clientAdmin[p] = seq
	t.mu.Unlock()
	return p, nil
}

// ClientAdminURL is the admin base URL of the n-th client started (the
// second tunnel's client counts too).
func ClientAdminURL(n int) string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ClientAdmin+n))
}

// WaitClientReady waits until the newest client's /readyz says its session
// is up.
func (t *Topology) WaitClientReady(ctx context.Context, timeout time.Duration) error {
	t.mu.Lock()
	p := t.TunnelClients[len(t.TunnelClients)-1]
	n := t.clientAdmin[p]
	t.mu.Unlock()
	return waitHTTP(ctx, t.Home, p, ClientAdminURL(n)+"/readyz", timeout)
}

// WaitTunnelReady waits until the server's /readyz says a session is up.
func (t *Topology) WaitTunnelReady(ctx context.Context, timeout time.Duration) error {
	t.mu.Lock()
	p := t.TunnelServer
	t.mu.Unlock()
	return waitHTTP(ctx, t.Cloud, p, "http://"+TunnelServerAdmin()+"/readyz", timeout)
}

// KillTunnelServer SIGKILLs the tunnel server.
func (t *Topology) KillTunnelServer() {
	t.mu.Lock()
	p := t.TunnelServer
	t.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// StopClient SIGSTOPs a client: it neither reads nor writes nor closes.
func (t *Topology) StopClient(p *Proc) error { return p.Signal(syscall.SIGSTOP) }

// SetLink takes home's end of the veth down or up.
func (t *Topology) SetLink(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return t.Home.IP("link", "set", t.HomeVeth, state)
}

// TunnelMetrics returns the server's /metrics body.
func (t *Topology) TunnelMetrics() (string, error) {
	code, body, err := t.HTTPGet(t.Cloud, "http://"+TunnelServerAdmin()+"/metrics")
	if err != nil {
		return "", err
	}
	if code != 200 {
		return "", fmt.Errorf("/metrics: HTTP %d", code)
	}
	return string(body), nil
}
