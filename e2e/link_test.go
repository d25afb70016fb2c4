package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// Bounds the e2e asserts; the measured values are logged as e2e_* lines.
const (
	// webhookBound: the reconciler repairs objects written before the
	// binding, or restores them once it is gone, within this.
	reconcileBound = 60 * time.Second
	// recoveryBound: after each fault ends, api, probe and gateway work
	// again through the tunnel within this.
	recoveryBound = 60 * time.Second
)

// testLinks runs assertions 1-7 of issue 5 for every Linkerd version in the
// fixtures, one after the other on the shared topology (the link output of
// each version uses the same names, so each version cleans up after itself).
func testLinks(t *testing.T, e *env) {
	e.needWebhook(t)
	e.needTunnel(t)
	ctx := context.Background()
	if err := e.topo.CreateBinding(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.topo.WaitWebhookLive(ctx, time.Minute); err != nil {
		t.Fatalf("the API server does not call the webhook: %v", err)
	}
	// Installed and no Link yet: `linkerd check` would pass in both clusters.
	checkPasses(ctx, t, e.topo, false, "cloud, no link yet")
	checkPasses(ctx, t, e.topo, true, "home")
	for _, v := range fixtures.Versions() {
		// from 2.18 the deprecated `multicluster link` still ships: its output
		// (link-legacy.yaml) is tested too, the tunnel faults once per version
		for _, file := range []string{"link.yaml", "link-legacy.yaml"} {
			if !fixtures.Has(v, file) {
				continue
			}
			name := v
			if file != "link.yaml" {
				name = v + "/" + strings.TrimSuffix(file, ".yaml")
			}
			t.Run(name, func(t *testing.T) {
				lt := newLinkTest(t, e, v, file)
				t.Cleanup(lt.cleanup)
				lt.run(t, file == "link.yaml")
			})
		}
	}
}

type linkTest struct {
	e        *env
	topo     *harness.Topology
	version  string
	file     string
	output   []byte // the link output as the CLI would print it for home
	original *linkObjects
	dir      string
}

func newLinkTest(t *testing.T, e *env, version, file string) *linkTest {
	t.Helper()
	raw, err := fixtures.Raw(version, file)
	if err != nil {
		t.Fatal(err)
	}
	out, err := harness.LinkOutput(raw, e.topo.HomeCredentials())
	if err != nil {
		t.Fatalf("%s/%s: %v", version, file, err)
	}
	objs, err := fixtures.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := pickLinkObjects(objs)
	if err != nil {
		t.Fatalf("%s/%s: %v", version, file, err)
	}
	dir := filepath.Join(e.workDir, version)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return &linkTest{e: e, topo: e.topo, version: version, file: file, output: out, original: orig, dir: dir}
}

func (lt *linkTest) kubectl(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	return lt.topo.Kubectl(ctx, lt.topo.CloudCP, stdin, args...)
}

func (lt *linkTest) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = lt.kubectl(ctx, lt.output, "delete", "--ignore-not-found", "--wait=true", "-f", "-")
	if raw, err := fixtures.Raw(lt.version, "mirrored.yaml"); err == nil {
		_, _ = lt.kubectl(ctx, raw, "delete", "--ignore-not-found", "--wait=true", "-f", "-")
	}
	// the next version starts with the binding in place
	_ = lt.topo.CreateBinding(ctx)
}

