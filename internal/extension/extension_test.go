package extension

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// result is one run of the CLI.
type result struct {
	code           int
	stdout, stderr string
}

// run runs linkerd-tunnel in-process with args (stdin empty unless given).
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	root, _ := NewRootCmd()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	code := Run(ctx, root, args, strings.NewReader(stdin), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// objects parses a YAML stream (or JSON lines) into objects.
func objects(t *testing.T, stream string) []*unstructured.Unstructured {
	t.Helper()
	docs, err := splitYAML([]byte(stream))
	if err != nil {
		t.Fatalf("output is not a YAML stream: %v\n%s", err, stream)
	}
	var out []*unstructured.Unstructured
	for _, d := range docs {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(d, &u.Object); err != nil {
			t.Fatalf("document: %v\n%s", err, d)
		}
		out = append(out, u)
	}
	return out
}

// secretValue returns key of a rendered Secret (data or stringData).
func secretValue(t *testing.T, s *unstructured.Unstructured, key string) string {
	t.Helper()
	if v, ok, _ := unstructured.NestedString(s.Object, "stringData", key); ok {
		return v
	}
	if v, ok, _ := unstructured.NestedString(s.Object, "data", key); ok {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatalf("Secret %s data.%s: %v", s.GetName(), key, err)
		}
		return string(b)
	}
	t.Fatalf("Secret %s has no key %s", s.GetName(), key)
	return ""
}

// tokenIn returns the link's token from a rendered server or client stream.
func tokenIn(t *testing.T, objs []*unstructured.Unstructured, link string) string {
	t.Helper()
	ref, err := findTokenRef(link, DefaultNamespace)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range fixtures.OfKind(objs, "Secret") {
		if s.GetName() == ref.Name {
			return secretValue(t, s, ref.Key)
		}
	}
	// The client chart may name its Secret differently: the only Secret.
	if ss := fixtures.OfKind(objs, "Secret"); len(ss) == 1 {
		return secretValue(t, ss[0], ref.Key)
	}
	t.Fatalf("no token Secret %s in the output", ref.Name)
	return ""
}

func TestUsageErrorsExit2NamingTheFlag(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--bogus"}, "--bogus"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{}, "a command is required"},
		{[]string{"install", "extra"}, `unexpected argument "extra"`},
		{[]string{"install", "-L", "Not_A_Namespace"}, "--linkerd-namespace"},
		{[]string{"install", "--namespace", "UPPER"}, "--namespace"},
		{[]string{"install", "--rewrite-namespaces", "a,B_"}, "--rewrite-namespaces"},
		{[]string{"install", "--log-level", "loud"}, "--log-level"},
		{[]string{"install", "--log-format", "xml"}, "--log-format"},
		{[]string{"install", "--replicas", "0"}, "--replicas"},
		{[]string{"install", "--replicas", "two"}, "--replicas"},
		{[]string{"install", "--image-pull-policy", "Sometimes"}, "--image-pull-policy"},
		{[]string{"install", "-o", "xml"}, "--output"},
		{[]string{"install", "--set", "a[=1"}, "--set"},
		{[]string{"install", "-f", filepath.Join(dir, "missing.yaml")}, "--values"},
		{[]string{"server"}, "link NAME"},
		{[]string{"server", "a", "b"}, `unexpected argument "b"`},
		{[]string{"server", "Home"}, "link NAME"},
		{[]string{"server", strings.Repeat("a", maxLinkName+1)}, "at most"},
		{[]string{"server", "home", "--ingress-class", "nginx"}, "--ingress-class needs --ingress-host"},
		{[]string{"server", "home", "--ingress-host", "bad host"}, "--ingress-host"},
		{[]string{"server", "home", "--ingress-host", "h.example.com", "--ingress-annotation", "novalue"}, "--ingress-annotation"},
		{[]string{"server", "home", "--rotate-token", "--ignore-cluster"}, "--rotate-token and --ignore-cluster"},
		{[]string{"server", "home", "--ignore-cluster", "--set", "token.value=x"}, "token.value"},
		{[]string{"server", "home", "--ignore-cluster", "--set", "link=other"}, "link"},
		{[]string{"client", "home"}, "--server-url is required"},
		{[]string{"client", "home", "--server-url", "https://h.example.com/tunnel"}, "--server-url"},
		{[]string{"client", "home", "--server-url", "wss:///tunnel"}, "--server-url"},
		{[]string{"client", "home", "--server-url", "wss://h.example.com", "--ca-file", notPEM}, "--ca-file"},
		{[]string{"client", "home", "--server-url", "wss://h.example.com", "--ca-file", filepath.Join(dir, "none")}, "--ca-file"},
		{[]string{"client", "home", "--server-url", "wss://h.example.com", "--upstream", "web=h:80"}, "--upstream"},
		{[]string{"client", "home", "--server-url", "wss://h.example.com", "--upstream", "api=h"}, "--upstream"},
		{[]string{"client", "home", "--server-url", "wss://h.example.com", "--set-string", "serverURL=wss://x"}, "serverURL"},
		{[]string{"client", "home", "--server-url", "wss://h.example.com", "--server-namespace", "X"}, "--server-namespace"},
		{[]string{"uninstall", "-o", "xml"}, "--output"},
		{[]string{"version", "--bogus"}, "--bogus"},
	} {
		r := run(t, "", c.args...)
		if r.code != cli.ExitUsage || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "--help") {
			t.Errorf("linkerd-tunnel %q: exit %d, stderr %q; want exit 2 and a message naming %q with a pointer to --help", c.args, r.code, r.stderr, c.want)
		}
		if r.stdout != "" && len(c.args) > 0 {
			t.Errorf("linkerd-tunnel %q wrote to stdout on a usage error: %q", c.args, r.stdout)
		}
	}
}

