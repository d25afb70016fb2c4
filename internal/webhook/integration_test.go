package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// trustedNS is where the integration tests' webhook trusts bindings.
const trustedNS = "l5d-tunnel"

// probeNS is an opted-in namespace for dry-run probes (waitBinding).
const probeNS = "probe-check"

// webhookEnv is one control plane with the shipped webhook configuration
// registered and the webhook (manager, handler and reconciler) running
// in-process against it.
type webhookEnv struct {
	*testenv.Env
	logPath     string
	metricsAddr string
}

// startWebhookEnv starts a control plane, registers the webhook
// configuration the chart renders (testenv.WebhookConfiguration) and runs
// the webhook on the address envtest registered, with the certificate
// envtest issued.
func startWebhookEnv(t *testing.T, linkCRD string) *webhookEnv {
	t.Helper()
	we := startControlPlane(t, linkCRD)
	we.kubectl(t, nil, "create", "namespace", trustedNS)
	we.namespaces(t, true, probeNS)
	we.runWebhook(t, nil)
	return we
}

// startControlPlane starts a control plane with the shipped webhook
// configuration registered (nothing serves it yet) and the Link CRD of
// testenv.Options.LinkCRD ("" = newest).
func startControlPlane(t *testing.T, linkCRD string) *webhookEnv {
	t.Helper()
	cfg, err := testenv.WebhookConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := testenv.LocalWebhooks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{Webhooks: hooks, LinkCRD: linkCRD})
	return &webhookEnv{Env: env, logPath: filepath.Join(t.TempDir(), "webhook.log")}
}

