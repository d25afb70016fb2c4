package webhook

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestMainBadFlags: every bad flag exits 2 with a message naming it, and
// nothing starts.
func TestMainBadFlags(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvPodNamespace, "l5d-tunnel")
	for name, tc := range map[string]struct {
		args []string
		flag string
	}{
		"unknown flag":          {[]string{"--cert-dir", dir, "--nope"}, "-nope"},
		"port not a number":     {[]string{"--cert-dir", dir, "--port", "x"}, "-port"},
		"port out of range":     {[]string{"--cert-dir", dir, "--port", "70000"}, "--port"},
		"missing cert dir":      {nil, "--cert-dir"},
		"cert dir not a dir":    {[]string{"--cert-dir", dir + "/nope"}, "--cert-dir"},
		"bad namespace":         {[]string{"--cert-dir", dir, "--trusted-namespaces", "Not_OK"}, "--trusted-namespaces"},
		"bad rewrite namespace": {[]string{"--cert-dir", dir, "--rewrite-namespaces", "linkerd,Bad_NS"}, "--rewrite-namespaces"},
		"bad cluster domain":    {[]string{"--cert-dir", dir, "--cluster-domain", "-x-"}, "--cluster-domain"},
		"bad tls server name":   {[]string{"--cert-dir", dir, "--default-tls-server-name", ""}, "--default-tls-server-name"},
		"bad log format":        {[]string{"--cert-dir", dir, "--log-format", "xml"}, "--log-format"},
		"bad log level":         {[]string{"--cert-dir", dir, "--log-level", "loud"}, "--log-level"},
		"bad health addr":       {[]string{"--cert-dir", dir, "--health-addr", "nohost"}, "--health-addr"},
		"bad metrics addr":      {[]string{"--cert-dir", dir, "--metrics-addr", ":99999"}, "--metrics-addr"},
		"bad bind address":      {[]string{"--cert-dir", dir, "--bind-address", "localhost"}, "--bind-address"},
		"short resync":          {[]string{"--cert-dir", dir, "--resync-period", "10ms"}, "--resync-period"},
		"negative debounce":     {[]string{"--cert-dir", dir, "--gateway-debounce", "-1s"}, "--gateway-debounce"},
		"long debounce":         {[]string{"--cert-dir", dir, "--gateway-debounce", "5m"}, "--gateway-debounce"},
		"bad ready addresses":   {[]string{"--cert-dir", dir, "--gateway-ready-addresses=sometimes"}, "-gateway-ready-addresses"},
		"bad leader election":   {[]string{"--cert-dir", dir, "--leader-elect=maybe"}, "-leader-elect"},
		"stray argument":        {[]string{"--cert-dir", dir, "extra"}, "extra"},
	} {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if code := Main(ctx, tc.args, io.Discard, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.flag) {
				t.Errorf("stderr does not name %s: %s", tc.flag, stderr.String())
			}
		})
	}
}

func TestMainHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"--help"}, &stdout, &stderr); code != 0 || stderr.Len() > 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	for _, f := range []string{"-cert-dir", "-port", "-trusted-namespaces", "-cluster-domain", "-default-tls-server-name",
		"-health-addr", "-metrics-addr", "-kubeconfig", "-leader-elect", "-log-format", "-resync-period", "-bind-address",
		"-gateway-ready-addresses", "-gateway-debounce", "-rewrite-namespaces"} {
		if !strings.Contains(stdout.String(), f) {
			t.Errorf("--help lacks %s", f)
		}
	}
}

func TestDefaultsFromPodNamespace(t *testing.T) {
	t.Setenv(EnvPodNamespace, "tunnel-ns")
	o, err := Parse([]string{"--cert-dir", t.TempDir()}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.TrustedNamespaces) != 1 || o.TrustedNamespaces[0] != "tunnel-ns" || o.Port != 9443 || !o.LeaderElect ||
		o.Mutate.ClusterDomain != "cluster.local" || o.Mutate.DefaultTLSServerName != "kubernetes.default.svc" ||
		!o.GatewayAddresses || o.GatewayDebounce != 300*time.Millisecond {
		t.Errorf("defaults: %+v", o)
	}
	o, err = Parse([]string{"--cert-dir", t.TempDir(), "--trusted-namespaces", "a, b,,c"}, &bytes.Buffer{})
	if err != nil || strings.Join(o.TrustedNamespaces, "|") != "a|b|c" {
		t.Errorf("--trusted-namespaces a, b,,c: %v %v", o.TrustedNamespaces, err)
	}
	o, err = Parse([]string{"--cert-dir", t.TempDir(), "--rewrite-namespaces", "linkerd-multicluster,linkerd"}, &bytes.Buffer{})
	if err != nil || strings.Join(o.RewriteNamespaces, "|") != "linkerd-multicluster|linkerd" {
		t.Errorf("--rewrite-namespaces: %v %v", o.RewriteNamespaces, err)
	}
}
