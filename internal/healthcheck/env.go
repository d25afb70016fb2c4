package healthcheck

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/extension"
)

// Categories of the report.
const (
	CategoryExtension = "linkerd-tunnel"
	CategoryPre       = "linkerd-tunnel-pre"
	CategoryWebhook   = "linkerd-tunnel-webhook"
	CategoryLinks     = "linkerd-tunnel-links"
	CategoryClient    = "linkerd-tunnel-client"
)

// The labels check finds the extension's workloads by (besides
// extension.LabelExtension=extension.Name, which every rendered object has).
const (
	LabelComponent   = "app.kubernetes.io/component"
	ComponentWebhook = "webhook"
	ComponentClient  = "tunnel-client"
)

// env is one run's view of the cluster: the client and what the checks
// found so far (later checks build on earlier ones, as in Linkerd).
type env struct {
	g   *extension.Globals
	cfg *rest.Config
	c   client.Client
	now func() time.Time

	extNamespaces []string
	webhook       *appsv1.Deployment
	wcfg          *webhookConfig
	clients       []appsv1.Deployment
	serving       *servingCert
}

func newEnv(g *extension.Globals) *env { return &env{g: g, now: time.Now} }

// categories lists what to run: the pre-installation checks with --pre,
// else the extension's checks of the side(s) installed in this cluster.
func (e *env) categories(pre bool) []*Category {
	base := []Checker{
		{Description: "can initialize the client", Anchor: "client", Fatal: true, Check: e.initClient},
		{Description: "can query the Kubernetes API", Anchor: "api", Fatal: true, Check: e.queryAPI},
	}
	if pre {
		return []*Category{{Name: CategoryPre, Checks: append(base,
			Checker{Description: "cert-manager is installed (needed in the cloud cluster)", Anchor: "pre-cert-manager", Warning: true,
				Check: e.crdExists("certificates.cert-manager.io", "install cert-manager in the cloud cluster before `linkerd tunnel install`")},
			Checker{Description: "the Link CRD is installed (needed in the cloud cluster)", Anchor: "pre-link-crd", Warning: true,
				Check: e.crdExists("links.multicluster.linkerd.io", "install Linkerd's multicluster extension in the cloud cluster (`linkerd multicluster install`)")},
		)}}
	}
	return []*Category{
		{Name: CategoryExtension, Checks: append(base,
			Checker{Description: "tunnel extension Namespace exists", Anchor: "ext-namespace", Fatal: true, Check: e.findNamespaces},
			Checker{Description: "tunnel webhook or tunnel client is installed", Anchor: "ext-components", Fatal: true, Check: e.findComponents},
		)},
		{Name: CategoryWebhook, Expand: e.webhookChecks},
		{Name: CategoryLinks, Expand: e.linkChecks},
		{Name: CategoryClient, Expand: e.clientChecks},
	}
}

func (e *env) initClient(context.Context) error {
	cfg, err := e.g.RESTConfig()
	if err != nil {
		return fmt.Errorf("%w; pass --kubeconfig or --context", err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	e.cfg, e.c = cfg, c
	return nil
}

func (e *env) queryAPI(ctx context.Context) error {
	var ns corev1.NamespaceList
	if err := e.c.List(ctx, &ns, client.Limit(1)); err != nil {
		return fmt.Errorf("cannot list Namespaces: %w", err)
	}
	return nil
}

// crdExists checks that a CustomResourceDefinition is installed.
func (e *env) crdExists(name, todo string) func(context.Context) error {
	return func(ctx context.Context) error {
		crd := &unstructured.Unstructured{}
		crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
		if err := e.c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return fmt.Errorf("the CustomResourceDefinition %s: %w; %s", name, err, todo)
		}
		return nil
	}
}

func extensionSelector() client.MatchingLabels {
	return client.MatchingLabels{extension.LabelExtension: extension.Name}
}

func (e *env) findNamespaces(ctx context.Context) error {
	var list corev1.NamespaceList
	if err := e.c.List(ctx, &list, extensionSelector()); err != nil {
		return fmt.Errorf("cannot list Namespaces: %w", err)
	}
	e.extNamespaces = nil
	for _, ns := range list.Items {
		e.extNamespaces = append(e.extNamespaces, ns.Name)
	}
	if len(e.extNamespaces) == 0 {
		return fmt.Errorf("no Namespace is labelled %s=%s: install the extension (cloud: `linkerd tunnel install | kubectl apply -f -`; home: `linkerd tunnel client NAME --server-url URL | kubectl apply -f -`)",
			extension.LabelExtension, extension.Name)
	}
	return nil
}

// components lists the extension's Deployments of one component.
func (e *env) components(ctx context.Context, component string) ([]appsv1.Deployment, error) {
	var list appsv1.DeploymentList
	if err := e.c.List(ctx, &list, client.MatchingLabels{extension.LabelExtension: extension.Name, LabelComponent: component}); err != nil {
		return nil, fmt.Errorf("cannot list Deployments: %w", err)
	}
	slices.SortFunc(list.Items, func(a, b appsv1.Deployment) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return list.Items, nil
}

func (e *env) findComponents(ctx context.Context) error {
	hooks, err := e.components(ctx, ComponentWebhook)
	if err != nil {
		return err
	}
	clients, err := e.components(ctx, ComponentClient)
	if err != nil {
		return err
	}
	switch {
	case len(hooks) > 1:
		return fmt.Errorf("found %d webhook Deployments (%s): install the webhook once per cluster (`linkerd tunnel uninstall` the extra ones)",
			len(hooks), deploymentNames(hooks))
	case len(hooks) == 0 && len(clients) == 0:
		return fmt.Errorf("no Deployment labelled %s=%s with %s=%s or %s in namespaces %s: install the webhook in the cloud cluster (`linkerd tunnel install | kubectl apply -f -`) or a tunnel client in the home cluster (`linkerd tunnel client NAME --server-url URL | kubectl apply -f -`)",
			extension.LabelExtension, extension.Name, LabelComponent, ComponentWebhook, ComponentClient, strings.Join(e.extNamespaces, ", "))
	}
	e.webhook, e.wcfg = nil, nil
	if len(hooks) == 1 {
		e.webhook = &hooks[0]
		cfg, err := parseWebhookConfig(e.webhook)
		if err != nil {
			return err
		}
		e.wcfg = cfg
	}
	e.clients = clients
	return nil
}

func deploymentNames(ds []appsv1.Deployment) string {
	names := make([]string, len(ds))
	for i := range ds {
		names[i] = ds[i].Namespace + "/" + ds[i].Name
	}
	return strings.Join(names, ", ")
}

// deploymentAvailable reads a Deployment again and fails unless at least
// one replica is available (its readiness probe passes).
func (e *env) deploymentAvailable(ctx context.Context, key client.ObjectKey, todo string) error {
	var d appsv1.Deployment
	if err := e.c.Get(ctx, key, &d); err != nil {
		return fmt.Errorf("the Deployment %s: %w", key, err)
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	if want == 0 {
		return fmt.Errorf("the Deployment %s is scaled to 0 replicas: scale it up (`kubectl scale deployment -n %s %s --replicas=2`)", key, key.Namespace, key.Name)
	}
	if d.Status.AvailableReplicas < 1 {
		return fmt.Errorf("no replica of Deployment %s is available (%d/%d ready, %d updated): %s",
			key, d.Status.ReadyReplicas, want, d.Status.UpdatedReplicas, todo)
	}
	return nil
}
