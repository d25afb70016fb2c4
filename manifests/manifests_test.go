package manifests_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
	"github.com/l5d-tunnel/l5d-tunnel/internal/webhook"
	"github.com/l5d-tunnel/l5d-tunnel/manifests"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// The rendered install files (`make manifests`, manifests/internal/render,
// whose test keeps them equal to the charts' rendering) and their charts.
var distFiles = map[string]string{
	"install-webhook.yaml": manifests.ChartWebhook,
	"tunnel-server.yaml":   manifests.ChartServer,
	"tunnel-client.yaml":   manifests.ChartClient,
}

const (
	ns             = "l5d-tunnel"
	exampleCluster = "home" // the link of the example values
	webhookSA      = "l5d-tunnel-webhook"
)

func root(p ...string) string { return filepath.Join(append([]string{repo.Root()}, p...)...) }

// loadDist decodes one checked-in dist file.
func loadDist(t *testing.T, name string) []*unstructured.Unstructured {
	t.Helper()
	raw, err := os.ReadFile(root("dist", name))
	if err != nil {
		t.Fatalf("read dist/%s (run `make manifests`): %v", name, err)
	}
	objs, err := fixtures.Decode(raw)
	if err != nil {
		t.Fatalf("decode dist/%s: %v", name, err)
	}
	return objs
}

func loadAllDist(t *testing.T) map[string][]*unstructured.Unstructured {
	out := map[string][]*unstructured.Unstructured{}
	for f := range distFiles {
		out[f] = loadDist(t, f)
	}
	return out
}

// as converts an unstructured object to its typed form, failing on fields
// the type does not know (a typo in a manifest).
func as[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return out
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == namespace && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s/%s", kind, namespace, name)
	return nil
}

// flagValue returns the value of --name=value in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func flagValues(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

func addrPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

// containerPort resolves a probe or Service target port against a container.
func containerPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// TestWorkloadSecurity checks every Deployment of every dist file: non-root,
// read-only root filesystem, no privilege escalation, ALL capabilities
// dropped, RuntimeDefault seccomp, resources, liveness and readiness probes
// on the binaries' health endpoints, pinned image references kustomize can
// override, no host access; tunnel pods unmeshed and without an API token;
// a NetworkPolicy for each; the webhook highly available.
func TestWorkloadSecurity(t *testing.T) {
	all := loadAllDist(t)
	deployments := 0
	for file, objs := range all {
		for _, n := range fixtures.OfKind(objs, "Namespace") {
			if n.GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
				t.Errorf("%s: Namespace %s does not enforce the restricted Pod Security Standard", file, n.GetName())
			}
		}
		for _, u := range fixtures.OfKind(objs, "Deployment") {
			deployments++
			d := as[appsv1.Deployment](t, u)
			t.Run(file+"/"+d.Name, func(t *testing.T) {
				checkPodSecurity(t, d)
				checkNetworkPolicy(t, objs, d)
				spec := d.Spec.Template.Spec
				c := spec.Containers[0]
				image := regexp.MustCompile(`^ghcr\.io/l5d-tunnel/(tunnel|webhook):v[0-9][^:]*$`).FindStringSubmatch(c.Image)
				if image == nil {
					t.Fatalf("image %q: want ghcr.io/l5d-tunnel/{tunnel,webhook}:v<version> (overridable with kustomize images:)", c.Image)
				}
				if !hasMemLimitEnv(c) {
					t.Error("GOMEMLIMIT must come from the container's limits.memory (resourceFieldRef)")
				}
				switch image[1] {
				case "tunnel":
					if d.Spec.Template.Annotations["linkerd.io/inject"] != "disabled" {
						t.Error("tunnel pods must carry linkerd.io/inject: disabled (a proxy would take 4143/4191)")
					}
					if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
						t.Error("tunnel pods need no Kubernetes API token: automountServiceAccountToken must be false")
					}
					admin, ok := flagValue(c.Args, "admin-addr")
					if !ok {
						t.Fatal("no --admin-addr")
					}
					checkProbes(t, c, "/healthz", "/readyz", addrPort(t, admin))
				case "webhook":
					health, ok := flagValue(c.Args, "health-addr")
					if !ok {
						t.Fatal("no --health-addr")
					}
					checkProbes(t, c, "/healthz", "/readyz", addrPort(t, health))
					if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
						t.Error("webhook needs at least 2 replicas")
					}
					aff := spec.Affinity
					if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution)+len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) == 0 {
						t.Error("webhook has no pod anti-affinity")
					}
					checkPDB(t, objs, d)
				}
			})
		}
	}
	if deployments != 3 {
		t.Errorf("found %d Deployments in dist/, want 3 (webhook, tunnel server, tunnel client)", deployments)
	}
}

