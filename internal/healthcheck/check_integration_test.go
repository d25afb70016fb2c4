package healthcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/extension"
	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
	"github.com/l5d-tunnel/l5d-tunnel/internal/webhook"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

const (
	extNS     = "l5d-tunnel"
	mcNS      = "linkerd-multicluster"
	clientNS  = "l5d-tunnel-home"
	certDir   = "/etc/l5d-tunnel/webhook-certs"
	servingSc = "l5d-tunnel-webhook-tls"
	// opted in by name, as the chart does (nobody labels Linkerd's namespaces)
	rewriteNS = mcNS + ",linkerd"
)

// cluster is one control plane set up as a cloud cluster (webhook running
// in-process, a Link of cluster home with its tunnel binding) that also has
// a tunnel client Deployment (the home side), so every check runs.
type cluster struct {
	*testenv.Env
	stopWebhook func()
}

// execute runs `linkerd-tunnel <args>` the way the root command does (the
// global flags are persistent flags of the root) and returns stdout and
// the exit code (0, 1 on ErrFailed, 2 on a usage error).
func (c *cluster) execute(t *testing.T, args ...string) (string, int) {
	t.Helper()
	g := &extension.Globals{}
	root := &cobra.Command{Use: "linkerd-tunnel", SilenceErrors: true, SilenceUsage: true}
	g.AddFlags(root.PersistentFlags())
	root.AddCommand(NewCmd(g))
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs(append(args, "--kubeconfig", c.Kubeconfig))
	err := root.Execute()
	switch {
	case err == nil:
		return out.String(), 0
	case errors.Is(err, ErrFailed):
		return out.String(), 1
	default:
		t.Logf("usage error: %v", err)
		return out.String(), 2
	}
}

func (c *cluster) apply(t *testing.T, yml string) {
	t.Helper()
	if _, err := c.Kubectl([]byte(yml), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) kubectl(t *testing.T, args ...string) {
	t.Helper()
	if _, err := c.Kubectl(nil, args...); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	retryInterval = 200 * time.Millisecond
	certExpiryWarning = 24 * time.Hour // envtest's serving certificate lives 7 days
	cfg, err := testenv.WebhookConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := testenv.LocalWebhooks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{Env: testenv.Start(t, testenv.Options{Webhooks: hooks})}
	ctx := t.Context()
	wi := c.WebhookInstallOptions

	// namespaces: the extension's (cloud and home), the opted-in ones
	c.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s, labels: {%[3]s: %[4]s}}
---
apiVersion: v1
kind: Namespace
metadata: {name: %[2]s, labels: {%[3]s: %[4]s}}
---
apiVersion: v1
kind: Namespace
metadata: {name: %[5]s}
---
apiVersion: v1
kind: Namespace
metadata: {name: linkerd}
`, extNS, clientNS, extension.LabelExtension, extension.Name, mcNS))
	// the webhook configuration envtest registered, labelled as the chart renders it
	c.kubectl(t, "label", "mutatingwebhookconfiguration", "l5d-tunnel-webhook", extension.LabelExtension+"="+extension.Name)

	// the serving Secret holds the certificate the webhook serves (envtest's)
	crt, err := os.ReadFile(filepath.Join(wi.LocalServingCertDir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(wi.LocalServingCertDir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	c.setServingSecret(t, crt, key)

	// the webhook Deployment (never runs here: the webhook runs in-process,
	// its status is written as a kubelet and the controller would)
	c.createDeployment(t, extNS, "l5d-tunnel-webhook", ComponentWebhook, corev1.Container{
		Name: "webhook", Image: "webhook",
		Args: []string{"--cert-dir=" + certDir, "--port=9443", "--trusted-namespaces=" + extNS, "--rewrite-namespaces=" + rewriteNS,
			"--log-format=json"},
		VolumeMounts: []corev1.VolumeMount{{Name: "serving-cert", MountPath: certDir, ReadOnly: true}},
	}, []corev1.Volume{{Name: "serving-cert", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: servingSc}}}})
	c.setAvailable(t, extNS, "l5d-tunnel-webhook", 2)

	// the tunnel client Deployment and its upstreams
	c.createDeployment(t, clientNS, "home-tunnel-client", ComponentClient, corev1.Container{
		Name: "tunnel", Image: "tunnel",
		Args: []string{"client", "--server=wss://tunnel.example.com/tunnel",
			"--upstream=api=kubernetes.default.svc:443",
			"--upstream=gateway=linkerd-gateway.linkerd-multicluster.svc.cluster.local:4143",
			"--upstream", "probe=linkerd-gateway.linkerd-multicluster:4191",
			"--token-file=/etc/l5d-tunnel/token/token", "--admin-addr=:9090"},
	}, nil)
	c.setAvailable(t, clientNS, "home-tunnel-client", 1)
	c.apply(t, `apiVersion: v1
kind: Service
metadata: {name: linkerd-gateway, namespace: linkerd-multicluster}
spec:
  ports:
  - {name: mc-gateway, port: 4143}
  - {name: mc-probe, port: 4191}
`)
	c.writeSlice(t, mcNS, "linkerd-gateway", "10.244.5.5", true)

	// the tunnel binding of cluster home, ready
	c.apply(t, bindingYAML(extNS))
	c.writeSlice(t, extNS, "home-tunnel-server-gateway", "10.244.0.10", true)

	// the webhook
	c.startWebhook(t)

	// what `linkerd multicluster link` applies
	raw, err := fixtures.Raw(fixtures.Newest(), "link.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.apply(t, string(raw))
	_ = ctx
	return c
}

func bindingYAML(ns string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: home-tunnel-server, namespace: %[1]s, labels: {%[2]s: home}}
spec:
  selector: {app: tunnel-server}
  ports:
  - {name: api, port: 6443}
  - {name: probe, port: 4191}
---
apiVersion: v1
kind: Service
metadata: {name: home-tunnel-server-gateway, namespace: %[1]s, labels: {%[2]s: home}}
spec:
  clusterIP: None
  selector: {app: tunnel-server}
  ports:
  - {name: gateway, port: 4143}
`, ns, mutate.LabelLink)
}