// runWebhook runs the webhook in-process until the test ends; edit may
// change its options (admin kubeconfig, trusting trustedNS by default).
func (we *webhookEnv) runWebhook(t *testing.T, edit func(*Options)) {
	t.Helper()
	wi := we.WebhookInstallOptions
	o := DefaultOptions()
	o.CertDir = wi.LocalServingCertDir
	o.BindAddress = wi.LocalServingHost
	o.Port = wi.LocalServingPort
	o.TrustedNamespaces = []string{trustedNS}
	byName := newCase(byNameCase)
	o.RewriteNamespaces = []string{byName.mcNS, byName.l5dNS}
	o.Kubeconfig = we.Kubeconfig
	o.HealthAddr = freeAddr(t)
	o.MetricsAddr = freeAddr(t)
	we.metricsAddr = o.MetricsAddr
	o.LeaderElectionNamespace = trustedNS
	o.ResyncPeriod = time.Minute
	if edit != nil {
		edit(&o)
	}

	logf, err := os.Create(we.logPath)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := Run(ctx, o, log); err != nil {
			log.Error("Run returned", "error", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(we.logPath); err == nil {
				t.Logf("webhook log (last 8 KiB):\n%s", tail(b, 8<<10))
			}
		}
	})
	waitReady(t, "http://"+o.HealthAddr+"/readyz")
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook not ready at %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (we *webhookEnv) kubectl(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := we.Kubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// applyWarnings runs kubectl apply (client-side, so last-applied
// annotations are real) and returns the webhook's warnings on stderr.
func (we *webhookEnv) apply(t testing.TB, yml []byte, extra ...string) []string {
	t.Helper()
	_, stderr, err := we.KubectlStderr(yml, append([]string{"apply", "-f", "-"}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return warnings(stderr)
}

// warnings returns the l5d-tunnel warnings kubectl printed.
func warnings(stderr []byte) []string {
	var out []string
	for _, l := range strings.Split(string(stderr), "\n") {
		if strings.HasPrefix(l, "Warning: "+WarningPrefix) {
			out = append(out, l)
		}
	}
	return out
}

// optIn creates namespaces labelled l5d-tunnel.io/rewrite=enabled (or not).
func (we *webhookEnv) namespaces(t testing.TB, optIn bool, names ...string) {
	t.Helper()
	for _, ns := range names {
		y := fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns)
		if optIn {
			y += fmt.Sprintf("  labels:\n    %s: %s\n", mutate.LabelRewrite, mutate.LabelRewriteEnabled)
		}
		we.kubectl(t, []byte(y), "apply", "-f", "-")
	}
}

// bindingYAML is a tunnel binding for cluster in ns with the ports of
// testBinding; drop names a port to leave out.
func bindingYAML(cluster, ns, drop string) []byte {
	var ports []string
	for _, p := range []struct {
		name string
		port int
	}{{mutate.PortAPI, 16443}, {mutate.PortProbe, 14191}} {
		if p.name != drop {
			ports = append(ports, fmt.Sprintf("  - name: %s\n    port: %d\n", p.name, p.port))
		}
	}
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: tunnel-%[1]s
  namespace: %[2]s
  labels:
    %[3]s: %[1]s
spec:
  selector:
    app: tunnel-server
  ports:
%[4]s---
apiVersion: v1
kind: Service
metadata:
  name: tunnel-%[1]s-gw
  namespace: %[2]s
  labels:
    %[3]s: %[1]s
spec:
  clusterIP: None
  selector:
    app: tunnel-server
  ports:
  - name: gateway
    port: 14143
`, cluster, ns, mutate.LabelLink, strings.Join(ports, "")))
}

// fixtureCase renames a fixture's cluster ("home") and namespaces
// (linkerd-multicluster, linkerd) so that every case has its own.
type fixtureCase struct {
	cluster, mcNS, l5dNS string
}

func (fc fixtureCase) ns(ns string) string {
	switch ns {
	case "linkerd-multicluster":
		return fc.mcNS
	case "linkerd":
		return fc.l5dNS
	case "demo": // mirrors live next to the exported Service's namespace
		return fc.mcNS
	}
	return ns
}

// transform returns the objects of a fixture file, renamed for the case.
func (fc fixtureCase) transform(t testing.TB, version, file string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := fixtures.Objects(version, file)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		o.SetName(strings.ReplaceAll(o.GetName(), "home", fc.cluster))
		if o.GetNamespace() != "" {
			o.SetNamespace(fc.ns(o.GetNamespace()))
		}
		if l := o.GetLabels(); l != nil {
			for k, v := range l {
				if v == "home" {
					l[k] = fc.cluster
				}
			}
			o.SetLabels(l)
		}
		if o.GetKind() == mutate.LinkKind {
			_ = unstructured.SetNestedField(o.Object, fc.cluster, "spec", "targetClusterName")
			if s, ok, _ := unstructured.NestedString(o.Object, "spec", "clusterCredentialsSecret"); ok {
				_ = unstructured.SetNestedField(o.Object, strings.ReplaceAll(s, "home", fc.cluster), "spec", "clusterCredentialsSecret")
			}
		}
		if subjects, ok, _ := unstructured.NestedSlice(o.Object, "subjects"); ok {
			for _, s := range subjects {
				if m, ok := s.(map[string]any); ok {
					if ns, ok := m["namespace"].(string); ok {
						m["namespace"] = fc.ns(ns)
					}
				}
			}
			_ = unstructured.SetNestedSlice(o.Object, subjects, "subjects")
		}
	}
	return objs
}

func toYAML(t testing.TB, objs []*unstructured.Unstructured) []byte {
	t.Helper()
	var b strings.Builder
	for _, o := range objs {
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return []byte(b.String())
}

// linkObjectsOf keeps the objects Classify calls link objects.
func linkObjectsOf(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if k, _ := mutate.Classify(o); k != mutate.KindNone {
			out = append(out, o)
		}
	}
	return out
}

// get reads the stored version of obj (same apiVersion).
func (we *webhookEnv) get(t testing.TB, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	got, err := we.tryGet(obj)
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
	}
	return got
}

func (we *webhookEnv) tryGet(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(obj.GroupVersionKind())
	err := we.Client.Get(context.Background(), types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}, got)
	return got, err
}

// checkOriginal asserts that stored is the object as Linkerd wrote it: no
// l5d-tunnel annotations and the original values of the rewritten fields.
func checkOriginal(t testing.TB, orig, stored *unstructured.Unstructured) {
	t.Helper()
	if err := originalErr(orig, stored); err != nil {
		t.Error(err)
	}
}

func originalErr(orig, stored *unstructured.Unstructured) error {
	for k := range stored.GetAnnotations() {
		if strings.HasPrefix(k, mutate.AnnotationPrefix) {
			return fmt.Errorf("%s %s/%s has annotation %s", stored.GetKind(), stored.GetNamespace(), stored.GetName(), k)
		}
	}
	kind, _ := mutate.Classify(orig)
	var paths [][]string
	switch kind {
	case mutate.KindLink:
		paths = [][]string{{"spec", "gatewayAddress"}, {"spec", "gatewayPort"}, {"spec", "probeSpec"}}
	case mutate.KindProbe:
		paths = [][]string{{"spec", "ports"}, {"spec", "externalName"}}
		if typ, _, _ := unstructured.NestedString(stored.Object, "spec", "type"); typ != "ClusterIP" {
			return fmt.Errorf("probe Service %s/%s has type %q, want ClusterIP", stored.GetNamespace(), stored.GetName(), typ)
		}
	case mutate.KindCredentials:
		// Restoring edits server and tls-server-name back in place: the
		// kubeconfig is the original byte for byte (never printed).
		o, _, _ := unstructured.NestedString(orig.Object, "data", "kubeconfig")
		s, _, _ := unstructured.NestedString(stored.Object, "data", "kubeconfig")
		if o != s {
			return fmt.Errorf("Secret %s/%s: kubeconfig is not the original byte for byte", stored.GetNamespace(), stored.GetName())
		}
		paths = [][]string{{"type"}}
	}
	for _, p := range paths {
		o, _, _ := unstructured.NestedFieldNoCopy(orig.Object, p...)
		s, _, _ := unstructured.NestedFieldNoCopy(stored.Object, p...)
		if kind == mutate.KindProbe && p[1] == "ports" {
			// The API server defaults protocol and targetPort.
			o, s = portNumbers(o), portNumbers(s)
		}
		oj, _ := json.Marshal(o)
		sj, _ := json.Marshal(s)
		if kind == mutate.KindLink && p[1] == "probeSpec" {
			// CRD defaults (timeout, failureThreshold) may be added.
			op, _ := o.(map[string]any)
			sp, _ := s.(map[string]any)
			oj, _ = json.Marshal(op["port"])
			sj, _ = json.Marshal(sp["port"])
		}
		if string(oj) != string(sj) {
			return fmt.Errorf("%s %s/%s: %s = %s, want %s", stored.GetKind(), stored.GetNamespace(), stored.GetName(), strings.Join(p, "."), sj, oj)
		}
	}
	return nil
}

func portNumbers(v any) []any {
	l, _ := v.([]any)
	var out []any
	for _, p := range l {
		if m, ok := p.(map[string]any); ok {
			out = append(out, fmt.Sprint(m["name"], ":", m["port"]))
		}
	}
	return out
}

func rewrittenErr(kind mutate.Kind, stored *unstructured.Unstructured, b *mutate.Binding) error {
	ft := &failRecorder{}
	checkRewritten(ft, kind, stored, b)
	if len(ft.errs) > 0 {
		return fmt.Errorf("%s", strings.Join(ft.errs, "; "))
	}
	return nil
}

// failRecorder is a testing.TB that collects errors (for polling).
type failRecorder struct {
	testing.TB
	errs []string
}

func (f *failRecorder) Helper() {}
func (f *failRecorder) Errorf(format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}
func (f *failRecorder) Fatalf(format string, args ...any) { f.Errorf(format, args...) }
func (f *failRecorder) Fatal(args ...any)                 { f.errs = append(f.errs, fmt.Sprint(args...)) }

// eventually polls check until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var nonDNS = regexp.MustCompile(`[^a-z0-9]+`)

func caseName(parts ...string) string {
	return strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(strings.Join(parts, "-")), "-"), "-")
}

func newCase(name string) fixtureCase {
	return fixtureCase{cluster: name, mcNS: name + "-mc", l5dNS: name + "-l5d"}
}

// fixtureCaseName names the case of one fixture file of one version.
func fixtureCaseName(version, file string) string {
	return caseName(strings.TrimPrefix(strings.TrimPrefix(version, "stable-"), "version-"), strings.TrimSuffix(file, ".yaml"))
}

// TestIntegration applies the real link output of every Linkerd version
// through a real kube-apiserver with the shipped webhook configuration, and
// checks what is stored.
func TestIntegration(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	we := startWebhookEnv(t, "")

	var ran, total atomic.Int32
	run := func(t *testing.T, name string, f func(t *testing.T)) {
		total.Add(1)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t)
			ran.Add(1)
		})
	}
	t.Run("group", func(t *testing.T) {
		for _, v := range fixtures.Versions() {
			for _, file := range linkFiles(v) {
				run(t, v+"/"+file, func(t *testing.T) { testFixture(t, we, v, file) })
			}
		}
		run(t, "server-side-apply", func(t *testing.T) { testServerSideApply(t, we) })
		run(t, "binding-arrives-then-leaves", func(t *testing.T) { testLateBinding(t, we) })
		run(t, "untrusted-binding", func(t *testing.T) { testUntrusted(t, we) })
		run(t, "namespace-not-opted-in", func(t *testing.T) { testNotOptedIn(t, we) })
		run(t, "namespace-opted-in-by-name", func(t *testing.T) { testOptedInByName(t, we) })
		run(t, "dry-run", func(t *testing.T) { testDryRun(t, we) })
		run(t, "bad-input", func(t *testing.T) { testBadInput(t, we) })
		run(t, "binding-missing-port", func(t *testing.T) { testBindingMissingPort(t, we) })
	})

	// The metrics saw all of it.
	if ran.Load() != total.Load() {
		t.Logf("metrics not checked: %d of %d cases ran", ran.Load(), total.Load())
		return
	}
	resp, err := http.Get("http://" + we.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, m := range []string{
		`l5d_tunnel_webhook_admissions_total{kind="link",result="mutated"}`,
		`l5d_tunnel_webhook_admissions_total{kind="probe",result="mutated"}`,
		`l5d_tunnel_webhook_admissions_total{kind="credentials",result="mutated"}`,
		`l5d_tunnel_webhook_admissions_total{kind="credentials",result="warning"}`,
		`l5d_tunnel_webhook_reconcile_updates_total{action="rewrite",kind="link"}`,
		`l5d_tunnel_webhook_reconcile_updates_total{action="restore",kind="credentials"}`,
		`l5d_tunnel_webhook_reconcile_errors_total{kind="binding",reason="invalid"}`,
		`controller_runtime_webhook_requests_total{code="200",webhook="/mutate-v1-secret"}`,
	} {
		if !metricPositive(string(body), m) {
			t.Errorf("metric %s missing or zero", m)
		}
	}
}

// metricPositive reports whether the exposition has series with a value > 0.
func metricPositive(exposition, series string) bool {
	for _, l := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && f > 0
		}
	}
	return false
}

// testFixture: CREATE through kubectl apply, mirrors left alone, re-apply,
// and a full UPDATE (kubectl replace) of Linkerd's original objects.
func testFixture(t *testing.T, we *webhookEnv, version, file string) {
	fc := newCase(fixtureCaseName(version, file))
	b := testBinding(fc.cluster)
	b.Namespace = trustedNS
	we.namespaces(t, true, fc.mcNS, fc.l5dNS)
	we.kubectl(t, bindingYAML(fc.cluster, trustedNS, ""), "apply", "-f", "-")
	// The cache must have seen the binding before the link is applied.
	waitBinding(t, we, fc.cluster)

	objs := fc.transform(t, version, file)
	if w := we.apply(t, toYAML(t, objs)); len(w) > 0 {
		t.Errorf("warnings on apply: %q", w)
	}
	links := linkObjectsOf(objs)
	check := func(stage string) {
		t.Helper()
		for _, o := range links {
			kind, _ := mutate.Classify(o)
			got := we.get(t, o)
			if err := rewrittenErr(kind, got, b); err != nil {
				t.Errorf("%s: %s %s/%s: %v", stage, kind, o.GetNamespace(), o.GetName(), err)
			}
			if kind == mutate.KindLink {
				want, _, _ := unstructured.NestedString(o.Object, "spec", "gatewayAddress")
				if a := got.GetAnnotations()[mutate.AnnotationOriginalGatewayAddress]; a != want {
					t.Errorf("%s: Link %s = %q, want %q", stage, mutate.AnnotationOriginalGatewayAddress, a, want)
				}
			}
		}
	}
	check("create")

	// What the service mirror creates must stay as it is.
	mirrors := fc.transform(t, version, "mirrored.yaml")
	var mirrorServices []*unstructured.Unstructured
	for _, o := range mirrors {
		if o.GetKind() == "Service" {
			mirrorServices = append(mirrorServices, o)
		}
	}
	if w := we.apply(t, toYAML(t, mirrors)); len(w) > 0 {
		t.Errorf("warnings on mirrored objects: %q", w)
	}
	for _, o := range mirrorServices {
		got := we.get(t, o)
		typ, _, _ := unstructured.NestedString(got.Object, "spec", "type")
		if typ != "ClusterIP" || len(got.GetAnnotations()[mutate.AnnotationRewrittenFor]) > 0 {
			t.Errorf("mirror Service %s/%s: type %q, annotations %v", o.GetNamespace(), o.GetName(), typ, got.GetAnnotations())
		}
	}

	// UPDATE: re-apply the same output, then replace the link objects with
	// Linkerd's originals (a full PUT that drops every annotation).
	// kubectl's three-way merge of the probe Service's ports (merge key
	// "port") adds Linkerd's port next to the rewritten one: the API server
	// would reject the duplicate port name if pkg/mutate did not fold the two.
	if _, stderr, err := we.KubectlStderr(toYAML(t, objs), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	} else if w := warnings(stderr); len(w) > 0 {
		t.Errorf("warnings on re-apply: %q", w)
	}
	check("re-apply")
	if _, stderr, err := we.KubectlStderr(toYAML(t, links), "replace", "-f", "-"); err != nil {
		t.Fatal(err)
	} else if w := warnings(stderr); len(w) > 0 {
		t.Errorf("warnings on replace: %q", w)
	}
	check("replace")
}

// probeDryRun creates a probe Service of cluster with server-side dry-run
// and returns its type as the webhook left it and the webhook's warnings.
func probeDryRun(we *webhookEnv, cluster string) (string, []string, error) {
	y := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: probe-wait-%[1]s
  namespace: %[2]s
  labels:
    %[3]s: "true"
    %[4]s: %[1]s
spec:
  ports:
  - name: %[5]s
    port: 4191
`, cluster, probeNS, mutate.LinkerdLabelMirroredGateway, mutate.LinkerdLabelClusterName, mutate.LinkerdProbePortName)
	out, stderr, err := we.KubectlStderr([]byte(y), "create", "--dry-run=server", "-o", "jsonpath={.spec.type}", "-f", "-")
	return string(out), warnings(stderr), err
}

// waitBinding waits until the webhook's cache has the binding of cluster.
func waitBinding(t testing.TB, we *webhookEnv, cluster string) {
	t.Helper()
	eventually(t, 20*time.Second, "binding of "+cluster+" visible to the webhook", func() error {
		typ, _, err := probeDryRun(we, cluster)
		if err == nil && typ != "ExternalName" {
			err = fmt.Errorf("dry-run probe Service has type %q", typ)
		}
		return err
	})
}

// testLateBinding: a link applied before its tunnel exists stays as Linkerd
// wrote it; the reconciler rewrites it when the binding appears and
// restores it when the binding goes away.
func testLateBinding(t *testing.T, we *webhookEnv) {
	fc := newCase("late")
	we.namespaces(t, true, fc.mcNS, fc.l5dNS)
	objs := fc.transform(t, "version-2.17", "link.yaml") // a v1alpha2 Link
	handEditCredentials(t, objs)
	if w := we.apply(t, toYAML(t, objs)); len(w) > 0 {
		t.Errorf("warnings on apply: %q", w)
	}
	links := linkObjectsOf(objs)
	for _, o := range links {
		checkOriginal(t, o, we.get(t, o))
	}

	b := testBinding(fc.cluster)
	b.Namespace = trustedNS
	we.kubectl(t, bindingYAML(fc.cluster, trustedNS, ""), "apply", "-f", "-")
	waitRewrittenKeepingEdits(t, we, links, b)

	// The binding changes (another probe port): rewritten again, from the
	// recorded originals.
	we.kubectl(t, nil, "patch", "service", "-n", trustedNS, "tunnel-"+fc.cluster, "--type=json",
		"-p", `[{"op":"replace","path":"/spec/ports/1/port","value":24191}]`)
	moved := *b
	moved.ProbePort = 24191
	for _, o := range links {
		kind, _ := mutate.Classify(o)
		eventually(t, 30*time.Second, fmt.Sprintf("reconciler follows the binding for %s %s/%s", kind, o.GetNamespace(), o.GetName()), func() error {
			got := we.get(t, o)
			if err := rewrittenErr(kind, got, &moved); err != nil {
				return err
			}
			if kind == mutate.KindLink {
				if a := got.GetAnnotations()[mutate.AnnotationOriginalProbePort]; a != "4191" {
					return fmt.Errorf("%s = %q, want Linkerd's 4191", mutate.AnnotationOriginalProbePort, a)
				}
			}
			return nil
		})
	}

	we.kubectl(t, nil, "delete", "service", "-n", trustedNS, "tunnel-"+fc.cluster, "tunnel-"+fc.cluster+"-gw")
	for _, o := range links {
		eventually(t, 30*time.Second, fmt.Sprintf("reconciler restores %s/%s", o.GetNamespace(), o.GetName()), func() error {
			return originalErr(o, we.get(t, o))
		})
	}
}

// waitRewrittenKeepingEdits waits until the reconciler has rewritten every
// object of links for b, and each credentials Secret kept the hand edits
// handEditCredentials made.
func waitRewrittenKeepingEdits(t *testing.T, we *webhookEnv, links []*unstructured.Unstructured, b *mutate.Binding) {
	t.Helper()
	for _, o := range links {
		kind, _ := mutate.Classify(o)
		eventually(t, 30*time.Second, fmt.Sprintf("reconciler rewrites %s %s/%s", kind, o.GetNamespace(), o.GetName()), func() error {
			got := we.get(t, o)
			if err := rewrittenErr(kind, got, b); err != nil {
				return err
			}
			if kind != mutate.KindCredentials {
				return nil
			}
			enc, _, _ := unstructured.NestedString(got.Object, "data", "kubeconfig")
			kc, _ := base64.StdEncoding.DecodeString(enc)
			for _, keep := range []string{"# hand-edited", "someFutureField: {a: 1}", "someExtension: keep-me"} {
				if !strings.Contains(string(kc), keep) {
					return fmt.Errorf("Secret %s/%s: the rewrite dropped %q", got.GetNamespace(), got.GetName(), keep)
				}
			}
			return nil
		})
	}
}

// handEditCredentials replaces the kubeconfig of every credentials Secret in
// objs with a hand-edited one (see handEdited): comments and fields client-go
// does not know must be kept through rewrite and restore.
func handEditCredentials(t testing.TB, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if k, _ := mutate.Classify(o); k == mutate.KindCredentials {
			_ = unstructured.SetNestedField(o.Object, base64.StdEncoding.EncodeToString([]byte(handEdited(t, o))), "data", "kubeconfig")
		}
	}
}