// hasMemLimitEnv reports whether c sets Go's soft memory limit from its own
// memory limit, so the runtime collects harder before the kernel kills it.
func hasMemLimitEnv(c corev1.Container) bool {
	if c.Resources.Limits.Memory().IsZero() {
		return false
	}
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
			e.ValueFrom.ResourceFieldRef.Resource == "limits.memory" {
			return true
		}
	}
	return false
}

func checkPodSecurity(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot must be true")
	}
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("pod securityContext.runAsUser must be a non-zero UID")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile must be RuntimeDefault")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("pod uses host namespaces")
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s is a hostPath", v.Name)
		}
		if v.Secret != nil && len(v.Secret.Items) > 0 {
			t.Errorf("secret volume %s selects items: mount the whole Secret so updates are seen", v.Name)
		}
	}
	if len(spec.InitContainers) > 0 {
		t.Error("init containers are not expected")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Fatalf("container %s has no securityContext", c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("container %s: readOnlyRootFilesystem must be true", c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("container %s: allowPrivilegeEscalation must be false", c.Name)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("container %s is privileged", c.Name)
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("container %s: capabilities must drop ALL and add none", c.Name)
		case sc.RunAsUser != nil && *sc.RunAsUser == 0:
			t.Errorf("container %s runs as root", c.Name)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
				t.Errorf("container %s: no %s request", c.Name, r)
			}
			if q, ok := c.Resources.Limits[r]; !ok || q.IsZero() {
				t.Errorf("container %s: no %s limit", c.Name, r)
			}
		}
		if c.Image == "" || strings.HasSuffix(c.Image, ":latest") {
			t.Errorf("container %s: image %q must be pinned", c.Name, c.Image)
		}
	}
}

func checkProbes(t *testing.T, c corev1.Container, live, ready string, port int32) {
	t.Helper()
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, live}, {"readiness", c.ReadinessProbe, ready}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
		got, ok := containerPort(c, p.probe.HTTPGet.Port)
		if !ok || got != port {
			t.Errorf("%s probe port %v is container port %d, but the binary serves it on %d", p.name, p.probe.HTTPGet.Port.String(), got, port)
		}
	}
}

// checkNetworkPolicy wants a NetworkPolicy in the Deployment's namespace
// whose podSelector selects its pods and that restricts ingress.
func checkNetworkPolicy(t *testing.T, objs []*unstructured.Unstructured, d *appsv1.Deployment) {
	t.Helper()
	for _, u := range fixtures.OfKind(objs, "NetworkPolicy") {
		np := as[networkingv1.NetworkPolicy](t, u)
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Fatal(err)
		}
		if np.Namespace == d.Namespace && !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
				t.Errorf("NetworkPolicy %s does not restrict ingress", np.Name)
			}
			for _, r := range np.Spec.Ingress {
				if len(r.Ports) == 0 {
					t.Errorf("NetworkPolicy %s has an ingress rule open on every port", np.Name)
				}
			}
			return
		}
	}
	t.Errorf("no NetworkPolicy selects the pods of Deployment %s", d.Name)
}