func TestHelpHasExamples(t *testing.T) {
	for _, cmd := range []string{"install", "server", "client", "uninstall", "version"} {
		// -h after the command and the global flags after it, as linkerd passes them.
		r := run(t, "", cmd, "-h", "--as-group=[]", "-L", "linkerd")
		example := regexp.MustCompile(`\n  linkerd tunnel (--?\S+ \S+ )*` + cmd + `\b`)
		if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !example.MatchString(r.stdout) {
			t.Errorf("%s -h: exit %d, stdout %q; want exit 0 and examples of 'linkerd ... tunnel %s'", cmd, r.code, r.stdout, cmd)
		}
		for _, global := range []string{"--api-addr", "--context", "--as ", "--as-group", "--kubeconfig", "--linkerd-namespace", "--verbose"} {
			if !strings.Contains(r.stdout, global) {
				t.Errorf("%s -h does not list the global flag %s", cmd, global)
			}
		}
	}
}

// rewriteNamespacesOf returns the namespaces of the RoleBindings the install
// renders outside its own namespace: the chart feeds them from rewriteNamespaces.
func rewriteNamespacesOf(t *testing.T, stream string) []string {
	t.Helper()
	var out []string
	for _, rb := range fixtures.OfKind(objects(t, stream), "RoleBinding") {
		if ns := rb.GetNamespace(); ns != DefaultNamespace && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return out
}

func TestInstallRendersOnlyLabelledObjectsAndDerivesRewriteNamespaces(t *testing.T) {
	r := run(t, "", "install")
	if r.code != 0 {
		t.Fatalf("install: exit %d: %s", r.code, r.stderr)
	}
	objs := objects(t, r.stdout)
	if len(fixtures.OfKind(objs, "Namespace")) != 1 || len(fixtures.OfKind(objs, "MutatingWebhookConfiguration")) != 1 {
		t.Fatalf("install renders %d Namespaces and %d MutatingWebhookConfigurations; want 1 and 1", len(fixtures.OfKind(objs, "Namespace")), len(fixtures.OfKind(objs, "MutatingWebhookConfiguration")))
	}
	for _, o := range objs {
		if o.GetLabels()[LabelExtension] != Name {
			t.Errorf("%s %s/%s lacks %s=%s", o.GetKind(), o.GetNamespace(), o.GetName(), LabelExtension, Name)
		}
	}
	if got, want := rewriteNamespacesOf(t, r.stdout), []string{"linkerd", "linkerd-multicluster"}; !slices.Equal(got, want) {
		t.Errorf("install: RoleBindings in %v, want %v", got, want)
	}

	// -L (and LINKERD_NAMESPACE) move the default; --set beats the
	// default; the typed flag beats --set; global flags after the command.
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"install", "-L", "linkerd-prod"}, []string{"linkerd-multicluster", "linkerd-prod"}},
		{[]string{"install", "--linkerd-namespace=l5d"}, []string{"l5d", "linkerd-multicluster"}},
		{[]string{"install", "--set", "rewriteNamespaces={mc}", "-L", "linkerd-prod"}, []string{"mc"}},
		{[]string{"install", "--set", "rewriteNamespaces={mc}", "--rewrite-namespaces", "a,b"}, []string{"a", "b"}},
	} {
		r := run(t, "", c.args...)
		if r.code != 0 {
			t.Fatalf("%q: exit %d: %s", c.args, r.code, r.stderr)
		}
		if got := rewriteNamespacesOf(t, r.stdout); !slices.Equal(got, c.want) {
			t.Errorf("%q: RoleBindings in %v, want %v", c.args, got, c.want)
		}
	}

	// -o json: one object per line, the same objects.
	j := run(t, "", "install", "-o", "json")
	lines := strings.Split(strings.TrimSpace(j.stdout), "\n")
	if j.code != 0 || len(lines) != len(objs) {
		t.Fatalf("install -o json: exit %d, %d lines for %d objects", j.code, len(lines), len(objs))
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["kind"] != objs[i].GetKind() {
			t.Errorf("install -o json line %d: %v, kind %v; want %s", i, err, m["kind"], objs[i].GetKind())
		}
	}
}

