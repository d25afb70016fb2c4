package mutate

import "slices"

// OptedIn is the webhook's opt-in rule: a namespace is rewritten when its
// name is one of rewriteNamespaces (the webhook's --rewrite-namespaces) or
// it is labelled LabelRewrite=LabelRewriteEnabled. The webhook and
// `linkerd-tunnel check` both ask this function.
func OptedIn(name string, labels map[string]string, rewriteNamespaces []string) bool {
	return slices.Contains(rewriteNamespaces, name) || labels[LabelRewrite] == LabelRewriteEnabled
}