func checkPDB(t *testing.T, objs []*unstructured.Unstructured, d *appsv1.Deployment) {
	t.Helper()
	for _, u := range fixtures.OfKind(objs, "PodDisruptionBudget") {
		pdb := as[policyv1.PodDisruptionBudget](t, u)
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		if pdb.Namespace == d.Namespace && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 {
				t.Errorf("PodDisruptionBudget %s must keep at least one pod", pdb.Name)
			}
			return
		}
	}
	t.Errorf("no PodDisruptionBudget for Deployment %s", d.Name)
}

// TestTunnelBinding checks the binding contract of docs/design.md on the
// rendered tunnel server: pkg/mutate's own FindBinding accepts it, the
// Services select the server pods on ports the server listens on, and the
// websocket Service and Ingress reach the websocket endpoint.
func TestTunnelBinding(t *testing.T) {
	objs := loadDist(t, "tunnel-server.yaml")
	var svcs []corev1.Service
	for _, u := range fixtures.OfKind(objs, "Service") {
		svcs = append(svcs, *as[corev1.Service](t, u))
	}
	b, err := mutate.FindBinding(exampleCluster, svcs, []string{ns})
	if err != nil || b == nil {
		t.Fatalf("FindBinding(%q): %v, %v", exampleCluster, b, err)
	}
	want := mutate.Binding{Cluster: exampleCluster, Namespace: ns, Service: "home-tunnel-server", Headless: "home-tunnel-server-gateway",
		APIPort: 6443, ProbePort: 4191, GatewayPort: 4143}
	if !reflect.DeepEqual(*b, want) {
		t.Errorf("binding\n got %+v\nwant %+v (the ports docs/install.md documents)", *b, want)
	}
	d := as[appsv1.Deployment](t, find(t, objs, "Deployment", ns, "home-tunnel-server"))
	c := d.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "server" {
		t.Fatalf("args %q: want the server subcommand", c.Args)
	}
	listeners := map[string]int32{}
	for _, p := range flagValues(c.Args, "port") {
		name, addr, _ := strings.Cut(p, "=")
		listeners[name] = addrPort(t, addr)
	}
	wantListeners := map[string]int32{"api": 6443, "probe": 4191, "gateway": 4143}
	if !reflect.DeepEqual(listeners, wantListeners) {
		t.Errorf("--port listeners %v, want %v", listeners, wantListeners)
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	linked := 0
	for _, s := range svcs {
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) || len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s does not select the tunnel-server pods", s.Name)
		}
		if s.Labels[mutate.LabelLink] != "" {
			linked++
		}
		for _, p := range s.Spec.Ports {
			port, ok := containerPort(c, p.TargetPort)
			if !ok {
				t.Errorf("Service %s port %s: targetPort %s is no container port", s.Name, p.Name, p.TargetPort.String())
				continue
			}
			if l, isListener := listeners[p.Name]; isListener && l != port {
				t.Errorf("Service %s port %s targets %d, but the server listens on %d", s.Name, p.Name, port, l)
			}
		}
	}
	if linked != 2 {
		t.Errorf("%d Services carry %s; only the two binding Services may (more makes the binding ambiguous)", linked, mutate.LabelLink)
	}
	for _, s := range []string{b.Service, b.Headless} {
		svc := as[corev1.Service](t, find(t, objs, "Service", ns, s))
		if svc.Spec.PublishNotReadyAddresses {
			t.Errorf("binding Service %s publishes not-ready pods: it must route only to servers with a client session", s)
		}
		// Port equals targetPort on every binding port: the headless
		// gateway port is dialled on the pod IPs directly, and the e2e
		// harness (e2e/harness/binding.go) maps Service names to pods.
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.Type != intstr.Int || p.TargetPort.IntVal != p.Port {
				t.Errorf("binding Service %s port %s: targetPort %s, want the number %d", s, p.Name, p.TargetPort.String(), p.Port)
			}
		}
	}

	// Websocket endpoint: Service -> --listen, reachable before Ready.
	listen, _ := flagValue(c.Args, "listen")
	ws := as[corev1.Service](t, find(t, objs, "Service", ns, "home-tunnel-server-ws"))
	if !ws.Spec.PublishNotReadyAddresses {
		t.Error("the websocket Service must publish not-ready pods (servers are Ready only once a client connected)")
	}
	if port, ok := containerPort(c, ws.Spec.Ports[0].TargetPort); !ok || port != addrPort(t, listen) {
		t.Errorf("websocket Service targets %v, server --listen is %s", ws.Spec.Ports[0].TargetPort.String(), listen)
	}
	ing := as[networkingv1.Ingress](t, find(t, objs, "Ingress", ns, "home-tunnel-server"))
	path := ing.Spec.Rules[0].HTTP.Paths[0]
	if path.Path != "/tunnel" || path.Backend.Service == nil || path.Backend.Service.Name != ws.Name || path.Backend.Service.Port.Name != ws.Spec.Ports[0].Name {
		t.Errorf("Ingress path %+v does not route /tunnel to %s:%s", path, ws.Name, ws.Spec.Ports[0].Name)
	}

	// The per-cluster token Secret.
	var token string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			token = v.Secret.SecretName
		}
	}
	if token != exampleCluster+"-tunnel-token" {
		t.Errorf("server token Secret %q, want %q (one token per linked cluster)", token, exampleCluster+"-tunnel-token")
	}
	if tf, _ := flagValue(c.Args, "token-file"); !mountedFile(c, tf) {
		t.Errorf("--token-file %q is not in a mounted volume", tf)
	}
}