// handEdited returns the kubeconfig of a credentials Secret with a comment,
// an unknown cluster field and an unknown user field added.
func handEdited(t testing.TB, o *unstructured.Unstructured) string {
	t.Helper()
	enc, _, _ := unstructured.NestedString(o.Object, "data", "kubeconfig")
	kc, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(kc), "current-context:", "# hand-edited\ncurrent-context:", 1)
	out = strings.Replace(out, "    server:", "    someFutureField: {a: 1}\n    server:", 1)
	out = strings.Replace(out, "  user:\n", "  user:\n    someExtension: keep-me\n", 1)
	if strings.Count(out, "\n") != strings.Count(string(kc), "\n")+3 {
		t.Fatalf("fixture kubeconfig has an unexpected layout")
	}
	return out
}

// testUntrusted: a binding in a namespace the webhook does not trust must
// not redirect anything.
func testUntrusted(t *testing.T, we *webhookEnv) {
	fc := newCase("evil")
	we.namespaces(t, true, fc.mcNS, fc.l5dNS)
	we.namespaces(t, false, "evil-tunnel")
	we.kubectl(t, bindingYAML(fc.cluster, "evil-tunnel", ""), "apply", "-f", "-")
	objs := fc.transform(t, fixtures.Newest(), "link.yaml")
	if w := we.apply(t, toYAML(t, objs)); len(w) > 0 {
		t.Errorf("warnings on apply: %q", w)
	}
	for _, o := range linkObjectsOf(objs) {
		checkOriginal(t, o, we.get(t, o))
	}
}

