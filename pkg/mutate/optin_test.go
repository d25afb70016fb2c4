package mutate

import "testing"

func TestOptedIn(t *testing.T) {
	named := []string{"linkerd-multicluster", "linkerd"}
	label := map[string]string{LabelRewrite: LabelRewriteEnabled}
	for name, tc := range map[string]struct {
		ns     string
		labels map[string]string
		want   bool
	}{
		"named":                  {ns: "linkerd", want: true},
		"labelled":               {ns: "demo", labels: label, want: true},
		"named and labelled":     {ns: "linkerd-multicluster", labels: label, want: true},
		"neither":                {ns: "demo"},
		"label with other value": {ns: "demo", labels: map[string]string{LabelRewrite: "disabled"}},
		"prefix of a name":       {ns: "linker"},
	} {
		if got := OptedIn(tc.ns, tc.labels, named); got != tc.want {
			t.Errorf("%s: OptedIn(%q, %v) = %v, want %v", name, tc.ns, tc.labels, got, tc.want)
		}
	}
}