func mountedFile(c corev1.Container, file string) bool {
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return true
		}
	}
	return false
}

// TestTunnelClient checks the home side: the only upstreams are the three of
// the issue, the server URL is the example server's Ingress, the token comes
// from a file.
func TestTunnelClient(t *testing.T) {
	objs := loadDist(t, "tunnel-client.yaml")
	deps := fixtures.OfKind(objs, "Deployment")
	if len(deps) != 1 {
		t.Fatalf("%d Deployments, want 1", len(deps))
	}
	d := as[appsv1.Deployment](t, deps[0])
	c := d.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "client" {
		t.Fatalf("args %q: want the client subcommand", c.Args)
	}
	wantUp := []string{
		"api=kubernetes.default.svc:443",
		"gateway=linkerd-gateway.linkerd-multicluster.svc.cluster.local:4143",
		"probe=linkerd-gateway.linkerd-multicluster.svc.cluster.local:4191",
	}
	if got := flagValues(c.Args, "upstream"); !slices.Equal(got, wantUp) {
		t.Errorf("--upstream %q, want %q", got, wantUp)
	}
	server, _ := flagValue(c.Args, "server")
	if !regexp.MustCompile(`^wss://[a-z0-9.-]+(:[0-9]+)?/tunnel$`).MatchString(server) {
		t.Errorf("--server=%q: want wss://<host>/tunnel", server)
	}
	// The client dials the host the example server's Ingress serves.
	ing := as[networkingv1.Ingress](t, find(t, loadDist(t, "tunnel-server.yaml"), "Ingress", ns, "home-tunnel-server"))
	if want := "wss://" + ing.Spec.Rules[0].Host + "/tunnel"; server != want {
		t.Errorf("client server URL %q, but the example server Ingress serves %q", server, want)
	}
	if tf, _ := flagValue(c.Args, "token-file"); !mountedFile(c, tf) {
		t.Errorf("--token-file %q is not in a mounted volume", tf)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Error("the client should run 2 replicas (the server uses the newest live session)")
	}
	checkPDB(t, objs, d)
}