// applyUnlabelled applies the newest link output for case name into
// namespaces without the opt-in label, with a trusted binding in place, and
// returns the link objects as applied.
func applyUnlabelled(t *testing.T, we *webhookEnv, name string) []*unstructured.Unstructured {
	t.Helper()
	fc := newCase(name)
	we.namespaces(t, false, fc.mcNS, fc.l5dNS)
	we.kubectl(t, bindingYAML(fc.cluster, trustedNS, ""), "apply", "-f", "-")
	waitBinding(t, we, fc.cluster)
	objs := fc.transform(t, fixtures.Newest(), "link.yaml")
	we.apply(t, toYAML(t, objs))
	return linkObjectsOf(objs)
}

// testNotOptedIn: namespaces neither labelled nor named by
// --rewrite-namespaces are never rewritten, even with a trusted binding.
func testNotOptedIn(t *testing.T, we *webhookEnv) {
	for _, o := range applyUnlabelled(t, we, "optout") {
		checkOriginal(t, o, we.get(t, o))
	}
}

// byNameCase names the case whose namespaces runWebhook opts in by name
// (--rewrite-namespaces) instead of by label.
const byNameCase = "byname"

// testOptedInByName: namespaces named by --rewrite-namespaces are rewritten
// at admission without any label (the webhook configuration sends every
// namespace but kube-system and its own; the webhook decides).
func testOptedInByName(t *testing.T, we *webhookEnv) {
	b := testBinding(byNameCase)
	b.Namespace = trustedNS
	for _, o := range applyUnlabelled(t, we, byNameCase) {
		kind, _ := mutate.Classify(o)
		if err := rewrittenErr(kind, we.get(t, o), b); err != nil {
			t.Errorf("%s %s/%s: %v", kind, o.GetNamespace(), o.GetName(), err)
		}
	}
}

