package webhook

import (
	"encoding/json"

	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// CheckEchoPrefix starts the warning that answers a dry-run request whose
// object carries mutate.AnnotationCheck: "l5d-tunnel: check <value>: <result>",
// where result is mutated, unchanged, ignored (not a link object, or a
// namespace the handler does not treat as opted in) or warning. It lets
// `linkerd-tunnel check` prove that the API server calls this webhook and
// how the handler saw the namespace, even when no cluster is linked yet.
const CheckEchoPrefix = WarningPrefix + "check "

// Admission results the check echo reports.
const (
	ResultMutated   = resultMutated
	ResultUnchanged = resultUnchanged
	ResultIgnored   = resultIgnored
	ResultWarning   = resultWarning
)

// checkEcho returns the echo warning for req, or "" when req is not a
// dry-run or its object has no (usable) check annotation. Only the
// annotations are decoded; nothing else of the object is read.
func checkEcho(req admission.Request, result string) string {
	if req.DryRun == nil || !*req.DryRun || len(req.Object.Raw) == 0 {
		return ""
	}
	var meta struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if json.Unmarshal(req.Object.Raw, &meta) != nil {
		return ""
	}
	nonce := meta.Metadata.Annotations[mutate.AnnotationCheck]
	if !echoable(nonce) {
		return ""
	}
	return CheckEchoPrefix + nonce + ": " + result
}

// echoable accepts 1-64 letters, digits and dashes, so the echo never
// carries text a client could mistake for something else.
func echoable(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}
