package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testpki"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// Addresses of the topology. Every run has its own namespaces, so every run
// can use the same addresses.
const (
	// veth between the namespaces: home reaches cloud's tunnel endpoint here.
	CloudVethIP = "10.201.0.1"
	HomeVethIP  = "10.201.0.2"
	vethPrefix  = "/24"

	// cloud "pod" and "node" addresses (a dummy interface: home has no route).
	CloudAPIIP  = "10.244.0.1"
	TunnelPodIP = "10.244.0.10"
	// TunnelPod2IP is the second tunnel-server "pod" (StartSecondTunnel);
	// its websocket endpoint listens on TunnelWSPort+1.
	TunnelPod2IP  = "10.244.0.11"
	WebhookPodIP  = "10.244.0.20"
	CloudSvcCIDR  = "10.97.0.0/16"
	CloudAPIPort  = 6443
	TunnelWSPort  = 8443
	TunnelAdmin   = 9090
	WebhookPort   = 9443
	WebhookHealth = 8081
	WebhookMetric = 8080

	// home addresses (a dummy interface: cloud has no route to them).
	HomeAPIIP     = "192.168.1.10"
	HomeGatewayIP = "192.168.1.20"
	HomeSvcCIDR   = "10.96.0.0/16"
	HomeAPIPort   = 6443
	GatewayPort   = 4143
	ProbePort     = 4191
	// HomeClientPodPrefix + (10+n) is the address of the n-th tunnel
	// client "pod" (its admin port is the rendered one, TunnelAdmin).
	HomeClientPodPrefix = "192.168.2."

	// TunnelHost is the cloud ingress name the home client dials.
	TunnelHost = "l5d-tunnel.cloud.internal"
	// GatewayHost is the home gateway Service's in-cluster name.
	GatewayHost = "linkerd-gateway.linkerd-multicluster.svc.cluster.local"

	// LinkName is the cluster name the fixtures link (--cluster-name home).
	LinkName = "home"
	// TunnelNamespace holds the webhook and the tunnel binding in cloud.
	TunnelNamespace = "l5d-tunnel"
	// GatewayIdentity is the home gateway's identity in every fixture.
	GatewayIdentity = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
	// ClientIdentity is the identity the cloud-side mTLS client presents.
	ClientIdentity = "web.demo.serviceaccount.identity.linkerd.cluster.local"
	// RemoteAccessSA is the home ServiceAccount whose token the link carries.
	RemoteAccessSA = "linkerd-service-mirror-remote-access-default"
)

// Config chooses what a topology runs.
type Config struct {
	WorkDir    string // logs, certificates, data (kept for inspection)
	BinDir     string // kube-apiserver, etcd, kube-controller-manager, kubectl
	TunnelBin  string // bin/tunnel; empty: no tunnel
	WebhookBin string // bin/webhook; empty: no webhook
	// CLIBin is bin/linkerd-tunnel: the e2e installs what it renders.
	CLIBin string
	// TunnelTLS serves the websocket endpoint over TLS (wss://).
	TunnelTLS bool
	// ClientArgs and ServerArgs are extra tunnel flags.
	ClientArgs, ServerArgs []string
	Logf                   func(format string, args ...any)
}

// Validate reports a configuration Up cannot work with.
func (c Config) Validate() error {
	var problems []string
	if c.WorkDir == "" {
		problems = append(problems, "WorkDir is empty")
	}
	if c.BinDir == "" {
		problems = append(problems, "BinDir (control-plane binaries) is empty")
	}
	if c.CLIBin == "" {
		problems = append(problems, "CLIBin (linkerd-tunnel, which renders the install) is empty")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrBadConfig, strings.Join(problems, "; "))
	}
	return nil
}