// testDryRun: server-side dry-run returns the rewritten objects and stores
// nothing.
func testDryRun(t *testing.T, we *webhookEnv) {
	fc := newCase("dry")
	we.namespaces(t, true, fc.mcNS, fc.l5dNS)
	we.kubectl(t, bindingYAML(fc.cluster, trustedNS, ""), "apply", "-f", "-")
	waitBinding(t, we, fc.cluster)
	b := testBinding(fc.cluster)
	b.Namespace = trustedNS
	links := linkObjectsOf(fc.transform(t, fixtures.Newest(), "link.yaml"))
	out := we.kubectl(t, toYAML(t, links), "apply", "--dry-run=server", "-o", "json", "-f", "-")
	var list struct{ Items []map[string]any }
	if err := json.Unmarshal(out, &list); err != nil || len(list.Items) != len(links) {
		t.Fatalf("dry-run output: %v, %d items, want %d", err, len(list.Items), len(links))
	}
	for i, item := range list.Items {
		u := &unstructured.Unstructured{Object: item}
		kind, _ := mutate.Classify(links[i])
		if err := rewrittenErr(kind, u, b); err != nil {
			t.Errorf("dry-run %s: %v", kind, err)
		}
		if _, err := we.tryGet(links[i]); !apierrors.IsNotFound(err) {
			t.Errorf("dry-run stored %s %s/%s (get: %v)", kind, links[i].GetNamespace(), links[i].GetName(), err)
		}
	}
}