// TestWebhookConfiguration: the MutatingWebhookConfiguration in dist is the
// one the integration tests register (testenv.WebhookConfiguration renders
// the same chart), its caBundle comes from the CA Certificate, and it
// reaches the webhook Deployment through the Service and certificate of the
// install.
func TestWebhookConfiguration(t *testing.T) {
	raw, err := testenv.WebhookConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	src, err := fixtures.Decode(raw)
	if err != nil || len(src) != 1 || src[0].GetKind() != "MutatingWebhookConfiguration" {
		t.Fatalf("testenv.WebhookConfiguration: want exactly one MutatingWebhookConfiguration (%d objects, %v)", len(src), err)
	}
	objs := loadDist(t, "install-webhook.yaml")
	mwcs := fixtures.OfKind(objs, "MutatingWebhookConfiguration")
	if len(mwcs) != 1 {
		t.Fatalf("%d MutatingWebhookConfigurations in dist/install-webhook.yaml, want 1", len(mwcs))
	}
	want := as[admissionregistrationv1.MutatingWebhookConfiguration](t, src[0])
	got := as[admissionregistrationv1.MutatingWebhookConfiguration](t, mwcs[0])
	if got.Name != want.Name || !reflect.DeepEqual(got.Webhooks, want.Webhooks) || !reflect.DeepEqual(got.Annotations, want.Annotations) {
		t.Errorf("dist webhook configuration differs from the registered one:\n got %+v\nwant %+v", got, want)
	}
	if len(want.Webhooks) != 3 {
		t.Errorf("%d webhooks, want 3 (probe Services, credentials Secrets, Links)", len(want.Webhooks))
	}

	checkCAInjection(t, objs, got)
	_, secretName, dnsNames := servingCertificate(t, objs)

	d := as[appsv1.Deployment](t, find(t, objs, "Deployment", ns, "l5d-tunnel-webhook"))
	c := d.Spec.Template.Spec.Containers[0]
	certDir, _ := flagValue(c.Args, "cert-dir")
	var mounted bool
	for _, m := range c.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == secretName && m.MountPath == certDir && m.SubPath == "" {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("serving Secret %s is not mounted (as a directory) at --cert-dir %q", secretName, certDir)
	}
	port, _ := flagValue(c.Args, "port")
	for _, wh := range got.Webhooks {
		ref := wh.ClientConfig.Service
		if ref == nil {
			t.Errorf("webhook %s: no service reference", wh.Name)
			continue
		}
		if !slices.Contains(webhook.Paths, *ref.Path) {
			t.Errorf("webhook %s: path %s is not served (%v)", wh.Name, *ref.Path, webhook.Paths)
		}
		if !slices.Contains(dnsNames, ref.Name+"."+ref.Namespace+".svc") {
			t.Errorf("webhook %s: certificate dnsNames %v lack %s.%s.svc", wh.Name, dnsNames, ref.Name, ref.Namespace)
		}
		svc := as[corev1.Service](t, find(t, objs, "Service", ref.Namespace, ref.Name))
		var reached bool
		for _, sp := range svc.Spec.Ports {
			if ref.Port != nil && sp.Port == *ref.Port {
				cp, ok := containerPort(c, sp.TargetPort)
				reached = ok && strconv.Itoa(int(cp)) == port
			}
		}
		if !reached || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("webhook %s: Service %s port %v does not reach the webhook's --port %s", wh.Name, svc.Name, ref.Port, port)
		}
		// The requirements on every entry.
		if wh.SideEffects == nil || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone {
			t.Errorf("webhook %s: sideEffects must be None", wh.Name)
		}
		if !slices.Equal(wh.AdmissionReviewVersions, []string{"v1"}) {
			t.Errorf("webhook %s: admissionReviewVersions %v", wh.Name, wh.AdmissionReviewVersions)
		}
		if wh.TimeoutSeconds == nil || *wh.TimeoutSeconds > 10 {
			t.Errorf("webhook %s: timeout must be short (<= 10s)", wh.Name)
		}
		if wh.FailurePolicy == nil {
			t.Errorf("webhook %s: failurePolicy must be explicit (docs/operations.md explains the choice)", wh.Name)
		}
		// Namespaces opt in by name (--rewrite-namespaces) or label, which
		// a selector cannot express: every namespace but kube-system and
		// the webhook's own reaches the webhook, labelled or not, and the
		// webhook decides (mutate.OptedIn).
		sel, err := metav1.LabelSelectorAsSelector(wh.NamespaceSelector)
		if err != nil {
			t.Fatal(err)
		}
		for nsName, admitted := range map[string]bool{"linkerd-multicluster": true, "linkerd": true, "kube-system": false, ns: false, "demo": true} {
			l := labels.Set{"kubernetes.io/metadata.name": nsName}
			if got := sel.Matches(l); got != admitted {
				t.Errorf("webhook %s: namespace %s reaches the webhook: %v, want %v", wh.Name, nsName, got, admitted)
			}
			l[mutate.LabelRewrite] = mutate.LabelRewriteEnabled
			if got := sel.Matches(l); got != admitted {
				t.Errorf("webhook %s: namespace %s labelled %s reaches the webhook: %v, want %v", wh.Name, nsName, mutate.LabelRewrite, got, admitted)
			}
		}
	}
}

