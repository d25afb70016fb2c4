package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

type demo struct {
	opts options
	out  io.Writer
	step int

	// Set by start.
	binDir string // control-plane binaries (kubectl)
	work   string
	topo   *harness.Topology
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) section(title string) {
	d.step++
	d.say("\n== %d. %s", d.step, title)
}

func (d *demo) indent(text string) {
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		d.say("   %s", l)
	}
}

func (d *demo) close() {
	if d.topo != nil {
		d.topo.Close()
		var names []string
		for _, ns := range []*harness.Netns{d.topo.Cloud, d.topo.Home} {
			if ns != nil {
				names = append(names, ns.Name)
			}
		}
		d.say("\nCleaned up: processes stopped, namespaces removed (%s).", strings.Join(names, ", "))
	}
	if d.work != "" && !d.opts.keep {
		_ = os.RemoveAll(d.work)
	} else if d.work != "" {
		d.say("Work directory kept: %s", d.work)
	}
}

// binary finds bin/<name> (make build), building it when missing.
func binary(root, name string) (string, error) {
	path := filepath.Join(root, "bin", name)
	if fi, err := os.Stat(path); err == nil && fi.Mode()&0o111 != 0 {
		return path, nil
	}
	if err := repo.GoBuild("./cmd/"+name, path); err != nil {
		return "", err
	}
	return path, nil
}

// stored is what the demo reads back from the rewritten objects in cloud
// and uses in the later steps.
type stored struct {
	kubeconfigs []string // the stored credentials' kubeconfigs, written to files
	probeURL    string   // the probe as the service mirror sends it
	gateway     string   // the Link's gatewayAddress:gatewayPort
	identity    string   // the Link's gatewayIdentity
}

// run is the demo: each step prints one numbered section and fails the demo
// when what it shows does not hold.
func (d *demo) run(ctx context.Context) error {
	version := d.opts.version
	if version == "" {
		version = fixtures.Newest()
	}
	if !fixtures.Has(version, "link.yaml") {
		return fmt.Errorf("--linkerd-version %q: no fixture (have %s)", version, strings.Join(fixtures.Versions(), ", "))
	}
	d.say("l5d-tunnel demo: link a home cluster with no public IP to a cloud cluster (Linkerd %s).", version)
	d.say("Everything runs on this machine; Ctrl-C stops it and removes what it made.")
	if err := d.start(ctx); err != nil {
		return err
	}
	if err := d.showIsolation(ctx); err != nil {
		return err
	}
	if err := d.installBinding(ctx); err != nil {
		return err
	}
	output, err := d.applyLink(ctx, version)
	if err != nil {
		return err
	}
	st, err := d.showRewrites(ctx, output)
	if err != nil {
		return err
	}
	if err := d.useThroughTunnel(ctx, st); err != nil {
		return err
	}
	if err := d.check(ctx); err != nil {
		return err
	}
	if d.opts.once {
		d.say("\n--once: done.")
		return nil
	}
	return d.serve(ctx, st)
}

// start builds the binaries and brings the topology up.
func (d *demo) start(ctx context.Context) error {
	d.section("Build and start")
	root := repo.Root()
	var err error
	d.binDir, err = testenv.BinDir()
	if err != nil {
		return fmt.Errorf("control-plane binaries: %w", err)
	}
	tunnelBin, err := binary(root, "tunnel")
	if err != nil {
		return err
	}
	webhookBin, err := binary(root, "webhook")
	if err != nil {
		return err
	}
	cliBin, err := binary(root, "linkerd-tunnel")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, ".cache"), 0o755); err != nil {
		return err
	}
	d.work, err = os.MkdirTemp(filepath.Join(root, ".cache"), "demo-")
	if err != nil {
		return err
	}
	start := time.Now()
	d.topo, err = harness.Up(ctx, harness.Config{
		WorkDir: d.work, BinDir: d.binDir, TunnelBin: tunnelBin, WebhookBin: webhookBin, CLIBin: cliBin,
		TunnelTLS: !d.opts.ws,
		Logf:      func(f string, a ...any) { d.say("   "+f, a...) },
	})
	if err != nil {
		return err
	}
	topo := d.topo
	d.say("   ready in %.1fs", time.Since(start).Seconds())
	d.say("   home:  kube-apiserver %s, stand-in Linkerd gateway %s:%d (mTLS, ALPN %s) and :%d (/ready)",
		topo.HomeCP.URL(), harness.HomeGatewayIP, harness.GatewayPort, harness.LinkerdALPN, harness.ProbePort)
	d.say("   cloud: kube-apiserver %s, webhook, tunnel server (websocket %s)", topo.CloudCP.URL(), topo.TunnelURL())
	d.say("   tunnel client in home dials out to the cloud; nothing dials into home")
	return nil
}