// testBadInput: a malformed kubeconfig and a Link of unexpected shape are
// stored as sent, with a warning kubectl prints.
func testBadInput(t *testing.T, we *webhookEnv) {
	fc := newCase("bad")
	we.namespaces(t, true, fc.mcNS, fc.l5dNS)
	we.kubectl(t, bindingYAML(fc.cluster, trustedNS, ""), "apply", "-f", "-")
	waitBinding(t, we, fc.cluster)
	links := linkObjectsOf(fc.transform(t, fixtures.Newest(), "link.yaml"))
	var secret, link *unstructured.Unstructured
	for _, o := range links {
		switch k, _ := mutate.Classify(o); k {
		case mutate.KindCredentials:
			if o.GetNamespace() == fc.mcNS {
				secret = o
			}
		case mutate.KindLink:
			link = o
		}
	}
	_ = unstructured.SetNestedField(secret.Object, "Y2x1c3RlcnM6IFtub3Q6IGEga3ViZWNvbmZpZw==", "data", "kubeconfig") // "clusters: [not: a kubeconfig"
	unstructured.RemoveNestedField(link.Object, "spec", "probeSpec")
	for _, tc := range []struct {
		obj  *unstructured.Unstructured
		want string
	}{{secret, "kubeconfig"}, {link, "probeSpec"}} {
		w := we.apply(t, toYAML(t, []*unstructured.Unstructured{tc.obj}))
		if len(w) != 1 || !strings.Contains(w[0], tc.want) {
			t.Errorf("%s: warnings %q, want one about %s", tc.obj.GetKind(), w, tc.want)
		}
		got := we.get(t, tc.obj)
		checkOriginal(t, tc.obj, got)
		if tc.obj == link {
			if _, ok, _ := unstructured.NestedFieldNoCopy(got.Object, "spec", "probeSpec"); ok {
				t.Errorf("Link got a probeSpec")
			}
		}
	}
}