// Topology is the running two-cluster setup.
type Topology struct {
	Cfg         Config
	Cloud, Home *Netns
	CloudVeth   string
	HomeVeth    string
	CloudCP     *ControlPlane
	HomeCP      *ControlPlane

	IdentityCA *testpki.CA
	// files for the cloud-side mTLS client
	IdentityCAFile, ClientCertFile, ClientKeyFile string

	Gateway       *Proc
	TunnelServer  *Proc
	TunnelClients []*Proc
	Webhook       *Proc
	// SecondServer is the tunnel server at TunnelPod2IP, nil until
	// StartSecondTunnel; SecondClient is the client dialing it.
	SecondServer, SecondClient *Proc

	HomeToken string
	Binding   Binding

	// the rendered Deployments the pods run
	webhookDeployment, serverDeployment, clientDeployment *appsv1.Deployment

	ingressCAFile, ingressCert string
	ingressKey                 string
	mu                         sync.Mutex
	clientSeq                  int
	clientAdmin                map[*Proc]int // client -> its seq (clientPodIP)
	pods                       podStandIn
}

// Binding is the tunnel binding the e2e creates: what mutate.FindBinding
// finds in the binding Services, and the Services.
type Binding struct {
	mutate.Binding
	Objects []*corev1.Service
}

// ServiceFQDN is the ClusterIP binding Service's name (default cluster domain).
func (b Binding) ServiceFQDN() string { return b.Binding.ServiceFQDN("") }

// HeadlessFQDN is the headless binding Service's name (default cluster domain).
func (b Binding) HeadlessFQDN() string { return b.Binding.HeadlessFQDN("") }

func (t *Topology) logf(format string, args ...any) {
	if t.Cfg.Logf != nil {
		t.Cfg.Logf(format, args...)
	}
}

// Up builds the whole topology. On error the caller must still call Close.
func Up(ctx context.Context, cfg Config) (*Topology, error) {
	t := &Topology{Cfg: cfg}
	if err := cfg.Validate(); err != nil {
		return t, err
	}
	if err := CheckPrivileges(); err != nil {
		return t, err
	}
	if swept := Sweep(); len(swept) > 0 {
		t.logf("removed namespaces left by earlier runs: %s", strings.Join(swept, ", "))
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return t, err
	}
	var err error
	if t.Cloud, err = NewNetns("cloud"); err != nil {
		return t, err
	}
	if t.Home, err = NewNetns("home"); err != nil {
		return t, err
	}
	if t.CloudVeth, t.HomeVeth, err = Veth(t.Cloud, t.Home, CloudVethIP+vethPrefix, HomeVethIP+vethPrefix); err != nil {
		return t, err
	}
	if err := t.Cloud.AddAddrs("pods", CloudAPIIP+"/32", TunnelPodIP+"/32", TunnelPod2IP+"/32", WebhookPodIP+"/32"); err != nil {
		return t, err
	}
	if err := t.Home.AddAddrs("lan", HomeAPIIP+"/32", HomeGatewayIP+"/32"); err != nil {
		return t, err
	}
	if err := t.Home.WriteHosts([]string{
		HomeAPIIP + " kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local",
		HomeGatewayIP + " " + GatewayHost,
		CloudVethIP + " " + TunnelHost,
	}); err != nil {
		return t, err
	}
	if err := t.Cloud.WriteHosts(cloudHosts(Binding{}, nil)); err != nil {
		return t, err
	}
	t.logf("network: namespaces %s and %s, veth %s<->%s", t.Cloud.Name, t.Home.Name, CloudVethIP, HomeVethIP)

	// both control planes at once
	var wg sync.WaitGroup
	var homeErr, cloudErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		t.HomeCP, homeErr = StartControlPlane(ctx, t.Home, cfg.BinDir, filepath.Join(cfg.WorkDir, "home"), ControlPlaneConfig{
			Name: "home", Addr: HomeAPIIP, Port: HomeAPIPort, ServiceCIDR: HomeSvcCIDR,
		})
	}()
	go func() {
		defer wg.Done()
		t.CloudCP, cloudErr = StartControlPlane(ctx, t.Cloud, cfg.BinDir, filepath.Join(cfg.WorkDir, "cloud"), ControlPlaneConfig{
			Name: "cloud", Addr: CloudAPIIP, Port: CloudAPIPort, ServiceCIDR: CloudSvcCIDR,
			APIServerFlags: []string{"--enable-aggregator-routing=true"},
			Controllers:    []string{"endpointslice-mirroring-controller", "endpointslice-controller"},
		})
	}()
	wg.Wait()
	if err := errors.Join(homeErr, cloudErr); err != nil {
		return t, err
	}
	t.logf("control planes up: home %s, cloud %s", t.HomeCP.URL(), t.CloudCP.URL())

	if err := t.setupHome(ctx); err != nil {
		return t, err
	}
	if err := t.setupCloud(ctx); err != nil {
		return t, err
	}
	if err := t.startGateway(ctx); err != nil {
		return t, err
	}
	// Installed as docs/install.md says, from what linkerd-tunnel renders.
	if err := t.ingressCerts(); err != nil {
		return t, err
	}
	for _, step := range []func(context.Context) error{t.installWebhook, t.installServer, t.installClient, t.startPodStandIn} {
		if err := step(ctx); err != nil {
			return t, err
		}
	}
	if cfg.WebhookBin != "" {
		if err := t.startWebhook(ctx); err != nil {
			return t, err
		}
	}
	if cfg.TunnelBin != "" {
		if err := t.startTunnel(ctx); err != nil {
			return t, err
		}
		if err := t.waitPodsWritten(ctx); err != nil {
			return t, err
		}
	}
	return t, nil
}