func (lt *linkTest) run(t *testing.T, faults bool) {
	ctx := context.Background()

	// 1. apply with the binding present: the webhook rewrites on admission
	t.Run("1 apply rewrites, re-apply changes nothing", func(t *testing.T) {
		dry, err := lt.kubectl(ctx, lt.output, "apply", "--dry-run=server", "-o", "json", "-f", "-")
		if err != nil {
			t.Fatal(err)
		}
		dryObjs, err := decodeList(dry)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pickLinkObjects(dryObjs)
		if err != nil {
			t.Fatalf("dry-run answer: %v", err)
		}
		for _, p := range lt.checkRewritten(got) {
			t.Errorf("server-side dry run (only the webhook can have changed it): %s", p)
		}
		if out, err := lt.kubectl(ctx, lt.output, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("kubectl apply:\n%s", strings.TrimSpace(string(out)))
		}
		stored, err := lt.stored(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range lt.checkRewritten(stored) {
			t.Errorf("stored: %s", p)
		}
		// the reconciler may still be looking at the new objects: re-apply
		// against a state that held still for a second
		time.Sleep(time.Second)
		settled, err := lt.stored(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := stored.resourceVersions(), settled.resourceVersions(); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Logf("objects were written again after kubectl apply returned (reconciler?): %v -> %v", a, b)
			for i, o := range stored.all() {
				if d := objectDiff(o, settled.all()[i]); d != "" {
					t.Logf("%s %s/%s:\n%s", o.GetKind(), o.GetNamespace(), o.GetName(), d)
				}
			}
			for _, p := range lt.checkRewritten(settled) {
				t.Errorf("stored, a second later: %s", p)
			}
		}
		stored = settled
		before := stored.resourceVersions()
		out, err := lt.kubectl(ctx, lt.output, "apply", "-f", "-")
		if err != nil {
			t.Fatalf("re-apply: %v", err)
		}
		again, err := lt.stored(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after := again.resourceVersions(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("re-applying the same link output changed stored objects: resourceVersions %v -> %v\n%s", before, after, out)
			for i, o := range stored.all() {
				if d := objectDiff(o, again.all()[i]); d != "" {
					t.Logf("%s %s/%s changed:\n%s", o.GetKind(), o.GetNamespace(), o.GetName(), d)
				}
			}
		}
	})
	if t.Failed() {
		return
	}

	// 2-4 from cloud, through the tunnel
	var spec checkSpec
	t.Run("2-4 api, probe and gateway through the tunnel", func(t *testing.T) {
		var err error
		spec, err = lt.checkSpec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lt.assertTraffic(ctx, t, spec)
	})
	if t.Failed() {
		return
	}

	t.Run("5 mirror objects stored unchanged", func(t *testing.T) { lt.testMirrored(ctx, t) })

	if faults {
		t.Run("6 faults", func(t *testing.T) { lt.testFaults(ctx, t, spec) })
	}

	t.Run("7 reconciler: binding removed, link applied before the binding", func(t *testing.T) { lt.testReconciler(ctx, t) })

	// The tunnel does not depend on the Linkerd version: once, with the
	// newest fixture.
	if faults && lt.version == fixtures.Newest() {
		t.Run("8 failover: the Link follows a SIGKILLed tunnel server", func(t *testing.T) { lt.testFailover(ctx, t) })
	}
	if faults && lt.version == fixtures.Newest() {
		t.Run("9 linkerd-tunnel check passes, and fails with its hint when the client stops", func(t *testing.T) { lt.testCheck(ctx, t) })
	}
}

// checkSpec derives the three checks from the STORED objects: the kubeconfig
// of each stored credentials Secret, the probe URL and the gateway address
// of the stored Link.
type checkSpec struct {
	kubeconfigs []string
	probeURL    string
	gatewayAddr string
	identity    string
}

func (lt *linkTest) checkSpec(ctx context.Context) (checkSpec, error) {
	var cs checkSpec
	stored, err := lt.stored(ctx)
	if err != nil {
		return cs, err
	}
	// the probe Service is an ExternalName now: publish the chain in cloud DNS
	if err := lt.topo.WriteCloudDNS(ctx); err != nil {
		return cs, err
	}
	for i, s := range stored.secrets {
		kc, err := secretKubeconfig(s)
		if err != nil {
			return cs, err
		}
		path := filepath.Join(lt.dir, fmt.Sprintf("stored-%d-%s-%s.kubeconfig", i, s.GetNamespace(), s.GetName()))
		if err := os.WriteFile(path, kc, 0o600); err != nil {
			return cs, err
		}
		cs.kubeconfigs = append(cs.kubeconfigs, path)
	}
	l := stored.link
	path, _, _ := unstructured.NestedString(l.Object, "spec", "probeSpec", "path")
	port := fieldString(l.Object, "spec", "probeSpec", "port")
	cs.probeURL = fmt.Sprintf("http://%s.%s.svc.cluster.local:%s%s", stored.probe.GetName(), stored.probe.GetNamespace(), port, path)
	addr, _, _ := unstructured.NestedString(l.Object, "spec", "gatewayAddress")
	// a list of ready tunnel-server pods: the first, as the service mirror
	// puts them all in the mirror Endpoints and a client picks one
	addr, _, _ = strings.Cut(addr, ",")
	cs.gatewayAddr = net.JoinHostPort(addr, fieldString(l.Object, "spec", "gatewayPort"))
	cs.identity, _, _ = unstructured.NestedString(l.Object, "spec", "gatewayIdentity")
	return cs, nil
}

func (lt *linkTest) mtlsRequest(cs checkSpec, bytes int64, streams int) harness.HelperRequest {
	return harness.HelperRequest{Op: "mtls", Addr: cs.gatewayAddr, ServerName: cs.identity,
		CAFile: lt.topo.IdentityCAFile, CertFile: lt.topo.ClientCertFile, KeyFile: lt.topo.ClientKeyFile,
		Bytes: bytes, Streams: streams, Timeout: 20 * time.Second}
}

func (lt *linkTest) assertTraffic(ctx context.Context, t *testing.T, cs checkSpec) {
	t.Helper()
	topo := lt.topo
	// 2. the stored kubeconfigs list home's Services, TLS verified
	k, err := harness.RunHelper(ctx, topo.Cloud, harness.HelperRequest{Op: "kube", Kubeconfigs: cs.kubeconfigs, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if k.Err != "" {
		t.Errorf("2: %s", k.Err)
	} else if !contains(k.Services, "demo/web") {
		t.Errorf("2: home Services listed through the tunnel lack demo/web: %v", k.Services)
	} else {
		t.Logf("2: %s (tls-server-name %q) listed %d home Services", k.Server, k.TLSServerName, len(k.Services))
	}
	// 3. the probe through the ExternalName chain
	p, err := harness.RunHelper(ctx, topo.Cloud, harness.HelperRequest{Op: "probe", URL: cs.probeURL, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if p.Err != "" || p.Status != 200 {
		t.Errorf("3: GET %s: %d %s", cs.probeURL, p.Status, p.Err)
	} else {
		t.Logf("3: GET %s -> %d %q", cs.probeURL, p.Status, strings.TrimSpace(p.Body))
	}
	// 4. mTLS end to end with the home stand-in gateway
	m, err := harness.RunHelper(ctx, topo.Cloud, lt.mtlsRequest(cs, 1<<20, 4))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Err != "":
		t.Errorf("4: %s", m.Err)
	case m.ALPN != harness.LinkerdALPN:
		t.Errorf("4: ALPN %q, want %q", m.ALPN, harness.LinkerdALPN)
	case !contains(m.PeerNames, cs.identity):
		t.Errorf("4: the TLS peer is %v, not the home gateway %q", m.PeerNames, cs.identity)
	default:
		t.Logf("4: mTLS to %s as %s (%s, ALPN %s): %d x 1 MiB echoed, sha256 equal", cs.gatewayAddr, cs.identity, m.TLSVersion, m.ALPN, len(m.Transfers))
	}
}

// waitTraffic polls assertions 2-4 from cloud until all pass, returning how
// long it took (measured in this process from the call).
func (lt *linkTest) waitTraffic(ctx context.Context, cs checkSpec, timeout time.Duration) (time.Duration, harness.HelperResult, error) {
	start := time.Now()
	m := lt.mtlsRequest(cs, 0, 0)
	res, err := harness.RunHelper(ctx, lt.topo.Cloud, harness.HelperRequest{Op: "check", Kubeconfigs: cs.kubeconfigs,
		URL: cs.probeURL, Addr: m.Addr, ServerName: m.ServerName, CAFile: m.CAFile, CertFile: m.CertFile,
		KeyFile: m.KeyFile, Timeout: timeout, Interval: 200 * time.Millisecond})
	if err != nil {
		return 0, res, err
	}
	if res.Err != "" {
		return time.Since(start), res, fmt.Errorf("%s", res.Err)
	}
	return time.Since(start), res, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