// TestWebhookFlags parses the Deployment's arguments with the webhook
// binary's own flag parser.
func TestWebhookFlags(t *testing.T) {
	objs := loadDist(t, "install-webhook.yaml")
	d := as[appsv1.Deployment](t, find(t, objs, "Deployment", ns, "l5d-tunnel-webhook"))
	c := d.Spec.Template.Spec.Containers[0]
	var podNS bool
	for _, e := range c.Env {
		podNS = podNS || (e.Name == webhook.EnvPodNamespace && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace")
	}
	if !podNS {
		t.Errorf("no %s from the downward API", webhook.EnvPodNamespace)
	}
	if d.Spec.Template.Spec.ServiceAccountName != webhookSA {
		t.Errorf("serviceAccountName %q, want %q", d.Spec.Template.Spec.ServiceAccountName, webhookSA)
	}
	t.Setenv(webhook.EnvPodNamespace, ns)
	certDir := t.TempDir()
	args := make([]string, 0, len(c.Args))
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--cert-dir=") {
			a = "--cert-dir=" + certDir // the mount does not exist here
		}
		args = append(args, a)
	}
	var stderr bytes.Buffer
	o, err := webhook.Parse(args, &stderr)
	if err != nil {
		t.Fatalf("webhook %q: %v\n%s", args, err, stderr.String())
	}
	if !o.LeaderElect || o.Port != 9443 || !slices.Equal(o.TrustedNamespaces, []string{ns}) {
		t.Errorf("parsed %+v: want leader election, port 9443, trusted namespace %s", o, ns)
	}
	// Linkerd's namespaces are opted in by name (the chart's
	// rewriteNamespaces): nothing labels them.
	if want := []string{"linkerd-multicluster", "linkerd"}; !slices.Equal(o.RewriteNamespaces, want) {
		t.Errorf("parsed --rewrite-namespaces %q, want %q", o.RewriteNamespaces, want)
	}
}