// Close stops every process and removes the namespaces. Safe to call on a
// partly built topology and more than once.
func (t *Topology) Close() {
	t.pods.stop()
	t.mu.Lock()
	procs := append([]*Proc{}, t.TunnelClients...)
	procs = append(procs, t.SecondClient, t.SecondServer)
	t.mu.Unlock()
	for _, p := range append(procs, t.TunnelServer, t.Webhook, t.Gateway) {
		if p != nil {
			p.Stop(5 * time.Second)
		}
	}
	for _, cp := range []*ControlPlane{t.CloudCP, t.HomeCP} {
		if cp != nil {
			cp.Stop()
		}
	}
	for _, ns := range []*Netns{t.Cloud, t.Home} {
		if ns != nil {
			if err := ns.Delete(); err != nil {
				t.logf("delete %s: %v", ns.Name, err)
			}
		}
	}
}

// Procs lists every running process of the topology.
func (t *Topology) Procs() []*Proc {
	var out []*Proc
	for _, cp := range []*ControlPlane{t.HomeCP, t.CloudCP} {
		if cp != nil {
			out = append(out, cp.Procs...)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range append([]*Proc{t.Gateway, t.Webhook, t.TunnelServer, t.SecondServer, t.SecondClient}, t.TunnelClients...) {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

func (t *Topology) setupHome(ctx context.Context) error {
	c := t.HomeCP.Client
	for _, ns := range []string{"linkerd-multicluster", "demo"} {
		if err := t.HomeCP.EnsureNamespace(ctx, ns, nil); err != nil {
			return err
		}
	}
	sa := &corev1.ServiceAccount{}
	sa.Name, sa.Namespace = RemoteAccessSA, "linkerd-multicluster"
	// what the service mirror needs in the home cluster to mirror Services
	role := &rbacv1.ClusterRole{Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "endpoints", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
	}}
	role.Name = "linkerd-service-mirror-remote-access-default"
	rb := &rbacv1.ClusterRoleBinding{
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}},
	}
	rb.Name = role.Name
	web := &corev1.Service{Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 8080}, {Name: "grpc", Port: 9090}},
	}}
	web.Name, web.Namespace = "web", "demo"
	web.Labels = map[string]string{"mirror.linkerd.io/exported": "true"}
	// Linkerd's gateway Service, its one endpoint the stand-in gateway (no
	// controller manager in home: the slice is written here).
	gw := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "mc-gateway", Port: GatewayPort}, {Name: "mc-probe", Port: ProbePort}}}}
	gw.Name, gw.Namespace = "linkerd-gateway", "linkerd-multicluster"
	gwSlice := &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4,
		Ports:     []discoveryv1.EndpointPort{{Name: ptr.To("mc-gateway"), Port: ptr.To[int32](GatewayPort)}, {Name: ptr.To("mc-probe"), Port: ptr.To[int32](ProbePort)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{HomeGatewayIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}}
	gwSlice.Name, gwSlice.Namespace = "linkerd-gateway-e2e", gw.Namespace
	gwSlice.Labels = map[string]string{discoveryv1.LabelServiceName: gw.Name, discoveryv1.LabelManagedBy: PodSliceManager}
	for _, o := range []client.Object{sa, role, rb, web, gw, gwSlice} {
		if err := c.Create(ctx, o); err != nil && !isAlreadyExists(err) {
			return fmt.Errorf("home: create %T %s: %w", o, o.GetName(), err)
		}
	}
	var err error
	t.HomeToken, err = t.HomeCP.ServiceAccountToken(ctx, sa.Namespace, sa.Name)
	return err
}