// showIsolation shows that cloud cannot dial home.
func (d *demo) showIsolation(ctx context.Context) error {
	d.section("Home has no address cloud can reach")
	homeAPI := net.JoinHostPort(harness.HomeAPIIP, strconv.Itoa(harness.HomeAPIPort))
	res, err := harness.RunHelper(ctx, d.topo.Cloud, harness.HelperRequest{Op: "dial", Addr: homeAPI, Timeout: 3 * time.Second})
	if err != nil {
		return err
	}
	if res.Err == "" {
		return fmt.Errorf("cloud reached home's API server %s directly: the topology is wrong", homeAPI)
	}
	d.say("   from cloud, dial %s (home API server): %s", homeAPI, res.Err)
	return nil
}

// installBinding shows what linkerd tunnel installed and waits for the
// webhook.
func (d *demo) installBinding(ctx context.Context) error {
	d.section("Installed with linkerd tunnel (step 1 ran these, each piped to kubectl apply)")
	topo := d.topo
	for _, l := range []string{
		"linkerd tunnel --context cloud install | kubectl --context cloud apply -f -",
		"linkerd tunnel --context cloud server " + harness.LinkName + " --ingress-host " + harness.TunnelHost + " | kubectl --context cloud apply -f -",
		"linkerd tunnel --context cloud client " + harness.LinkName + " --server-url " + topo.TunnelURL() + " | kubectl --context home apply -f -",
	} {
		d.say("   $ %s", l)
	}
	d.say("   (the client command reads the link's token from cloud: no secret is copied by hand)")
	d.say("   the tunnel binding `linkerd tunnel server %s` rendered:", harness.LinkName)
	b := topo.Binding
	d.say("   Service %s/%s (ClusterIP: api %d, probe %d), Service %s/%s (headless: gateway %d), labelled %s=%s",
		b.Namespace, b.Service, b.APIPort, b.ProbePort, b.Namespace, b.Headless, b.GatewayPort, mutate.LabelLink, harness.LinkName)
	return topo.WaitWebhookLive(ctx, time.Minute)
}

// applyLink applies the fixture's link output, with home's real
// credentials, to cloud and returns what was applied.
func (d *demo) applyLink(ctx context.Context, version string) ([]byte, error) {
	d.section("Apply the unmodified `linkerd multicluster link` output to cloud")
	raw, err := fixtures.Raw(version, "link.yaml")
	if err != nil {
		return nil, err
	}
	output, err := harness.LinkOutput(raw, d.topo.HomeCredentials())
	if err != nil {
		return nil, err
	}
	d.say("   (fixture %s/link.yaml with the home API server's real URL, CA and token, as the CLI would print them)", version)
	d.say("   $ linkerd --context=home multicluster link --cluster-name home | kubectl --context=cloud apply -f -")
	out, err := d.topo.Kubectl(ctx, d.topo.CloudCP, output, "apply", "-f", "-")
	if err != nil {
		return nil, err
	}
	d.indent(string(out))
	return output, nil
}

