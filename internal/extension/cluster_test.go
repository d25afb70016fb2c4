package extension

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
)

// cluster is one real kube-apiserver with a kubeconfig of three contexts:
// "cloud" (the apiserver, current), "admin" (the same) and "broken" (a port
// nothing listens on).
type cluster struct {
	env        *testenv.Env
	kubeconfig string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	env := testenv.Start(t, testenv.Options{CertManagerCRDs: true})
	cfg, err := clientcmd.LoadFromFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cur := cfg.Contexts[cfg.CurrentContext]
	cloud := cur.DeepCopy()
	cfg.Contexts["cloud"] = cloud
	cfg.Contexts["admin"] = cur.DeepCopy()
	broken := cfg.Clusters[cur.Cluster].DeepCopy()
	broken.Server = "https://127.0.0.1:1"
	cfg.Clusters["broken"] = broken
	bc := cur.DeepCopy()
	bc.Cluster = "broken"
	cfg.Contexts["broken"] = bc
	cfg.CurrentContext = "cloud"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return &cluster{env: env, kubeconfig: path}
}

// run runs the CLI with --kubeconfig (after the command, as linkerd passes
// global flags) and the rest of args.
func (c *cluster) run(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, "", append(args, "--kubeconfig", c.kubeconfig)...)
}

func (c *cluster) apply(t *testing.T, stream string) {
	t.Helper()
	if _, err := c.env.Kubectl([]byte(stream), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

func mustRun(t *testing.T, r result, what string) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstderr: %s", what, r.code, r.stderr)
	}
	return r.stdout
}

var hexToken = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Linkerd is installed first: its namespaces exist, and the webhook install
// applies (RoleBindings in them, cert-manager objects, the webhook
// configuration).
func installLinkerdAndWebhook(t *testing.T, c *cluster) string {
	t.Helper()
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "linkerd", Labels: map[string]string{
			"linkerd.io/is-control-plane": "true", "linkerd.io/control-plane-ns": "linkerd",
		}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "linkerd-multicluster", Labels: map[string]string{
			LabelExtension: "multicluster",
		}}},
	} {
		if err := c.env.Client.Create(t.Context(), ns); err != nil {
			t.Fatal(err)
		}
	}
	install := mustRun(t, c.run(t, "install"), "install")
	c.apply(t, install)
	return install
}

