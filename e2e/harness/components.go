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
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testpki"
)

// --- webhook -----------------------------------------------------------------

// installWebhook renders `linkerd-tunnel install` (one replica: the e2e
// runs one webhook process), applies it to cloud and issues its
// certificates as cert-manager would.
func (t *Topology) installWebhook(ctx context.Context) error {
	out, err := t.LinkerdTunnel(ctx, t.Cloud, t.CloudCP, "install", "--replicas=1")
	if err != nil {
		return err
	}
	objs, err := t.ApplyRendered(ctx, t.CloudCP, out)
	if err != nil {
		return err
	}
	if t.webhookDeployment, err = oneDeployment(objs); err != nil {
		return fmt.Errorf("linkerd-tunnel install: %w", err)
	}
	return t.issueCertificates(ctx, t.CloudCP, objs)
}

// startWebhook runs the rendered webhook Deployment's one replica at
// WebhookPodIP with its ServiceAccount's credentials, and waits until the
// API server can route admission calls to it.
func (t *Topology) startWebhook(ctx context.Context) error {
	d := t.webhookDeployment
	kubeconfig := filepath.Join(t.Cfg.WorkDir, "webhook", "in-cluster.kubeconfig")
	if err := serviceAccountKubeconfig(ctx, t.CloudCP, d, kubeconfig); err != nil {
		return err
	}
	// In-cluster configuration stand-in: the ServiceAccount's token.
	pod, err := t.startPod(ctx, t.CloudCP, t.Cloud, d, d.Name+"-0", WebhookPodIP, t.Cfg.WebhookBin, nil, []string{"--kubeconfig=" + kubeconfig})
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.Webhook = pod.Proc
	t.mu.Unlock()
	if err := waitHTTP(ctx, t.Cloud, pod.Proc, pod.readyURL, time.Minute); err != nil {
		return err
	}
	// The API server routes by the EndpointSlice the pod stand-in writes.
	if err := t.waitPodsWritten(ctx); err != nil {
		return err
	}
	t.logf("webhook %s serving at %s:%d", d.Name, WebhookPodIP, WebhookPort)
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

// installServer renders `linkerd-tunnel server` for LinkName (one replica;
// the failover tests start a second "pod") with an Ingress for TunnelHost,
// applies it to cloud and reads the binding from it.
func (t *Topology) installServer(ctx context.Context) error {
	out, err := t.LinkerdTunnel(ctx, t.Cloud, t.CloudCP, "server", LinkName, "--replicas=1", "--ingress-host="+TunnelHost)
	if err != nil {
		return err
	}
	objs, err := t.ApplyRendered(ctx, t.CloudCP, out)
	if err != nil {
		return err
	}
	if t.serverDeployment, err = oneDeployment(objs); err != nil {
		return fmt.Errorf("linkerd-tunnel server: %w", err)
	}
	if t.Binding, err = ParseBinding(out); err != nil {
		return fmt.Errorf("linkerd-tunnel server: %w", err)
	}
	return t.WriteCloudDNS(ctx)
}

// installClient renders `linkerd-tunnel client` against cloud (it reads the
// link's token there) and applies it to home. The home API server listens
// on HomeAPIPort, not 443: no kube-proxy maps the kubernetes Service's port
// here, so the api upstream names the port the API server listens on.
func (t *Topology) installClient(ctx context.Context) error {
	args := []string{"client", LinkName, "--server-url=" + t.TunnelURL(), "--replicas=1",
		"--upstream=api=kubernetes.default.svc.cluster.local:" + strconv.Itoa(HomeAPIPort)}
	if t.Cfg.TunnelTLS {
		args = append(args, "--ca-file="+t.ingressCAFile)
	}
	out, err := t.LinkerdTunnel(ctx, t.Cloud, t.CloudCP, args...)
	if err != nil {
		return err
	}
	objs, err := t.ApplyRendered(ctx, t.HomeCP, out)
	if err != nil {
		return err
	}
	if t.clientDeployment, err = oneDeployment(objs); err != nil {
		return fmt.Errorf("linkerd-tunnel client: %w", err)
	}
	return nil
}

// ingressCerts makes the ingress's certificate for TunnelHost (wss://).
func (t *Topology) ingressCerts() error {
	if !t.Cfg.TunnelTLS {
		return nil
	}
	dir := filepath.Join(t.Cfg.WorkDir, "ingress")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
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
	return os.WriteFile(t.ingressCAFile, ca.CertPEM, 0o600)
}

func (t *Topology) startTunnel(ctx context.Context) error {
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
	t.mu.Lock()
	old := t.TunnelServer
	t.mu.Unlock()
	if old != nil {
		old.Stop(5 * time.Second)
		t.removePod(old)
	}
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

// startServer runs replica i (0 or 1) of the rendered tunnel-server
// Deployment at tunnelPodIPs[i]. Ingress stand-in: the websocket endpoint
// listens where the ingress would, on cloud's veth address at
// TunnelWSPort+i, and terminates TLS itself (--tls-cert/--tls-key) instead
// of an ingress controller in front of it.
func (t *Topology) startServer(ctx context.Context, i int) (*Proc, error) {
	d := t.serverDeployment
	override := map[string]string{"listen": net.JoinHostPort(CloudVethIP, strconv.Itoa(TunnelWSPort+i))}
	var extra []string
	if t.Cfg.TunnelTLS {
		extra = append(extra, "--tls-cert="+t.ingressCert, "--tls-key="+t.ingressKey)
	}
	pod, err := t.startPod(ctx, t.CloudCP, t.Cloud, d, fmt.Sprintf("%s-%d", d.Name, i), tunnelPodIPs[i], t.Cfg.TunnelBin,
		override, append(extra, t.Cfg.ServerArgs...))
	if err != nil {
		return nil, err
	}
	return pod.Proc, waitHTTP(ctx, t.Cloud, pod.Proc, "http://"+net.JoinHostPort(tunnelPodIPs[i], strconv.Itoa(TunnelAdmin))+"/healthz", 30*time.Second)
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
			t.removePod(p)
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

// startClient runs one more replica of the rendered tunnel-client
// Deployment in home, dialing url, as a "pod" of its own address
// (clientPodIP), so a stopped predecessor does not hold its admin port.
func (t *Topology) startClient(ctx context.Context, url string) (*Proc, error) {
	t.mu.Lock()
	seq := t.clientSeq
	t.clientSeq++
	t.mu.Unlock()
	d := t.clientDeployment
	ip := clientPodIP(seq)
	if err := t.Home.AddAddrs("pods", ip+"/32"); err != nil {
		return nil, err
	}
	var override map[string]string
	if url != t.TunnelURL() {
		override = map[string]string{"server": url}
	}
	pod, err := t.startPod(ctx, t.HomeCP, t.Home, d, fmt.Sprintf("%s-%d", d.Name, seq), ip, t.Cfg.TunnelBin,
		override, t.Cfg.ClientArgs)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if t.clientAdmin == nil {
		t.clientAdmin = map[*Proc]int{}
	}
	t.clientAdmin[pod.Proc] = seq
	t.mu.Unlock()
	return pod.Proc, nil
}

// clientPodIP is the home "pod" address of the n-th client started.
func clientPodIP(n int) string { return fmt.Sprintf("%s%d", HomeClientPodPrefix, 10+n) }

// StopTunnelClients stops every tunnel client of the first tunnel (their
// pods are gone): the link has no session until StartTunnelClient.
func (t *Topology) StopTunnelClients() {
	t.mu.Lock()
	clients := t.TunnelClients
	t.TunnelClients = nil
	t.mu.Unlock()
	for _, p := range clients {
		p.Stop(5 * time.Second)
		t.removePod(p)
	}
}

// ClientAdminURL is the admin base URL (in home) of the n-th client
// started (the second tunnel's client counts too).
func ClientAdminURL(n int) string {
	return "http://" + net.JoinHostPort(clientPodIP(n), strconv.Itoa(TunnelAdmin))
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
