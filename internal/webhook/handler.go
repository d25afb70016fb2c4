package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// The admission paths (docs/design.md). All three are served by the same
// Handler: what to do is decided from the object, not from the path.
const (
	PathService = "/mutate-v1-service"
	PathSecret  = "/mutate-v1-secret"
	PathLink    = "/mutate-multicluster-linkerd-io-link"
)

// Paths lists every admission path the webhook serves.
var Paths = []string{PathService, PathSecret, PathLink}

// WarningPrefix starts every admission warning the webhook returns, so users
// see where a "Warning:" line printed by kubectl comes from.
const WarningPrefix = "l5d-tunnel: "

// Handler is the mutating admission handler. It never denies: objects it
// cannot or must not rewrite are admitted unchanged, with a warning when the
// input or the binding is bad. Dry-run requests are handled the same way
// (the handler has no side effects).
type Handler struct {
	Bindings   Bindings
	Namespaces Namespaces
	Options    mutate.Options
	Log        *slog.Logger
}

var _ admission.Handler = (*Handler)(nil)

// Handle implements admission.Handler.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	resp, kind, result := h.handle(ctx, req)
	admissionsTotal.WithLabelValues(string(kindLabel(kind)), result).Inc()
	if w := checkEcho(req, result); w != "" {
		resp.Warnings = append(resp.Warnings, w)
	}
	return resp
}

func kindLabel(k mutate.Kind) mutate.Kind {
	if k == mutate.KindNone {
		return "none"
	}
	return k
}

func (h *Handler) handle(ctx context.Context, req admission.Request) (admission.Response, mutate.Kind, string) {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed(""), mutate.KindNone, resultIgnored
	}
	log := h.Log.With("uid", string(req.UID), "operation", string(req.Operation),
		"resource", req.Resource.Resource, "namespace", req.Namespace, "name", req.Name)
	if req.DryRun != nil && *req.DryRun {
		log = log.With("dryRun", true)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(req.Object.Raw); err != nil {
		// Never log err itself: some decode errors quote the whole
		// object, and it may be a Secret.
		log.Warn("admitted unchanged: object does not decode", "reason", decodeReason(err), "bytes", len(req.Object.Raw))
		return warn(fmt.Sprintf("%s %s/%s does not decode as a Kubernetes object; left unchanged", req.Kind.Kind, req.Namespace, req.Name)), mutate.KindNone, resultWarning
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace(req.Namespace)
	}
	kind, cluster := mutate.Classify(obj)
	if kind == mutate.KindNone {
		return admission.Allowed(""), kind, resultIgnored
	}
	log = log.With("kind", string(kind), "cluster", cluster)

	// The webhook configuration's namespaceSelector already limits requests
	// to opted-in namespaces; check again so that a hand-edited
	// configuration cannot widen what is rewritten.
	in, err := h.Namespaces.OptedIn(ctx, req.Namespace)
	if err != nil {
		log.Error("admitted unchanged: cannot tell whether the namespace opted in", "error", err)
		return warn(fmt.Sprintf("cannot tell whether namespace %q opted in (%v); left unchanged, the reconciler will retry", req.Namespace, err)), kind, resultWarning
	}
	if !in {
		log.Debug("namespace did not opt in", "label", mutate.LabelRewrite+"="+mutate.LabelRewriteEnabled)
		return admission.Allowed(""), kind, resultIgnored
	}

	b, err := h.Bindings.Binding(ctx, cluster)
	switch {
	case errors.Is(err, mutate.ErrUntrustedBinding):
		log.Warn("binding ignored", "reason", err.Error())
		b, err = nil, nil
	case err != nil:
		log.Warn("admitted unchanged: no usable tunnel binding", "error", err)
		return warn(fmt.Sprintf("%s/%s of cluster %q left unchanged: %v", req.Namespace, req.Name, cluster, err)), kind, resultWarning
	}

	out, changed, warnings, err := mutate.Mutate(obj, b, h.Options)
	if err != nil {
		log.Error("admitted unchanged: rewrite failed", "error", err)
		return warn(fmt.Sprintf("%s/%s left unchanged: %v", req.Namespace, req.Name, err)), kind, resultWarning
	}
	for _, w := range warnings {
		log.Warn("rewrite warning", "warning", w)
	}
	if !changed {
		log.Debug("no change", "binding", b.String())
		resp := admission.Allowed("").WithWarnings(prefixed(warnings)...)
		if len(warnings) > 0 {
			return resp, kind, resultWarning
		}
		return resp, kind, resultUnchanged
	}
	js, err := out.MarshalJSON()
	if err != nil {
		log.Error("admitted unchanged: cannot encode the rewritten object", "error", err)
		return warn(fmt.Sprintf("%s/%s left unchanged: cannot encode the rewritten object", req.Namespace, req.Name)), kind, resultWarning
	}
	resp := admission.PatchResponseFromRaw(req.Object.Raw, js)
	if !resp.Allowed {
		log.Error("admitted unchanged: cannot compute the patch", "error", resp.Result.Message)
		return warn(fmt.Sprintf("%s/%s left unchanged: cannot compute the patch", req.Namespace, req.Name)), kind, resultWarning
	}
	if b == nil {
		log.Info("restored originals (no binding)")
	} else {
		log.Info("rewritten for tunnel binding", "binding", b.String())
	}
	return resp.WithWarnings(prefixed(warnings)...), kind, resultMutated
}

// decodeReason says why an object did not decode without quoting it.
func decodeReason(err error) string {
	var syntax *json.SyntaxError
	switch {
	case runtime.IsMissingKind(err):
		return "no kind"
	case runtime.IsMissingVersion(err):
		return "no apiVersion"
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d", syntax.Offset)
	}
	return fmt.Sprintf("not a JSON object (%T)", err)
}

func warn(msg string) admission.Response {
	return admission.Allowed("").WithWarnings(WarningPrefix + msg)
}

func prefixed(ws []string) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = WarningPrefix + w
	}
	return out
}
