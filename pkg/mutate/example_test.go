package mutate_test

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// A webhook or reconciler classifies the object, looks up the binding of its
// cluster among the labelled Services, and stores what Mutate returns.
func ExampleMutate() {
	link := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.linkerd.io/v1alpha3",
		"kind":       "Link",
		"metadata":   map[string]any{"name": "home", "namespace": "linkerd-multicluster"},
		"spec": map[string]any{
			"targetClusterName": "home",
			"gatewayAddress":    "203.0.113.10",
			"gatewayPort":       "4143",
			"probeSpec":         map[string]any{"path": "/ready", "port": "4191"},
		},
	}}
	labels := map[string]string{mutate.LabelLink: "home"}
	services := []corev1.Service{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "linkerd-tunnel", Name: "tunnel-home", Labels: labels},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{
			{Name: mutate.PortAPI, Port: 6443}, {Name: mutate.PortProbe, Port: 14191}}},
	}, {
		ObjectMeta: metav1.ObjectMeta{Namespace: "linkerd-tunnel", Name: "tunnel-home-gw", Labels: labels},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{
			{Name: mutate.PortGateway, Port: 4143, TargetPort: intstr.FromInt32(14143)}}},
	}}

	kind, cluster := mutate.Classify(link)
	b, err := mutate.FindBinding(cluster, services, []string{"linkerd-tunnel"})
	if err != nil {
		fmt.Println("binding:", err)
		return
	}
	out, changed, warnings, err := mutate.Mutate(link, b, mutate.DefaultOptions())
	if err != nil {
		fmt.Println("mutate:", err)
		return
	}
	spec := out.Object["spec"].(map[string]any)
	fmt.Println(kind, cluster, changed, len(warnings))
	fmt.Println(spec["gatewayAddress"], spec["gatewayPort"], spec["probeSpec"].(map[string]any)["port"])
	fmt.Println(out.GetAnnotations()[mutate.AnnotationOriginalGatewayAddress])

	restored, _, _, _ := mutate.Mutate(out, nil, mutate.DefaultOptions())
	fmt.Println(restored.Object["spec"].(map[string]any)["gatewayAddress"], len(restored.GetAnnotations()))
	// Output:
	// link home true 0
	// tunnel-home-gw.linkerd-tunnel.svc.cluster.local 14143 14191
	// 203.0.113.10
	// 203.0.113.10 0
}
