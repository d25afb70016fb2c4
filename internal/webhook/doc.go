// Package webhook is the runtime of the webhook binary (cmd/webhook): its
// flags (Options), the controller-runtime manager (Run), the admission
// Handler served on the three paths of docs/design.md, and the
// leader-elected Reconciler. The rewrite decisions live in pkg/mutate.
// Only cmd/webhook imports it, and tests that check the manifests and the
// e2e against its names (Paths, EnvPodNamespace, Event reasons).
package webhook