func TestOnAPIServer(t *testing.T) {
	c := startCluster(t)
	install := installLinkerdAndWebhook(t, c)

	var token string
	t.Run("ServerTokenReuseAndRotate", func(t *testing.T) {
		out := mustRun(t, c.run(t, "server", "home", "--ingress-host", "home.tunnel.example.com"), "server home")
		token = tokenIn(t, objects(t, out), "home")
		if !hexToken.MatchString(token) {
			t.Fatalf("fresh token %q: want 32 random bytes in hex", token)
		}
		if len(fixtures.OfKind(objects(t, out), "Namespace")) != 0 {
			t.Errorf("server renders a Namespace")
		}
		// Not applied yet: another run makes another token.
		again := tokenIn(t, objects(t, mustRun(t, c.run(t, "server", "home"), "server home")), "home")
		if again == token {
			t.Fatalf("two runs before apply gave the same token: not random")
		}
		c.apply(t, out)
		// Applied: every run reuses it, and the output re-applies as a no-op.
		for i := 0; i < 2; i++ {
			out2 := mustRun(t, c.run(t, "server", "home", "--ingress-host", "home.tunnel.example.com"), "server home again")
			if got := tokenIn(t, objects(t, out2), "home"); got != token {
				t.Fatalf("run %d after apply: token changed", i)
			}
			if out2 != out {
				t.Errorf("re-run after apply renders different manifests")
			}
		}
		rotated := tokenIn(t, objects(t, mustRun(t, c.run(t, "server", "home", "--rotate-token"), "--rotate-token")), "home")
		if rotated == token || !hexToken.MatchString(rotated) {
			t.Errorf("--rotate-token: token %q, want a fresh one", rotated)
		}
		// Another link, another token.
		if other := tokenIn(t, objects(t, mustRun(t, c.run(t, "server", "lab"), "server lab")), "lab"); other == token {
			t.Errorf("link lab got link home's token")
		}
	})

	t.Run("ServerUnreachableCluster", func(t *testing.T) {
		r := c.run(t, "server", "home", "--context", "broken")
		if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "--ignore-cluster") || !strings.Contains(r.stderr, "context broken") || r.stdout != "" {
			t.Errorf("server home --context broken: exit %d, stdout %q, stderr %q; want exit 1 naming the context and --ignore-cluster", r.code, r.stdout, r.stderr)
		}
		out := mustRun(t, c.run(t, "server", "home", "--context", "broken", "--ignore-cluster"), "--ignore-cluster")
		if tok := tokenIn(t, objects(t, out), "home"); tok == token || !hexToken.MatchString(tok) {
			t.Errorf("--ignore-cluster: token %q; want a fresh one", tok)
		}
		// --api-addr names Linkerd's control-plane API (linkerd passes it on
		// to every extension); it is not the Kubernetes API server, which
		// linkerd's own client takes from the kubeconfig as we do.
		out = mustRun(t, c.run(t, "server", "home", "--api-addr", "127.0.0.1:1"), "--api-addr")
		if tokenIn(t, objects(t, out), "home") != token {
			t.Errorf("--api-addr 127.0.0.1:1 changed the Kubernetes API server: the cluster's token was not read")
		}
	})

	t.Run("ClientReadsTheTokenFromTheCloud", func(t *testing.T) {
		out := mustRun(t, c.run(t, "client", "home", "--context", "cloud", "--server-url", "wss://home.tunnel.example.com"), "client home")
		objs := objects(t, out)
		if got := tokenIn(t, objs, "home"); got != token {
			t.Fatalf("client home: token %q, want the cloud Secret's %q", got, token)
		}
		if !strings.Contains(out, "wss://home.tunnel.example.com/tunnel") {
			t.Errorf("client home output lacks the server URL with its default path")
		}
		for _, o := range objs {
			if o.GetLabels()[LabelExtension] != Name {
				t.Errorf("client: %s %s lacks %s=%s", o.GetKind(), o.GetName(), LabelExtension, Name)
			}
		}
		// --ca-file and --upstream reach the rendered client.
		ca := filepath.Join(t.TempDir(), "ca.crt")
		caPEM := selfSignedPEM(t)
		if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		up := "linkerd-gateway.mc.svc.cluster.local:4143"
		out = mustRun(t, c.run(t, "client", "home", "--server-url", "wss://h.example.com", "--ca-file", ca, "--upstream", "gateway="+up), "client --ca-file --upstream")
		if !strings.Contains(out, "gateway="+up) || !strings.Contains(out, strings.Split(string(caPEM), "\n")[1]) {
			t.Errorf("client --ca-file --upstream: output lacks the upstream or the CA:\n%s", out)
		}
		// No server for link "lab" applied: a clear error with the fix.
		r := c.run(t, "client", "lab", "--server-url", "wss://lab.tunnel.example.com/tunnel")
		if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "linkerd tunnel server lab") || r.stdout != "" {
			t.Errorf("client lab without its server: exit %d, stdout %q, stderr %q; want exit 1 and a hint to run 'linkerd tunnel server lab'", r.code, r.stdout, r.stderr)
		}
		r = c.run(t, "client", "home", "--context", "broken", "--server-url", "wss://h.example.com/tunnel")
		if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "context broken") {
			t.Errorf("client --context broken: exit %d, stderr %q; want exit 1 naming the context", r.code, r.stderr)
		}
	})

	t.Run("Impersonation", func(t *testing.T) {
		// bob may do nothing: impersonating him is denied reading the Secret.
		for _, args := range [][]string{
			{"--as", "bob"},
			{"--as", "bob", "--as-group=[]"}, // what linkerd passes for no group
		} {
			r := c.run(t, append([]string{"client", "home", "--server-url", "wss://h.example.com/tunnel"}, args...)...)
			if r.code != cli.ExitFailure || !strings.Contains(r.stderr, `"bob"`) || !strings.Contains(r.stderr, "forbidden") {
				t.Errorf("client home %q: exit %d, stderr %q; want exit 1 and a denial for bob", args, r.code, r.stderr)
			}
		}
		// bob in system:masters may, with the group as a user writes it and
		// as `linkerd check` passes it (pflag's "[g1,g2]" form).
		for _, group := range []string{"--as-group=system:masters", "--as-group=[system:masters]", "--as-group=[system:authenticated,system:masters]"} {
			out := mustRun(t, c.run(t, "client", "home", "--server-url", "wss://h.example.com/tunnel", "--as", "bob", group), "--as bob "+group)
			if tokenIn(t, objects(t, out), "home") != token {
				t.Errorf("--as bob %s: wrong token", group)
			}
		}
		// Global flags before the command work too.
		r := run(t, "", "--kubeconfig", c.kubeconfig, "--as", "bob", "uninstall")
		if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "forbidden") {
			t.Errorf("--as bob uninstall: exit %d, stderr %q; want a denial", r.code, r.stderr)
		}
	})

	t.Run("Version", func(t *testing.T) {
		// The server version is the image tag of the installed Deployments.
		want := "unavailable"
		for _, d := range fixtures.OfKind(objects(t, install), "Deployment") {
			ctrs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
			image, _, _ := unstructured.NestedString(ctrs[0].(map[string]any), "image")
			want = image[strings.LastIndex(image, ":")+1:]
		}
		out := mustRun(t, c.run(t, "version"), "version")
		if out != "Client version: "+cli.Version+"\nServer version: "+want+"\n" {
			t.Errorf("version: %q, want server version %s", out, want)
		}
		out = mustRun(t, c.run(t, "version", "--short", "--context", "broken"), "version --context broken")
		if out != cli.Version+"\nunavailable\n" {
			t.Errorf("version --short --context broken: %q", out)
		}
	})

	t.Run("Uninstall", func(t *testing.T) { checkUninstall(t, c, install) })
}

