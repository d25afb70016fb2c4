package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
)

// CertManagerVersion is the cert-manager release whose CRDs (shipped in its
// Go module under deploy/crds/) the manifest tests install.
const CertManagerVersion = "v1.21.2"

// TB is the part of testing.TB this package uses; every *testing.T and
// *testing.B is one. Taking it instead of testing.TB keeps the testing
// package out of the binaries that import testenv (e2e/cmd/demo).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// BinDir returns the folder holding kube-apiserver, kube-controller-manager,
// kubectl and etcd: KUBEBUILDER_ASSETS when it holds them, else the cache
// hack/build-tools.sh fills (building on first use).
func BinDir() (string, error) {
	binOnce.Do(func() {
		if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" && hasAll(d) {
			binDir = d
			return
		}
		cmd := exec.Command(filepath.Join(repo.Root(), "hack", "build-tools.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			binErr = fmt.Errorf("hack/build-tools.sh: %w", err)
			return
		}
		binDir = strings.TrimSpace(string(out))
		if !hasAll(binDir) {
			binErr = fmt.Errorf("hack/build-tools.sh printed %q, which lacks the control-plane binaries", binDir)
		}
	})
	return binDir, binErr
}

func hasAll(dir string) bool {
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl", "kube-controller-manager"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// Bin returns the path of one control-plane binary, failing the test when it
// cannot be had.
func Bin(t TB, name string) string {
	t.Helper()
	d, err := BinDir()
	if err != nil {
		t.Fatalf("control-plane binaries: %v", err)
	}
	return filepath.Join(d, name)
}

// Options choose what a test control plane comes with.
type Options struct {
	// LinkCRD installs Linkerd's Link CRD: "newest" (v1alpha1..v1alpha3, the
	// default) or "2.14" (v1alpha1 only), from internal/fixtures.
	LinkCRD string
	// CertManagerCRDs installs cert-manager's CRDs.
	CertManagerCRDs bool
	// Webhooks configures envtest's webhook installation (the
	// MutatingWebhookConfiguration YAML paths, local serving host/port...).
	Webhooks envtest.WebhookInstallOptions
	// APIServerFlags are extra kube-apiserver flags ("--name=value").
	APIServerFlags []string
}

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	Config     *rest.Config
	Client     client.Client
	Kubeconfig string // path of an admin kubeconfig file
	kubectl    string
}

// Start starts a control plane and stops it when the test ends.
func Start(t TB, o Options) *Env {
	t.Helper()
	dir, err := BinDir()
	if err != nil {
		t.Fatalf("control-plane binaries: %v", err)
	}
	crds, err := CRDs(o)
	if err != nil {
		t.Fatal(err)
	}
	e := &envtest.Environment{
		BinaryAssetsDirectory:    dir,
		CRDs:                     crds,
		ErrorIfCRDPathMissing:    true,
		WebhookInstallOptions:    o.Webhooks,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	api := e.ControlPlane.GetAPIServer()
	for _, f := range o.APIServerFlags {
		name, value, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		api.Configure().Append(name, value)
	}
	cfg, err := e.Start()
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Logf("stop control plane: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	user, err := e.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return &Env{Environment: e, Config: cfg, Client: c, Kubeconfig: path, kubectl: filepath.Join(dir, "kubectl")}
}

// Kubectl runs kubectl against the control plane with stdin as input and
// returns its stdout; stderr is folded into the error.
func (e *Env) Kubectl(stdin []byte, args ...string) ([]byte, error) {
	out, _, err := e.KubectlStderr(stdin, args...)
	return out, err
}

// KubectlStderr is Kubectl that also returns stderr, where kubectl prints
// the warnings of admission webhooks ("Warning: ...").
func (e *Env) KubectlStderr(stdin []byte, args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.Command(e.kubectl, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var eb bytes.Buffer
	cmd.Stderr = &eb
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, eb.String())
	}
	return out, eb.Bytes(), err
}

// CRDs returns the CRDs a control plane with these options gets.
func CRDs(o Options) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	file := "link-crd-newest.yaml"
	if o.LinkCRD == "2.14" {
		file = "link-crd-2.14.yaml"
	}
	raw, err := fixtures.Raw("crds", file)
	if err != nil {
		return nil, err
	}
	crds, err := decodeCRDs(raw)
	if err != nil {
		return nil, fmt.Errorf("the Link CRD %s: %w", file, err)
	}
	out = append(out, crds...)
	if o.CertManagerCRDs {
		cm, err := CertManagerCRDs()
		if err != nil {
			return nil, err
		}
		out = append(out, cm...)
	}
	return out, nil
}

// CertManagerCRDDir returns deploy/crds of cert-manager's Go module,
// downloading the module through the Go module proxy on first use.
func CertManagerCRDDir() (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", "github.com/cert-manager/cert-manager@"+CertManagerVersion)
	cmd.Dir = filepath.Join(repo.Root(), "hack", "tools")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download cert-manager %s: %w", CertManagerVersion, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", err
	}
	if m.Error != "" {
		return "", fmt.Errorf("go mod download cert-manager: %s", m.Error)
	}
	return filepath.Join(m.Dir, "deploy", "crds"), nil
}

// CertManagerCRDs loads cert-manager's CRDs.
func CertManagerCRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	dir, err := CertManagerCRDDir()
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no CRDs in %s", dir)
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		crds, err := decodeCRDs(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, crds...)
	}
	return out, nil
}

func decodeCRDs(raw []byte) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	objs, err := fixtures.Decode(raw)
	if err != nil {
		return nil, err
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		js, err := o.MarshalJSON()
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(js, crd); err != nil {
			return nil, err
		}
		out = append(out, crd)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CustomResourceDefinition found")
	}
	return out, nil
}
