// Package webhook is the runtime of the webhook binary (cmd/webhook): its
// flags (Options), the controller-runtime manager (Run), the admission
// Handler served on the three paths of docs/design.md, and the
// leader-elected Reconciler. The rewrite decisions live in pkg/mutate.
// cmd/webhook imports it; internal/healthcheck and the manifests and e2e
// tests import it for its contract names (Options, Paths, EnvPodNamespace,
// Event reasons, the check echo).
package webhook
