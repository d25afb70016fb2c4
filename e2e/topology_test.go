package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
)

// testTopology checks the stage itself: the namespaces isolate as the issue
// says, both control planes answer kubectl, and (once the tunnel exists) the
// home API is reachable from cloud through the tunnel only.
func testTopology(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo := e.topo

	t.Run("kubectl on both control planes", func(t *testing.T) {
		for _, cp := range []*harness.ControlPlane{topo.HomeCP, topo.CloudCP} {
			out, err := topo.Kubectl(ctx, cp, nil, "get", "namespaces", "-o", "name")
			if err != nil {
				t.Fatalf("%s: %v", cp.Cfg.Name, err)
			}
			if !strings.Contains(string(out), "namespace/kube-system") {
				t.Errorf("%s: kubectl get namespaces: %s", cp.Cfg.Name, out)
			}
		}
	})

	t.Run("cloud cannot reach home", func(t *testing.T) {
		for _, addr := range []string{
			net.JoinHostPort(harness.HomeAPIIP, strconv.Itoa(harness.HomeAPIPort)),
			net.JoinHostPort(harness.HomeGatewayIP, strconv.Itoa(harness.GatewayPort)),
			net.JoinHostPort(harness.HomeGatewayIP, strconv.Itoa(harness.ProbePort)),
			net.JoinHostPort(harness.HomeVethIP, strconv.Itoa(harness.HomeAPIPort)),
		} {
			res, err := harness.RunHelper(ctx, topo.Cloud, harness.HelperRequest{Op: "dial", Addr: addr, Timeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.Err == "" {
				t.Errorf("a direct dial from cloud to home %s succeeded: home is reachable without the tunnel", addr)
			} else {
				t.Logf("cloud -> home %s: %s (as it must)", addr, res.Err)
			}
		}
		// while home itself serves those addresses
		for _, addr := range []string{
			net.JoinHostPort(harness.HomeAPIIP, strconv.Itoa(harness.HomeAPIPort)),
			net.JoinHostPort(harness.HomeGatewayIP, strconv.Itoa(harness.GatewayPort)),
		} {
			res, err := harness.RunHelper(ctx, topo.Home, harness.HelperRequest{Op: "dial", Addr: addr, Timeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.Err != "" {
				t.Errorf("home cannot reach its own %s: %s", addr, res.Err)
			}
		}
	})

	t.Run("home API certificate names no tunnel", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(topo.HomeCP.Dir, "apiserver.crt"))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(raw)
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(cert.DNSNames, "kubernetes.default.svc") {
			t.Errorf("home API certificate lacks kubernetes.default.svc: %v", cert.DNSNames)
		}
		for _, n := range cert.DNSNames {
			if strings.Contains(n, topo.Binding.Service) || strings.Contains(n, "tunnel") {
				t.Errorf("home API certificate names %q, a tunnel name", n)
			}
		}
	})

	t.Run("home reaches the tunnel endpoint", func(t *testing.T) {
		e.needTunnel(t)
		res, err := harness.RunHelper(ctx, topo.Home, harness.HelperRequest{Op: "dial",
			Addr: net.JoinHostPort(harness.TunnelHost, strconv.Itoa(harness.TunnelWSPort)), Timeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if res.Err != "" {
			t.Errorf("home -> cloud tunnel endpoint: %s", res.Err)
		}
	})

	t.Run("stand-in gateway refuses what Linkerd's gateway refuses", func(t *testing.T) {
		e.needTunnel(t)
		base := harness.HelperRequest{Op: "mtls", ServerName: harness.GatewayIdentity,
			Addr:   net.JoinHostPort(topo.Binding.HeadlessFQDN(), strconv.Itoa(int(topo.Binding.GatewayPort))),
			CAFile: topo.IdentityCAFile, CertFile: topo.ClientCertFile, KeyFile: topo.ClientKeyFile,
			Bytes: 1024, Streams: 1, Timeout: 10 * time.Second}
		ok, err := harness.RunHelper(ctx, topo.Cloud, base)
		if err != nil {
			t.Fatal(err)
		}
		if ok.Err != "" {
			t.Fatalf("well-behaved mTLS client through the tunnel: %s", ok.Err)
		}
		noCert, noALPN := base, base
		noCert.NoClientCert = true
		noALPN.ALPN = []string{"h2"}
		for name, req := range map[string]harness.HelperRequest{"no client certificate": noCert, "ALPN h2": noALPN} {
			res, err := harness.RunHelper(ctx, topo.Cloud, req)
			if err != nil {
				t.Fatal(err)
			}
			if res.Err == "" {
				t.Errorf("%s: the stand-in gateway accepted it and echoed", name)
			} else {
				t.Logf("%s: refused (%s)", name, res.Err)
			}
		}
	})

	t.Run("kubectl from cloud reaches home through the tunnel", func(t *testing.T) {
		e.needTunnel(t)
		kc := clientcmdapi.NewConfig()
		kc.Clusters["home"] = &clientcmdapi.Cluster{
			Server:                   "https://" + net.JoinHostPort(topo.Binding.ServiceFQDN(), strconv.Itoa(int(topo.Binding.APIPort))),
			TLSServerName:            "kubernetes.default.svc",
			CertificateAuthorityData: topo.HomeCP.ServingCA.CertPEM,
		}
		kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: topo.HomeToken}
		kc.Contexts["home"] = &clientcmdapi.Context{Cluster: "home", AuthInfo: "sa"}
		kc.CurrentContext = "home"
		path := filepath.Join(e.workDir, "through-tunnel.kubeconfig")
		if err := clientcmd.WriteToFile(*kc, path); err != nil {
			t.Fatal(err)
		}
		out, err := harness.KubectlWith(ctx, topo.Cloud, filepath.Join(topo.Cfg.BinDir, "kubectl"), path, nil, "get", "services", "-A", "-o", "name")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "service/web") {
			t.Errorf("kubectl get services through the tunnel: %s", out)
		}
	})
}

func TestE2E(t *testing.T) {
	start := time.Now()
	e := setup(t)
	t.Run("topology", func(t *testing.T) { testTopology(t, e) })
	t.Run("link", func(t *testing.T) { testLinks(t, e) })
	t.Logf("e2e_total_seconds %.1f", time.Since(start).Seconds())
}