// testBindingMissingPort: a trusted binding without its probe port
// rewrites nothing and says why.
func testBindingMissingPort(t *testing.T, we *webhookEnv) {
	fc := newCase("noport")
	we.namespaces(t, true, fc.mcNS, fc.l5dNS)
	we.kubectl(t, bindingYAML(fc.cluster, trustedNS, mutate.PortProbe), "apply", "-f", "-")
	eventually(t, 20*time.Second, "incomplete binding visible to the webhook", func() error {
		_, w, err := probeDryRun(we, fc.cluster)
		if err == nil && len(w) == 0 {
			err = fmt.Errorf("no warning yet")
		}
		return err
	})
	objs := fc.transform(t, fixtures.Newest(), "link.yaml")
	links := linkObjectsOf(objs)
	w := we.apply(t, toYAML(t, objs))
	if len(w) != len(links) {
		t.Errorf("warnings %q, want %d", w, len(links))
	}
	for _, l := range w {
		if !strings.Contains(l, `no port named \"probe\"`) && !strings.Contains(l, `no port named "probe"`) {
			t.Errorf("warning %q does not name the missing port", l)
		}
	}
	for _, o := range links {
		checkOriginal(t, o, we.get(t, o))
	}
}

// TestLeastPrivilege writes the link output while the webhook is down
// (failurePolicy Ignore lets it through unchanged), then starts the webhook
// as its ServiceAccount with exactly the RBAC the chart renders
// (testenv.WebhookRBAC): at startup the reconciler rewrites the link
// objects in linkerd-multicluster and linkerd, and a namespace that opted in
// without a RoleBinding is logged as forbidden while the others still
// reconcile.
func TestLeastPrivilege(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	we := startControlPlane(t, "")
	// The chart's Namespace, ServiceAccount and RBAC with its default
	// rewriteNamespaces (linkerd-multicluster, linkerd): "extra" opts in by
	// label but gets no RoleBinding.
	rbac, err := testenv.WebhookRBAC()
	if err != nil {
		t.Fatal(err)
	}
	we.namespaces(t, true, "linkerd-multicluster", "linkerd", "extra")
	we.kubectl(t, rbac, "apply", "-f", "-")

	// The newest link output as printed (cluster "home"), plus a copy of
	// its credentials Secret in "extra", stored before any binding exists.
	objs, err := fixtures.Objects(fixtures.Newest(), "link.yaml")
	if err != nil {
		t.Fatal(err)
	}
	handEditCredentials(t, objs)
	links := linkObjectsOf(objs)
	var extra *unstructured.Unstructured
	for _, o := range links {
		if k, _ := mutate.Classify(o); k == mutate.KindCredentials && o.GetNamespace() == "linkerd-multicluster" {
			extra = o.DeepCopy()
			extra.SetNamespace("extra")
		}
	}
	b := testBinding("home")
	b.Namespace = trustedNS
	we.kubectl(t, bindingYAML("home", trustedNS, ""), "apply", "-f", "-")
	// One ready tunnel-server pod: the webhook reads it with the shipped
	// RBAC and reports the Link's new gatewayAddress as an Event.
	b.GatewayAddresses = []string{"10.244.0.10"}
	applySlice(t, we, gatewaySlice(b, map[string]bool{"10.244.0.10": true}))
	we.apply(t, toYAML(t, append(objs, extra)))
	for _, o := range append(links, extra) {
		checkOriginal(t, o, we.get(t, o)) // the webhook is down
	}

	token := strings.TrimSpace(string(we.kubectl(t, nil, "create", "token", "l5d-tunnel-webhook", "-n", trustedNS, "--duration", "1h")))
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: we.Config.Host, CertificateAuthorityData: we.Config.CAData}
	kc.AuthInfos["webhook"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["webhook"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "webhook"}
	kc.CurrentContext = "webhook"
	kcPath := filepath.Join(t.TempDir(), "webhook.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kcPath); err != nil {
		t.Fatal(err)
	}
	we.runWebhook(t, func(o *Options) { o.Kubeconfig = kcPath })
	waitRewrittenKeepingEdits(t, we, links, b)
	eventually(t, 30*time.Second, "forbidden namespace logged", func() error {
		raw, err := os.ReadFile(we.logPath)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(raw), "\n") {
			if strings.Contains(l, `"namespace":"extra"`) && strings.Contains(l, "cannot list; skipped") && strings.Contains(l, "forbidden") {
				return nil
			}
		}
		return fmt.Errorf("no forbidden line for namespace extra")
	})
	checkOriginal(t, extra, we.get(t, extra))
	eventually(t, 30*time.Second, "Event on the Link", func() error {
		return linkEvent(we, "linkerd-multicluster", "home", "10.244.0.10")
	})
	// Nothing asked for more than the RBAC grants, apart from "extra".
	raw, _ := os.ReadFile(we.logPath)
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.Contains(strings.ToLower(l), "forbidden") && !strings.Contains(l, `"namespace":"extra"`) {
			t.Errorf("unexpected forbidden: %s", l)
		}
	}
}