// TestTunnelArgsRun runs bin/tunnel with the exact arguments of the rendered
// server and client Deployments, in a network namespace of their own (the
// ports are the real ones): the server starts its listeners, the client
// connects, both report Ready, the server serves l5d_tunnel_ metrics where
// the pod annotations say, and both stop cleanly on SIGTERM. Only what a pod
// provides differently is substituted: the token file path, the client's
// server URL (ws://127.0.0.1:<listen port>/tunnel instead of the public
// wss:// URL) and the client's admin port (both run in one namespace here).
func TestTunnelArgsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tunnel binary")
	}
	if err := exec.Command("unshare", "-rn", "true").Run(); err != nil {
		if os.Getenv("L5D_E2E_REQUIRED") == "" {
			t.Skipf("cannot create a network namespace (unshare -rn: %v); set L5D_E2E_REQUIRED=1 to make this fatal", err)
		}
		t.Fatalf("unshare -rn: %v", err)
	}
	bin, err := goBuild(t, "tunnel")
	if err != nil {
		t.Fatal(err)
	}
	srv := as[appsv1.Deployment](t, find(t, loadDist(t, "tunnel-server.yaml"), "Deployment", ns, "home-tunnel-server"))
	cli := as[appsv1.Deployment](t, find(t, loadDist(t, "tunnel-client.yaml"), "Deployment", ns, "home-tunnel-client"))
	sc, cc := srv.Spec.Template.Spec.Containers[0], cli.Spec.Template.Spec.Containers[0]

	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret-test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, _ := flagValue(sc.Args, "listen")
	srvAdmin, _ := flagValue(sc.Args, "admin-addr")
	cliAdmin := ":19090"
	if ann := srv.Spec.Template.Annotations["prometheus.io/port"]; ann != strconv.Itoa(int(addrPort(t, srvAdmin))) {
		t.Errorf("prometheus.io/port %q is not the admin port %s", ann, srvAdmin)
	}
	subst := func(args []string, repl map[string]string) []string {
		out := make([]string, 0, len(args))
		for _, a := range args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if v, ok := repl[name]; ok && strings.HasPrefix(a, "--") {
				a = "--" + name + "=" + v
			}
			out = append(out, a)
		}
		return out
	}
	serverArgs := subst(sc.Args, map[string]string{"token-file": token})
	clientArgs := subst(cc.Args, map[string]string{
		"token-file": token,
		"server":     fmt.Sprintf("ws://127.0.0.1:%d/tunnel", addrPort(t, listen)),
		"admin-addr": cliAdmin,
	})
	if slices.Equal(clientArgs, cc.Args) {
		t.Fatal("client arguments not substituted")
	}
	quote := func(args []string) string {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		return strings.Join(q, " ")
	}
	// bash's /dev/tcp instead of an HTTP client binary the machine may lack.
	script := fmt.Sprintf(`set -u
ip link set lo up
"$BIN" %s >"$DIR/server.log" 2>&1 & s=$!
"$BIN" %s >"$DIR/client.log" 2>&1 & c=$!
get() { # port path: prints the response (HTTP/1.0, the server closes)
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %%s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  timeout 2 cat <&3; exec 3>&-
}
ready() { get "$1" /readyz 2>/dev/null | head -1 | grep -q ' 200 '; }
ok=0
for i in $(seq 100); do if ready %d && ready %d; then ok=1; break; fi; sleep 0.1; done
echo "ready=$ok"
get %d /metrics >"$DIR/metrics" || echo "metrics failed"
kill -TERM $c; wait $c; echo "client_exit=$?"
kill -TERM $s; wait $s; echo "server_exit=$?"
`, quote(serverArgs), quote(clientArgs), addrPort(t, srvAdmin), addrPort(t, cliAdmin), addrPort(t, srvAdmin))
	cmd := exec.Command("unshare", "-rn", "bash", "-c", script)
	cmd.Env = append(os.Environ(), "BIN="+bin, "DIR="+dir)
	out, err := cmd.CombinedOutput()
	logs := func() string {
		s, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		c, _ := os.ReadFile(filepath.Join(dir, "client.log"))
		return fmt.Sprintf("server log:\n%s\nclient log:\n%s", s, c)
	}
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, logs())
	}
	for _, want := range []string{"ready=1", "client_exit=0", "server_exit=0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("want %s in:\n%s\n%s", want, out, logs())
		}
	}
	metrics, _ := os.ReadFile(filepath.Join(dir, "metrics"))
	if !regexp.MustCompile(`(?m)^l5d_tunnel_\w+`).Match(metrics) {
		t.Errorf("no l5d_tunnel_ metrics on the server's admin port:\n%.2000s", metrics)
	}
	if strings.Contains(logs(), "s3cret-test-token") {
		t.Error("a tunnel logged the token")
	}
}
