package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// LeaderElectionID names the reconciler's Lease.
const LeaderElectionID = "l5d-tunnel-webhook"

// Main runs the binary: it parses args, builds the logger and runs until ctx
// ends. It returns the exit code: 0, 1 on a runtime error, 2 on bad flags.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := Parse(args, stdout)
	if errors.Is(err, pflag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "webhook: %s\n", line)
		}
		fmt.Fprintln(stderr, "Run 'webhook --help' for usage.")
		return cli.ExitUsage
	}
	log, err := cli.NewLogger(stderr, o.LogFormat, o.LogLevel)
	if err != nil { // Validate checked both; kept for safety
		fmt.Fprintf(stderr, "webhook: %v\n", err)
		return cli.ExitUsage
	}
	if err := Run(ctx, o, log); err != nil {
		log.Error("webhook stopped", "error", err)
		return cli.ExitFailure
	}
	return 0
}

// restConfig loads --kubeconfig, else the in-cluster configuration (then
// $KUBECONFIG and ~/.kube/config, as controller-runtime does).
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load --kubeconfig %q: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("load in-cluster configuration (or pass --kubeconfig): %w", err)
	}
	return cfg, nil
}

// Run builds the manager and serves until ctx ends.
func Run(ctx context.Context, o Options, log *slog.Logger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	lr := logr.FromSlogHandler(log.Handler())
	ctrl.SetLogger(lr)
	klog.SetLogger(lr)

	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	// The reconciler lists three kinds per opted-in namespace on every
	// binding change: client-go's default 5 QPS would throttle it.
	cfg.QPS, cfg.Burst = 50, 100
	mgr, err := newManager(cfg, o, log)
	if err != nil {
		return err
	}
	log.Info("starting webhook", "version", cli.Version, "port", o.Port, "bindAddress", o.BindAddress, "certDir", o.CertDir,
		"trustedNamespaces", o.TrustedNamespaces, "clusterDomain", o.Mutate.ClusterDomain,
		"leaderElect", o.LeaderElect, "resyncPeriod", o.ResyncPeriod.String(),
		"gatewayReadyAddresses", o.GatewayAddresses, "gatewayDebounce", o.GatewayDebounce.String())
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// newManager builds the controller-runtime manager with the webhook server,
// the reconciler, health checks and metrics.
func newManager(cfg *rest.Config, o Options, log *slog.Logger) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("build scheme: %w", err)
	}
	hasLink, err := labels.NewRequirement(mutate.LabelLink, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("binding selector: %w", err)
	}
	trusted := make(map[string]cache.Config, len(o.TrustedNamespaces))
	for _, ns := range o.TrustedNamespaces {
		trusted[ns] = cache.Config{}
	}
	resync := o.ResyncPeriod
	byObject := map[client.Object]cache.ByObject{
		&corev1.Service{}: {Namespaces: trusted, Label: labels.NewSelector().Add(*hasLink)},
		// Every Namespace (metadata only): opted in by name or by label.
		namespaceMeta(): {},
	}
	informers := []client.Object{&corev1.Service{}, namespaceMeta()}
	if o.GatewayAddresses {
		// The ready tunnel-server addresses: EndpointSlices of Services
		// in the trusted namespaces only (granted there, like Services).
		hasService, err := labels.NewRequirement(mutate.LabelServiceName, selection.Exists, nil)
		if err != nil {
			return nil, fmt.Errorf("EndpointSlice selector: %w", err)
		}
		byObject[&discoveryv1.EndpointSlice{}] = cache.ByObject{Namespaces: trusted, Label: labels.NewSelector().Add(*hasService)}
		informers = append(informers, &discoveryv1.EndpointSlice{})
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Cache: cache.Options{
			SyncPeriod: &resync,
			// Only the informers above exist: a Get of another kind
			// through the cache fails instead of starting a cluster-wide
			// informer (no cluster-wide Secret cache, ever).
			ReaderFailOnMissingInformer: true,
			ByObject:                    byObject,
		},
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress: o.HealthAddr,
		WebhookServer: crwebhook.NewServer(crwebhook.Options{
			Host:    o.BindAddress,
			Port:    o.Port,
			CertDir: o.CertDir,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) {
				// HTTP/1.1 only: the API server does not need HTTP/2 and
				// it keeps the HTTP/2 stream-reset attacks away.
				c.NextProtos = []string{"http/1.1"}
				c.MinVersion = tls.VersionTLS12
			}},
		}),
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       o.leaderElectionNamespace(),
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	lookup := &CacheLookup{Cache: mgr.GetCache(), Trusted: o.TrustedNamespaces, RewriteNamespaces: o.RewriteNamespaces, GatewayAddresses: o.GatewayAddresses}
	// Create the informers now: the webhook serves on every replica, not
	// only on the leader whose controller would otherwise create them.
	for _, obj := range informers {
		if _, err := mgr.GetCache().GetInformer(context.Background(), obj); err != nil {
			return nil, fmt.Errorf("create informer for %T: %w", obj, err)
		}
	}

	h := &Handler{Bindings: lookup, Namespaces: lookup, Options: o.Mutate, Log: log.With("component", "admission")}
	srv := mgr.GetWebhookServer()
	recoverPanic := true
	for _, p := range Paths {
		srv.Register(p, &admission.Webhook{Handler: h, RecoverPanic: &recoverPanic})
	}

	rec := &Reconciler{
		Lookup:   lookup,
		Reader:   mgr.GetAPIReader(),
		Writer:   mgr.GetClient(),
		Mapper:   mgr.GetRESTMapper(),
		Events:   mgr.GetEventRecorder("l5d-tunnel-webhook"),
		Options:  o.Mutate,
		Debounce: o.GatewayDebounce,
		Log:      log.With("component", "reconciler"),
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up reconciler: %w", err)
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
		return nil, fmt.Errorf("add readyz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("informers", func(r *http.Request) error {
		// Not ready before the informers synced: an earlier answer could
		// miss a binding and let an object through unrewritten.
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		return lookup.waitSynced(ctx)
	}); err != nil {
		return nil, fmt.Errorf("add readyz check: %w", err)
	}
	return mgr, nil
}
