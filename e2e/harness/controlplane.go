package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testpki"
)

// ControlPlaneConfig describes one cluster's control plane.
type ControlPlaneConfig struct {
	Name        string // "home" or "cloud": names log files and certificates
	Addr        string // IP the API server binds and advertises, inside the namespace
	Port        int    // secure port (6443)
	ServiceCIDR string
	// ExtraDNS are names the serving certificate is issued for besides the
	// in-cluster kubernetes.default.svc names.
	ExtraDNS []string
	// APIServerFlags are extra kube-apiserver flags ("--name=value").
	APIServerFlags []string
	// Controllers, when not empty, starts kube-controller-manager with
	// exactly these controllers.
	Controllers []string
}

// ControlPlane is etcd + kube-apiserver (+ kube-controller-manager) running
// inside a network namespace.
type ControlPlane struct {
	Cfg        ControlPlaneConfig
	NS         *Netns
	Dir        string
	ServingCA  *testpki.CA
	ClientCA   *testpki.CA
	Kubeconfig string // admin kubeconfig (client certificate in group system:masters)
	Rest       *rest.Config
	Client     client.Client
	Procs      []*Proc
}

// Scheme holds core, apps, rbac... and apiextensions types.
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = apiextensionsv1.AddToScheme(s)
	return s
}()

// URL is the API server's address as seen inside its namespace.
func (cp *ControlPlane) URL() string {
	return "https://" + net.JoinHostPort(cp.Cfg.Addr, strconv.Itoa(cp.Cfg.Port))
}

// StartControlPlane writes certificates and starts the processes; it returns
// once /readyz answers. Stop them with Stop.
func StartControlPlane(ctx context.Context, ns *Netns, binDir, dir string, cfg ControlPlaneConfig) (*ControlPlane, error) {
	cp := &ControlPlane{Cfg: cfg, NS: ns, Dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := cp.writeCerts(); err != nil {
		return cp, err
	}
	etcdDir := filepath.Join(dir, "etcd")
	etcd, err := StartProc(ns, dir, cfg.Name+"-etcd", filepath.Join(binDir, "etcd"), []string{
		"--name=" + cfg.Name,
		"--data-dir=" + etcdDir,
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=" + cfg.Name + "=http://127.0.0.1:2380",
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}, nil)
	if err != nil {
		return cp, err
	}
	cp.Procs = append(cp.Procs, etcd)
	p := func(n string) string { return filepath.Join(dir, n) }
	args := []string{
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=" + cfg.Addr,
		"--advertise-address=" + cfg.Addr,
		"--secure-port=" + strconv.Itoa(cfg.Port),
		"--tls-cert-file=" + p("apiserver.crt"),
		"--tls-private-key-file=" + p("apiserver.key"),
		"--client-ca-file=" + p("client-ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p("sa.pub"),
		"--service-account-signing-key-file=" + p("sa.key"),
		"--service-cluster-ip-range=" + cfg.ServiceCIDR,
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--cert-dir=" + p("certs"),
		"--profiling=false",
		"--enable-priority-and-fairness=false",
		"--v=0",
	}
	args = append(args, cfg.APIServerFlags...)
	api, err := StartProc(ns, dir, cfg.Name+"-kube-apiserver", filepath.Join(binDir, "kube-apiserver"), args, nil)
	if err != nil {
		return cp, err
	}
	cp.Procs = append(cp.Procs, api)

	rc, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		return cp, err
	}
	rc.Dial = ns.DialContext
	rc.QPS, rc.Burst = 50, 100
	cp.Rest = rc
	if err := cp.waitReady(ctx, 2*time.Minute); err != nil {
		return cp, err
	}
	c, err := client.New(rc, client.Options{Scheme: Scheme})
	if err != nil {
		return cp, err
	}
	cp.Client = c
	if len(cfg.Controllers) > 0 {
		kcmArgs := []string{
			"--kubeconfig=" + cp.Kubeconfig,
			"--controllers=" + join(cfg.Controllers),
			"--leader-elect=false",
			"--secure-port=0",
			"--use-service-account-credentials=false",
			"--concurrent-endpoint-syncs=2",
			"--v=0",
		}
		kcm, err := StartProc(ns, dir, cfg.Name+"-kube-controller-manager", filepath.Join(binDir, "kube-controller-manager"), kcmArgs, nil)
		if err != nil {
			return cp, err
		}
		cp.Procs = append(cp.Procs, kcm)
	}
	return cp, nil
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

func (cp *ControlPlane) writeCerts() error {
	var err error
	name := cp.Cfg.Name
	if cp.ServingCA, err = testpki.NewCA(name + "-apiserver-ca"); err != nil {
		return err
	}
	if cp.ClientCA, err = testpki.NewCA(name + "-client-ca"); err != nil {
		return err
	}
	_, svcNet, err := net.ParseCIDR(cp.Cfg.ServiceCIDR)
	if err != nil {
		return fmt.Errorf("service CIDR %q: %w", cp.Cfg.ServiceCIDR, err)
	}
	svcIP := append(net.IP(nil), svcNet.IP.To4()...)
	svcIP[3]++
	serving, err := cp.ServingCA.Issue(testpki.CertSpec{
		CommonName: "kube-apiserver",
		DNSNames: append([]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"}, cp.Cfg.ExtraDNS...),
		IPs:    []net.IP{net.ParseIP(cp.Cfg.Addr), svcIP},
		Server: true,
	})
	if err != nil {
		return err
	}
	if _, _, err := serving.Write(cp.Dir, "apiserver"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cp.Dir, "apiserver-ca.crt"), cp.ServingCA.CertPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cp.Dir, "client-ca.crt"), cp.ClientCA.CertPEM, 0o600); err != nil {
		return err
	}
	priv, pub, err := testpki.NewRSAKeyPairPEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cp.Dir, "sa.key"), priv, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cp.Dir, "sa.pub"), pub, 0o600); err != nil {
		return err
	}
	admin, err := cp.ClientCA.Issue(testpki.CertSpec{CommonName: name + "-admin", Orgs: []string{"system:masters"}, Client: true})
	if err != nil {
		return err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: cp.URL(), CertificateAuthorityData: cp.ServingCA.CertPEM}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: admin.CertPEM, ClientKeyData: admin.KeyPEM}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: "admin"}
	kc.CurrentContext = name
	cp.Kubeconfig = filepath.Join(cp.Dir, "admin.kubeconfig")
	return clientcmd.WriteToFile(*kc, cp.Kubeconfig)
}

