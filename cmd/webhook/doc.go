// Command webhook is the l5d-tunnel mutating admission webhook and
// reconciler (docs/webhook.md); it owns only main: the command line and the
// runtime are internal/webhook's. Nothing imports it.
package main