func (c *cluster) startWebhook(t *testing.T) {
	t.Helper()
	wi := c.WebhookInstallOptions
	o := webhook.DefaultOptions()
	o.CertDir, o.BindAddress, o.Port = wi.LocalServingCertDir, wi.LocalServingHost, wi.LocalServingPort
	o.TrustedNamespaces = []string{extNS}
	o.RewriteNamespaces = strings.Split(rewriteNS, ",")
	o.Kubeconfig = c.Kubeconfig
	o.HealthAddr, o.MetricsAddr = freeAddr(t), "0"
	o.LeaderElect = false
	o.GatewayDebounce = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = webhook.Run(ctx, o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	var once sync.Once
	c.stopWebhook = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(c.stopWebhook)
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + o.HealthAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) setServingSecret(t *testing.T, crt, key []byte) {
	t.Helper()
	s := &corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": crt, "tls.key": key}}
	s.Name, s.Namespace = servingSc, extNS
	err := c.Client.Create(t.Context(), s)
	if apierrors.IsAlreadyExists(err) {
		err = c.Client.Update(t.Context(), s)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) createDeployment(t *testing.T, ns, name, component string, ct corev1.Container, vols []corev1.Volume) {
	t.Helper()
	labels := map[string]string{extension.LabelExtension: extension.Name, LabelComponent: component, "app.kubernetes.io/name": name}
	d := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](2),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": name}},
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{ct}, Volumes: vols}},
	}}
	d.Name, d.Namespace, d.Labels = name, ns, labels
	d.Spec.Template.Labels = map[string]string{"app.kubernetes.io/name": name}
	if err := c.Client.Create(t.Context(), d); err != nil {
		t.Fatal(err)
	}
}

// setAvailable writes a Deployment's status as its controller would with
// n available replicas (Deployments do not run on this control plane).
func (c *cluster) setAvailable(t *testing.T, ns, name string, n int32) {
	t.Helper()
	var d appsv1.Deployment
	if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
		t.Fatal(err)
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: n, AvailableReplicas: n}
	if err := c.Client.Status().Update(t.Context(), &d); err != nil {
		t.Fatal(err)
	}
}

// writeSlice writes the one EndpointSlice of a Service with one endpoint.
func (c *cluster) writeSlice(t *testing.T, ns, svc, ip string, ready bool) {
	t.Helper()
	s := &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}}}
	s.Name, s.Namespace = svc+"-check", ns
	s.Labels = map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "check-test"}
	var cur discoveryv1.EndpointSlice
	err := c.Client.Get(t.Context(), client.ObjectKeyFromObject(s), &cur)
	switch {
	case apierrors.IsNotFound(err):
		err = c.Client.Create(t.Context(), s)
	case err == nil:
		cur.Endpoints = s.Endpoints
		err = c.Client.Update(t.Context(), &cur)
	}
	if err != nil {
		t.Fatal(err)
	}
}