// showRewrites prints, for the probe Service, the credentials Secrets and
// the Link, how the stored object differs from the applied one, and returns
// what the later steps need from them.
func (d *demo) showRewrites(ctx context.Context, output []byte) (stored, error) {
	d.section("What the webhook changed (printed -> stored)")
	var st stored
	objs, err := fixtures.Decode(output)
	if err != nil {
		return st, err
	}
	var link, probe *unstructured.Unstructured
	for _, o := range objs {
		isProbe := o.GetKind() == "Service" && o.GetLabels()["mirror.linkerd.io/mirrored-gateway"] == "true"
		isSecret := o.GetKind() == "Secret" && fmt.Sprint(o.Object["type"]) == "mirror.linkerd.io/remote-kubeconfig"
		if !isProbe && !isSecret && o.GetKind() != "Link" {
			continue
		}
		got, err := d.showRewrite(ctx, o, isSecret, &st)
		if err != nil {
			return st, err
		}
		switch {
		case isProbe:
			probe = got
		case o.GetKind() == "Link":
			link = got
		}
	}
	if link == nil || probe == nil || len(st.kubeconfigs) == 0 {
		return st, fmt.Errorf("the link output lacks a Link, probe Service or credentials Secret")
	}
	if err := d.topo.WriteCloudDNS(ctx); err != nil {
		return st, err
	}
	probePath, _, _ := unstructured.NestedString(link.Object, "spec", "probeSpec", "path")
	probePort := fieldString(link.Object, "spec", "probeSpec", "port")
	st.probeURL = fmt.Sprintf("http://%s.%s.svc.cluster.local:%s%s", probe.GetName(), probe.GetNamespace(), probePort, probePath)
	gwAddr, _, _ := unstructured.NestedString(link.Object, "spec", "gatewayAddress")
	st.gateway = gwAddr + ":" + fieldString(link.Object, "spec", "gatewayPort")
	st.identity, _, _ = unstructured.NestedString(link.Object, "spec", "gatewayIdentity")
	return st, nil
}

// showRewrite prints how the stored copy of o differs from o and returns the
// stored copy; a credentials Secret's stored kubeconfig is written to a file
// and added to st.kubeconfigs.
func (d *demo) showRewrite(ctx context.Context, o *unstructured.Unstructured, isSecret bool, st *stored) (*unstructured.Unstructured, error) {
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(o.GroupVersionKind())
	if err := d.topo.CloudCP.Client.Get(ctx, types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}, got); err != nil {
		return nil, err
	}
	d.say("   %s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
	lines := harness.Diff(o, got)
	if isSecret {
		kl, err := harness.DiffKubeconfig(o, got)
		if err != nil {
			return nil, err
		}
		lines = append(lines, kl...)
		enc, _, _ := unstructured.NestedString(got.Object, "data", "kubeconfig")
		path := filepath.Join(d.work, "stored-"+got.GetNamespace()+".kubeconfig")
		if err := writeB64(path, enc); err != nil {
			return nil, err
		}
		st.kubeconfigs = append(st.kubeconfigs, path)
	}
	for _, l := range lines {
		if isDefaulted(l) {
			continue // API server defaults, not the webhook
		}
		d.say("     %s", l)
	}
	return got, nil
}

// useThroughTunnel uses the stored credentials, the probe and the gateway
// from cloud: every one of them reaches home only through the tunnel.
// check runs `linkerd tunnel check` (as linkerd-tunnel check) in both
// clusters and prints its report; a failed check fails the demo.
func (d *demo) check(ctx context.Context) error {
	topo := d.topo
	for _, c := range []struct {
		name string
		ns   *harness.Netns
		cp   *harness.ControlPlane
	}{{"cloud", topo.Cloud, topo.CloudCP}, {"home", topo.Home, topo.HomeCP}} {
		d.section("linkerd tunnel --context " + c.name + " check")
		out, err := topo.LinkerdTunnel(ctx, c.ns, c.cp, "check", "--wait=30s")
		for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			d.say("   %s", l)
		}
		if err != nil {
			return fmt.Errorf("linkerd tunnel check in %s: %w", c.name, err)
		}
	}
	return nil
}