// HomeCredentials are the home values the link output must carry.
func (t *Topology) HomeCredentials() HomeCredentials {
	return HomeCredentials{Server: t.HomeCP.URL(), CAData: t.HomeCP.ServingCA.CertPEM, Token: t.HomeToken}
}

func (t *Topology) setupCloud(ctx context.Context) error {
	c := t.CloudCP.Client
	// Linkerd's namespaces, unlabelled: the install opts them in by name.
	for _, ns := range []string{"linkerd", "linkerd-multicluster"} {
		if err := t.CloudCP.EnsureNamespace(ctx, ns, nil); err != nil {
			return err
		}
	}
	// The namespace of the mirrored Services, opted in by the label, so the
	// webhook sees them and must leave them alone.
	if err := t.CloudCP.EnsureNamespace(ctx, "demo", map[string]string{mutate.LabelRewrite: mutate.LabelRewriteEnabled}); err != nil {
		return err
	}
	// Linkerd's CRDs, and cert-manager's (the install has Issuers and
	// Certificates; issueCertificates stands in for the controller).
	crds, err := testenv.CRDs(testenv.Options{})
	if err != nil {
		return err
	}
	cm, err := testenv.CertManagerCRDs()
	if err != nil {
		return err
	}
	crds = append(crds, cm...)
	for _, crd := range crds {
		if err := c.Create(ctx, crd); err != nil && !isAlreadyExists(err) {
			return fmt.Errorf("cloud: create CRD %s: %w", crd.Name, err)
		}
	}
	return Poll(ctx, time.Minute, func() error {
		for _, crd := range crds {
			got := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(ctx, types.NamespacedName{Name: crd.Name}, got); err != nil {
				return err
			}
			ok := false
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					ok = true
				}
			}
			if !ok {
				return fmt.Errorf("CRD %s not established", crd.Name)
			}
		}
		return nil
	})
}

func (t *Topology) startGateway(ctx context.Context) error {
	dir := filepath.Join(t.Cfg.WorkDir, "gateway")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var err error
	if t.IdentityCA, err = testpki.NewCA("identity.linkerd.cluster.local"); err != nil {
		return err
	}
	t.IdentityCAFile = filepath.Join(dir, "trust-anchor.crt")
	if err := os.WriteFile(t.IdentityCAFile, t.IdentityCA.CertPEM, 0o600); err != nil {
		return err
	}
	srv, err := t.IdentityCA.Issue(testpki.CertSpec{CommonName: GatewayIdentity, DNSNames: []string{GatewayIdentity}, Server: true, Client: true})
	if err != nil {
		return err
	}
	srvCert, srvKey, err := srv.Write(dir, "gateway")
	if err != nil {
		return err
	}
	cl, err := t.IdentityCA.Issue(testpki.CertSpec{CommonName: ClientIdentity, DNSNames: []string{ClientIdentity}, Server: true, Client: true})
	if err != nil {
		return err
	}
	if t.ClientCertFile, t.ClientKeyFile, err = cl.Write(dir, "client"); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	req := HelperRequest{Op: "gateway", Addr: net.JoinHostPort(HomeGatewayIP, strconv.Itoa(GatewayPort)),
		ProbeAddr: net.JoinHostPort(HomeGatewayIP, strconv.Itoa(ProbePort)),
		CAFile:    t.IdentityCAFile, CertFile: srvCert, KeyFile: srvKey}
	t.Gateway, err = StartProc(t.Home, t.Cfg.WorkDir, "home-gateway", self, nil, []string{helperEnv + "=" + mustJSON(req)})
	if err != nil {
		return err
	}
	return waitHTTP(ctx, t.Home, t.Gateway, "http://"+req.ProbeAddr+"/ready", 30*time.Second)
}