// checkUninstall: uninstall lists exactly the extension's objects that
// deleting its Namespace would not delete, plus that Namespace; deleting them
// leaves Linkerd's namespaces and other extensions' objects alone.
func checkUninstall(t *testing.T, c *cluster, install string) {
	ctx := t.Context()
	// Objects uninstall must not list: another extension's, an unlabelled
	// one, and a Linkerd namespace wrongly labelled as ours (on top of the
	// RoleBindings the install put in Linkerd's namespaces, which it must list).
	notOurs := []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "viz-reader", Labels: map[string]string{LabelExtension: "viz"}}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "mine"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "linkerd-prod", Labels: map[string]string{
			LabelExtension: Name, "linkerd.io/is-control-plane": "true",
		}}},
	}
	// An object of ours elsewhere, which it must list.
	stray := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "stray", Namespace: "default", Labels: map[string]string{LabelExtension: Name}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "view"},
	}
	for _, o := range append(notOurs, stray) {
		if err := c.env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	// Expected: from the rendered install, what is cluster-scoped or in
	// another namespace than its own, plus the stray RoleBinding.
	clusterScoped := []string{"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
	var want []string
	for _, o := range objects(t, install) {
		if slices.Contains(clusterScoped, o.GetKind()) || o.GetNamespace() != DefaultNamespace {
			want = append(want, o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName())
		}
	}
	want = append(want, "RoleBinding default/stray")
	slices.Sort(want)

	out := mustRun(t, c.run(t, "uninstall"), "uninstall")
	var got []string
	objs := objects(t, out)
	for _, o := range objs {
		got = append(got, o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName())
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("uninstall lists\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if objs[0].GetKind() != "MutatingWebhookConfiguration" || objs[len(objs)-1].GetKind() != "Namespace" {
		t.Errorf("uninstall order: first %s, last %s; want the webhook configuration first and the Namespace last", objs[0].GetKind(), objs[len(objs)-1].GetKind())
	}
	if _, err := c.env.Kubectl([]byte(out), "delete", "--wait=false", "-f", "-"); err != nil {
		t.Fatalf("kubectl delete -f <uninstall output>: %v", err)
	}
	// Gone (the Namespace terminating: no namespace controller runs here).
	for _, o := range objs {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(o.GroupVersionKind())
		err := c.env.Client.Get(ctx, client.ObjectKeyFromObject(o), u)
		if err == nil && u.GetDeletionTimestamp() == nil {
			t.Errorf("%s %s/%s still there after the delete", o.GetKind(), o.GetNamespace(), o.GetName())
		} else if err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	}
	// Untouched.
	for _, o := range append(notOurs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "linkerd"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "linkerd-multicluster"}}) {
		u := &unstructured.Unstructured{}
		gvk, _ := c.env.Client.GroupVersionKindFor(o)
		u.SetGroupVersionKind(gvk)
		if err := c.env.Client.Get(ctx, client.ObjectKeyFromObject(o), u); err != nil || u.GetDeletionTimestamp() != nil {
			t.Errorf("%s %s touched by the uninstall: %v", gvk.Kind, o.GetName(), err)
		}
	}
}
