package webhook

import (
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

func TestCheckEcho(t *testing.T) {
	probe := func(nonce string) *unstructured.Unstructured {
		u := newestObject(t, mutate.KindProbe, "")
		if _, cluster := mutate.Classify(u); cluster != "home" {
			t.Fatalf("the newest fixture's probe Service is of cluster %q, want home", cluster)
		}
		if nonce != "" {
			u.SetAnnotations(map[string]string{mutate.AnnotationCheck: nonce})
		}
		return u
	}
	h := newHandler(fakeBindings{b: map[string]*mutate.Binding{"home": testBinding("home")}}, fakeNamespaces{out: map[string]bool{"closed": true}})
	for _, tc := range []struct {
		name   string
		obj    *unstructured.Unstructured
		dryRun bool
		want   string // "" = no echo
	}{
		{"dry-run, rewritten", probe("abc-123"), true, "l5d-tunnel: check abc-123: mutated"},
		{"not a dry-run", probe("abc-123"), false, ""},
		{"no annotation", probe(""), true, ""},
		{"nonce with spaces", probe("a b"), true, ""},
		{"not opted in", func() *unstructured.Unstructured { u := probe("n1"); u.SetNamespace("closed"); return u }(), true, "l5d-tunnel: check n1: ignored"},
		{"no binding", func() *unstructured.Unstructured {
			u := probe("n2")
			l := u.GetLabels()
			l[mutate.LinkerdLabelClusterName] = "other"
			u.SetLabels(l)
			return u
		}(), true, "l5d-tunnel: check n2: unchanged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, admissionv1.Create, tc.obj)
			req.DryRun = ptr.To(tc.dryRun)
			resp := h.Handle(t.Context(), req)
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			var echo []string
			for _, w := range resp.Warnings {
				if len(w) >= len(CheckEchoPrefix) && w[:len(CheckEchoPrefix)] == CheckEchoPrefix {
					echo = append(echo, w)
				}
			}
			switch {
			case tc.want == "" && len(echo) > 0:
				t.Errorf("warnings %q; want no echo", resp.Warnings)
			case tc.want != "" && (len(echo) != 1 || echo[0] != tc.want):
				t.Errorf("warnings %q; want exactly one echo %q", resp.Warnings, tc.want)
			}
		})
	}
}
