// Package webhook is the runtime of the webhook binary (cmd/webhook): its
// flags (Options), the controller-runtime manager (Run), the admission
// Handler served on the three paths of docs/design.md, and the
// leader-elected Reconciler. The rewrite decisions live in pkg/mutate.
package webhook
