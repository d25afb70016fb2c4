package harness

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// The real service mirror dials the probe Service by its bare name through
// the pod's search path; the hosts file must answer that name like the FQDN.
func TestCloudHostsResolveBareNamesInTheMirrorNamespace(t *testing.T) {
	b := Binding{Binding: mutate.Binding{Service: "home-tunnel-server", Headless: "home-tunnel-server-gateway", Namespace: "l5d-tunnel"}}
	ext := func(name, ns, target string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: target}}
	}
	lines := cloudHosts(b, []corev1.Service{
		ext("probe-home", serviceMirrorNamespace, b.ServiceFQDN()+"."),                 // newest
		ext("probe-gateway-home", serviceMirrorNamespace, b.ServiceFQDN()),             // 2.12/2.14
		ext("elsewhere", "demo", b.ServiceFQDN()),                                      // other namespace: FQDN only
		ext("unresolved", serviceMirrorNamespace, "nowhere.example.svc.cluster.local"), // target does not resolve
		{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: serviceMirrorNamespace}},
	})
	for _, want := range []string{
		TunnelPodIP + " probe-home",
		TunnelPodIP + " probe-home.linkerd-multicluster.svc.cluster.local",
		TunnelPodIP + " probe-gateway-home",
		TunnelPodIP + " probe-gateway-home.linkerd-multicluster.svc.cluster.local",
		TunnelPodIP + " elsewhere.demo.svc.cluster.local",
		TunnelPodIP + " " + b.ServiceFQDN(),
		TunnelPodIP + " " + b.HeadlessFQDN(),
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("missing %q in %q", want, lines)
		}
	}
	for _, l := range lines {
		switch name := strings.Fields(l)[1]; name {
		case "elsewhere", "unresolved", "plain", "unresolved.linkerd-multicluster.svc.cluster.local", "plain.linkerd-multicluster.svc.cluster.local":
			t.Errorf("unexpected line %q", l)
		}
	}
}