// -f - reads stdin once, although server composes its values twice (before
// and after reading the token).
func TestValuesFromStdin(t *testing.T) {
	r := run(t, "ingress: {enabled: true, host: stdin.example.com}\n", "server", "home", "--ignore-cluster", "-f", "-")
	if r.code != 0 {
		t.Fatalf("server -f -: exit %d: %s", r.code, r.stderr)
	}
	ing := fixtures.OfKind(objects(t, r.stdout), "Ingress")
	if len(ing) != 1 || !strings.Contains(r.stdout, "stdin.example.com") {
		t.Errorf("server -f - with an ingress from stdin: %d Ingresses, output:\n%s", len(ing), r.stdout)
	}
}

func TestValuesPrecedence(t *testing.T) {
	dir := t.TempDir()
	f1 := filepath.Join(dir, "1.yaml")
	f2 := filepath.Join(dir, "2.yaml")
	logo := filepath.Join(dir, "logo.txt")
	for file, s := range map[string]string{
		f1:   "image: {tag: from-f1, pullPolicy: Always}\nlogLevel: warn\nreplicas: 5\n",
		f2:   "image: {tag: from-f2}\n",
		logo: "file content",
	} {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := &cobra.Command{Use: "test"}
	f := &chartFlags{chart: "l5d-tunnel"}
	f.add(cmd.Flags(), "")
	_ = cmd.Flags().Set("values", f1)
	_ = cmd.Flags().Set("values", f2)
	_ = cmd.Flags().Set("set", "logLevel=debug,extra.list={a,b}")
	_ = cmd.Flags().Set("set-string", "extra.num=007")
	_ = cmd.Flags().Set("set-file", "extra.file="+logo)
	_ = cmd.Flags().Set("replicas", "3")
	_ = cmd.Flags().Set("registry", "registry.example.com/me/")
	cmd.SetIn(strings.NewReader(""))
	vals, err := f.values(cmd, map[string]any{"logLevel": "info", "derived": "kept"}, map[string]any{"typed": 1}, map[string]any{"link": "home"})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{
		"image.tag":        "from-f2", // later file wins
		"image.pullPolicy": "Always",  // merged key by key
		"logLevel":         "debug",   // --set beats files and derived
		"derived":          "kept",    // derived stays when nothing overrides it
		"replicas":         3,         // typed flag beats the file
		"extra.num":        "007",     // --set-string keeps a string
		"extra.file":       "file content",
		"typed":            1,
		"link":             "home",
	} {
		got, ok := lookup(vals, key)
		if !ok || !equalJSON(got, want) {
			t.Errorf("%s = %v (%T), want %v", key, got, got, want)
		}
	}
	if got, _ := lookup(vals, "extra.list"); !equalJSON(got, []any{"a", "b"}) {
		t.Errorf("extra.list = %v", got)
	}
	name, _ := lookup(vals, "image.name")
	if s, _ := name.(string); !strings.HasPrefix(s, "registry.example.com/me/") || strings.Contains(s, "//") || strings.Count(s, "/") != 2 {
		t.Errorf("--registry registry.example.com/me/: image.name = %v, want registry.example.com/me/<image>", name)
	}
}

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func TestServerURLAndCAFile(t *testing.T) {
	for in, want := range map[string]string{
		"wss://h.example.com":            "wss://h.example.com/tunnel",
		"wss://h.example.com/":           "wss://h.example.com/tunnel",
		"ws://10.0.0.1:8080/custom/path": "ws://10.0.0.1:8080/custom/path",
	} {
		got, err := serverURL(in)
		if err != nil || got != want {
			t.Errorf("serverURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"http://h", "wss://", "h.example.com", "wss://u:p@h/tunnel", "wss://h/t#f"} {
		if _, err := serverURL(bad); err == nil {
			t.Errorf("serverURL(%q) accepted", bad)
		}
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, selfSignedPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := readCABundle(ca); err != nil || !bytes.Contains(b, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("readCABundle(a CA): %v", err)
	}
	key := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCABundle(key); err == nil || !strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("readCABundle(a key) = %v; want it refused", err)
	}
}

func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestGlobalsAsGroup: --as-group as a user writes it, and as `linkerd check`
// passes it: pflag's string-array form, "[g1,g2]" as one CSV record
// ("[]" when there is none).
func TestGlobalsAsGroup(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{in: []string{"[]", "", "team"}, want: []string{"team"}},
		{in: []string{"system:masters"}, want: []string{"system:masters"}},
		{in: []string{"[system:masters]"}, want: []string{"system:masters"}},
		{in: []string{`[system:masters,"g,with comma"]`}, want: []string{"system:masters", "g,with comma"}},
		{in: []string{"[a,b]", "c"}, want: []string{"a", "b", "c"}},
	} {
		g := &Globals{AsGroups: tc.in}
		got, err := g.groups()
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("groups() of %q = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	g := &Globals{AsGroups: []string{`[a,"b]`}}
	if got, err := g.groups(); err == nil {
		t.Errorf("groups() of a broken record = %q, want an error", got)
	}
}

func TestVersionClientShort(t *testing.T) {
	r := run(t, "", "version", "--client", "--short")
	if r.code != 0 || r.stdout != cli.Version+"\n" {
		t.Errorf("version --client --short: exit %d, %q; want %q", r.code, r.stdout, cli.Version+"\n")
	}
	r = run(t, "", "version", "--client")
	if r.code != 0 || r.stdout != "Client version: "+cli.Version+"\n" {
		t.Errorf("version --client: exit %d, %q", r.code, r.stdout)
	}
}

func TestImageFlagsReachTheDeployments(t *testing.T) {
	for _, c := range []struct {
		args  []string
		image string
	}{
		{[]string{"install"}, "webhook"},
		{[]string{"server", "home", "--ignore-cluster"}, "tunnel"},
	} {
		args := append(c.args, "--registry", "registry.example.com/me", "--image-tag", "v9.9.9",
			"--image-pull-policy", "Always", "--replicas", "3")
		r := run(t, "", args...)
		if r.code != 0 {
			t.Fatalf("%q: exit %d: %s", args, r.code, r.stderr)
		}
		deps := fixtures.OfKind(objects(t, r.stdout), "Deployment")
		if len(deps) != 1 {
			t.Fatalf("%q: %d Deployments, want 1", args, len(deps))
		}
		replicas, _, _ := unstructured.NestedFieldNoCopy(deps[0].Object, "spec", "replicas")
		ctrs, _, _ := unstructured.NestedSlice(deps[0].Object, "spec", "template", "spec", "containers")
		ctr := ctrs[0].(map[string]any)
		want := "registry.example.com/me/" + c.image + ":v9.9.9"
		if ctr["image"] != want || ctr["imagePullPolicy"] != "Always" || fmt.Sprint(replicas) != "3" {
			t.Errorf("%q: image %v, pull policy %v, replicas %v; want %s, Always, 3", args, ctr["image"], ctr["imagePullPolicy"], replicas, want)
		}
	}
}