func (d *demo) useThroughTunnel(ctx context.Context, st stored) error {
	topo := d.topo
	d.section("kubectl get services in HOME, from cloud, with the stored credentials (through the tunnel)")
	d.say("   $ kubectl --kubeconfig <cluster-credentials-home kubeconfig> get services -A   (in cloud)")
	out, err := harness.KubectlWith(ctx, topo.Cloud, filepath.Join(d.binDir, "kubectl"), st.kubeconfigs[0], nil, "get", "services", "-A")
	if err != nil {
		return err
	}
	d.indent(string(out))

	d.section("The gateway probe, as Linkerd's service mirror sends it")
	if err := d.probe(ctx, st.probeURL); err != nil {
		return err
	}

	d.section("mTLS to the home gateway through the tunnel (the tunnel never sees plaintext)")
	m, err := harness.RunHelper(ctx, topo.Cloud, harness.HelperRequest{Op: "mtls", Addr: st.gateway, ServerName: st.identity,
		CAFile: topo.IdentityCAFile, CertFile: topo.ClientCertFile, KeyFile: topo.ClientKeyFile,
		Bytes: 8 << 20, Streams: 1, Timeout: 20 * time.Second})
	if err != nil {
		return err
	}
	if m.Err != "" {
		return fmt.Errorf("mTLS echo: %s", m.Err)
	}
	tr := m.Transfers[0]
	d.say("   dial %s as %s", st.gateway, st.identity)
	d.say("   %s, ALPN %s, server certificate for %v (issued by the home trust anchor)", m.TLSVersion, m.ALPN, m.PeerNames)
	d.say("   echoed %d bytes, sha256 sent %s… = received %s…", tr.Received, tr.SentSHA[:16], tr.GotSHA[:16])

	d.section("Live tunnel metrics (tunnel server /metrics, l5d_tunnel_*)")
	return d.metrics()
}

// serve keeps the link up until ctx ends, probing and printing the metrics
// every 15s, and fails when a process of the topology exits.
func (d *demo) serve(ctx context.Context, st stored) error {
	topo := d.topo
	kubectl := filepath.Join(d.binDir, "kubectl")
	d.section("Up. Try it yourself (as root), Ctrl-C to stop")
	d.say("   ip netns exec %s %s --kubeconfig %s get services -A", topo.Cloud.Name, kubectl, st.kubeconfigs[0])
	d.say("   ip netns exec %s %s --kubeconfig %s get links -A -o yaml", topo.Cloud.Name, kubectl, topo.CloudCP.Kubeconfig)
	d.say("   ip netns exec %s curl -s http://%s/metrics | grep ^l5d_tunnel_", topo.Cloud.Name, harness.TunnelServerAdmin())
	d.say("   ip netns exec %s %s check --kubeconfig %s", topo.Cloud.Name, topo.Cfg.CLIBin, topo.CloudCP.Kubeconfig)
	d.say("   logs: %s/*.log", d.work)
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			for _, p := range topo.Procs() {
				if p.Exited() {
					return p.Err()
				}
			}
			d.say("\n-- %s", time.Now().Format("15:04:05"))
			if err := d.probe(ctx, st.probeURL); err != nil {
				d.say("   probe: %v", err)
			}
			if err := d.metrics(); err != nil {
				d.say("   metrics: %v", err)
			}
		}
	}
}

func (d *demo) probe(ctx context.Context, url string) error {
	p, err := harness.RunHelper(ctx, d.topo.Cloud, harness.HelperRequest{Op: "probe", URL: url, Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	if p.Err != "" {
		return fmt.Errorf("probe: %s", p.Err)
	}
	d.say("   GET %s -> %d %q", url, p.Status, strings.TrimSpace(p.Body))
	return nil
}

func (d *demo) metrics() error {
	body, err := d.topo.TunnelMetrics()
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	n := 0
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "l5d_tunnel_") {
			d.say("   %s", l)
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("no l5d_tunnel_* metrics on %s/metrics", harness.TunnelServerAdmin())
	}
	return nil
}

// isDefaulted hides fields the API server fills in on create.
func isDefaulted(line string) bool {
	for _, f := range []string{"spec.sessionAffinity", "spec.internalTrafficPolicy", "spec.ipFamil",
		"spec.clusterIP", "spec.ports[0].targetPort", "metadata.namespace", "spec.probeSpec.timeout",
		"spec.probeSpec.failureThreshold", "metadata.annotations: <nil>"} {
		if strings.HasPrefix(line, "+ "+f) || strings.HasPrefix(line, "- "+f) {
			return true
		}
	}
	return false
}

func fieldString(obj map[string]any, path ...string) string {
	v, found, _ := unstructured.NestedFieldNoCopy(obj, path...)
	if !found || v == nil {
		return ""
	}
	return fmt.Sprint(v)
}