func (cp *ControlPlane) waitReady(ctx context.Context, timeout time.Duration) error {
	rc := rest.CopyConfig(cp.Rest)
	rc.Timeout = 5 * time.Second
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	last := errors.New("no answer from /readyz yet")
	for time.Now().Before(deadline) {
		for _, p := range cp.Procs {
			if p.Exited() {
				return p.Err()
			}
		}
		resp, err := hc.Get(cp.URL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Errorf("/readyz: %s", resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s kube-apiserver not ready after %s: %w", cp.Cfg.Name, timeout, last)
}

// Alive reports a process of this control plane that exited.
func (cp *ControlPlane) Alive() error {
	for _, p := range cp.Procs {
		if p.Exited() {
			return p.Err()
		}
	}
	return nil
}

// Stop ends the processes, newest first.
func (cp *ControlPlane) Stop() {
	for i := len(cp.Procs) - 1; i >= 0; i-- {
		cp.Procs[i].Stop(10 * time.Second)
	}
}

// ServiceAccountToken returns a day-long token of ServiceAccount ns/name
// (a TokenRequest, as the kubelet asks for a pod's).
func (cp *ControlPlane) ServiceAccountToken(ctx context.Context, ns, name string) (string, error) {
	cs, err := kubernetes.NewForConfig(cp.Rest)
	if err != nil {
		return "", err
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: token of ServiceAccount %s/%s: %w", cp.Cfg.Name, ns, name, err)
	}
	return tr.Status.Token, nil
}

// EnsureNamespace creates a namespace with labels if it does not exist.
func (cp *ControlPlane) EnsureNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{}
	ns.Name = name
	ns.Labels = labels
	err := cp.Client.Create(ctx, ns)
	if err != nil && !isAlreadyExists(err) {
		return fmt.Errorf("create namespace %s in %s: %w", name, cp.Cfg.Name, err)
	}
	return nil
}