// waitHTTP polls url from inside ns until it answers 200; a process p that
// exits meanwhile ends the wait with its error and the tail of its log.
func waitHTTP(ctx context.Context, ns *Netns, p *Proc, url string, timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	err := Poll(ctx, timeout, func() error {
		if p != nil && p.Exited() {
			return permanent(p.Err())
		}
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	})
	if err != nil && p != nil {
		return fmt.Errorf("%s: %w\n%s", p.Name, err, p.Tail(20))
	}
	return err
}

// HTTPGet fetches url from inside ns (a literal IP address).
func (t *Topology) HTTPGet(ns *Netns, url string) (int, []byte, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, []byte(b.String()), nil
}

// WriteCloudDNS rewrites cloud's hosts file the way cluster DNS would answer
// (see cloudHosts).
func (t *Topology) WriteCloudDNS(ctx context.Context) error {
	var services []corev1.Service
	if t.CloudCP != nil && t.CloudCP.Client != nil {
		var list corev1.ServiceList
		if err := t.CloudCP.Client.List(ctx, &list); err != nil {
			return fmt.Errorf("cloud DNS: list services: %w", err)
		}
		services = list.Items
	}
	return t.Cloud.WriteHosts(cloudHosts(t.Binding, services))
}

// serviceMirrorNamespace is where the service mirror runs: its pod's DNS
// search path resolves the bare names of that namespace's Services.
const serviceMirrorNamespace = "linkerd-multicluster"

// cloudHosts returns cloud's hosts lines as cluster DNS would answer: the
// binding Services resolve to the tunnel-server pod (no kube-proxy here: the
// ClusterIP name maps straight to the pod), and every ExternalName Service
// whose target resolves gets the target's address (the CNAME chain). A
// Service in the service mirror's namespace resolves by its bare name too,
// as through the pod's search path: the real controller dials the probe
// Service that way (`probe-<link>` in the newest, `probe-gateway-<cluster>`
// in 2.12/2.14). Any other Service name does not resolve from cloud.
func cloudHosts(b Binding, services []corev1.Service) []string {
	names := map[string]string{}
	add := func(ip string, fqdn string) {
		names[fqdn] = ip
	}
	if b.Service != "" { // the binding is known once the server is installed
		add(TunnelPodIP, b.ServiceFQDN())
		add(TunnelPodIP, b.HeadlessFQDN())
	}
	for _, s := range services {
		if s.Spec.Type != corev1.ServiceTypeExternalName {
			continue
		}
		if ip, ok := names[strings.TrimSuffix(s.Spec.ExternalName, ".")]; ok {
			add(ip, s.Name+"."+s.Namespace+".svc.cluster.local")
			if s.Namespace == serviceMirrorNamespace {
				add(ip, s.Name)
			}
		}
	}
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	lines := []string{CloudAPIIP + " kubernetes.default.svc kubernetes.default.svc.cluster.local"}
	for _, k := range keys {
		lines = append(lines, names[k]+" "+k)
	}
	return lines
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Kubectl runs kubectl inside the namespace of cp with its admin kubeconfig.
func (t *Topology) Kubectl(ctx context.Context, cp *ControlPlane, stdin []byte, args ...string) ([]byte, error) {
	return KubectlWith(ctx, cp.NS, filepath.Join(t.Cfg.BinDir, "kubectl"), cp.Kubeconfig, stdin, args...)
}