// TestOldLinkCRD: with Linkerd 2.14's Link CRD (v1alpha1 only) the webhook
// rewrites at admission and the reconciler finds and rewrites v1alpha1
// Links stored before the binding existed.
func TestOldLinkCRD(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	we := startWebhookEnv(t, "2.14")
	b := testBinding("home")
	b.Namespace = trustedNS

	late := newCase("late")
	we.namespaces(t, true, late.mcNS, late.l5dNS)
	lateObjs := late.transform(t, "stable-2.14.10", "link.yaml")
	we.apply(t, toYAML(t, lateObjs))
	lateLinks := linkObjectsOf(lateObjs)
	for _, o := range lateLinks {
		checkOriginal(t, o, we.get(t, o))
	}

	we.namespaces(t, true, "linkerd-multicluster", "linkerd")
	we.kubectl(t, bindingYAML("home", trustedNS, ""), "apply", "-f", "-")
	waitBinding(t, we, "home")
	objs, err := fixtures.Objects("stable-2.14.10", "link.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if w := we.apply(t, toYAML(t, objs)); len(w) > 0 {
		t.Errorf("warnings: %q", w)
	}
	for _, o := range linkObjectsOf(objs) {
		kind, _ := mutate.Classify(o)
		if err := rewrittenErr(kind, we.get(t, o), b); err != nil {
			t.Errorf("admission: %s %s/%s: %v", kind, o.GetNamespace(), o.GetName(), err)
		}
	}

	lb := testBinding(late.cluster)
	lb.Namespace = trustedNS
	we.kubectl(t, bindingYAML(late.cluster, trustedNS, ""), "apply", "-f", "-")
	for _, o := range lateLinks {
		kind, _ := mutate.Classify(o)
		eventually(t, 30*time.Second, fmt.Sprintf("reconciler rewrites %s %s/%s", kind, o.GetNamespace(), o.GetName()), func() error {
			return rewrittenErr(kind, we.get(t, o), lb)
		})
	}
}

// testServerSideApply: `kubectl apply --server-side` of the link output,
// twice (the second apply sends Linkerd's values again, the webhook
// rewrites them again, and the probe Service keeps one port).
func testServerSideApply(t *testing.T, we *webhookEnv) {
	fc := newCase("ssa")
	we.namespaces(t, true, fc.mcNS, fc.l5dNS)
	we.kubectl(t, bindingYAML(fc.cluster, trustedNS, ""), "apply", "-f", "-")
	waitBinding(t, we, fc.cluster)
	b := testBinding(fc.cluster)
	b.Namespace = trustedNS
	objs := fc.transform(t, fixtures.Newest(), "link-legacy.yaml")
	for i := range 2 {
		_, stderr, err := we.KubectlStderr(toYAML(t, objs), "apply", "--server-side", "-f", "-")
		switch {
		case err != nil:
			t.Fatalf("apply %d: %v", i+1, err)
		case len(warnings(stderr)) > 0:
			t.Errorf("apply %d: warnings %q", i+1, warnings(stderr))
		}
		for _, o := range linkObjectsOf(objs) {
			kind, _ := mutate.Classify(o)
			if err := rewrittenErr(kind, we.get(t, o), b); err != nil {
				t.Errorf("apply %d: %s %s/%s: %v", i+1, kind, o.GetNamespace(), o.GetName(), err)
			}
		}
	}
}
