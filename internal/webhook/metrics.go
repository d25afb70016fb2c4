package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Admission results (label "result" of admissionsTotal).
const (
	resultMutated   = "mutated"   // a patch was returned
	resultUnchanged = "unchanged" // a link object that needed no change
	resultIgnored   = "ignored"   // not a link object, or not in an opted-in namespace
	resultWarning   = "warning"   // bad input or binding: admitted unchanged with a warning
)

var (
	admissionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "l5d_tunnel_webhook_admissions_total",
		Help: "Admission requests handled, by object kind (probe, link, credentials, none) and result (mutated, unchanged, ignored, warning).",
	}, []string{"kind", "result"})
	reconcileUpdatesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "l5d_tunnel_webhook_reconcile_updates_total",
		Help: "Objects the reconciler updated, by kind and action (rewrite, restore).",
	}, []string{"kind", "action"})
	reconcileErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "l5d_tunnel_webhook_reconcile_errors_total",
		Help: "Reconciler errors, by kind (probe, link, credentials, binding) and reason (forbidden, conflict, invalid, api).",
	}, []string{"kind", "reason"})
	bindingsGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "l5d_tunnel_webhook_bindings",
		Help: "Usable tunnel bindings (clusters) in trusted namespaces, as of the last reconcile.",
	})
	linkUpdatesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "l5d_tunnel_webhook_link_updates_total",
		Help: "Link updates the reconciler made, by binding (<namespace>/<Service>) and whether spec.gatewayAddress changed (gateway=changed|same); each update with a changed spec restarts the link's service mirror watcher.",
	}, []string{"binding", "gateway"})
	gatewayReadyGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "l5d_tunnel_webhook_gateway_ready_addresses",
		Help: "Ready tunnel-server addresses of each binding's headless Service (<namespace>/<Service>), as of the last reconcile; 0 means Links name the headless Service.",
	}, []string{"binding"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(admissionsTotal, reconcileUpdatesTotal, reconcileErrorsTotal, bindingsGauge,
		linkUpdatesTotal, gatewayReadyGauge)
}
