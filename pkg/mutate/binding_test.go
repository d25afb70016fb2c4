package mutate

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// bindingService builds a Service labelled for cluster; clusterIP "None"
// makes it headless; ports are name=port[:targetPort].
func bindingService(ns, name, cluster, clusterIP string, ports ...string) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{LabelLink: cluster}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP},
	}
	for _, p := range ports {
		name, num, _ := strings.Cut(p, "=")
		port, target, _ := strings.Cut(num, ":")
		sp := corev1.ServicePort{Name: name, Port: int32(atoi(port))}
		if target != "" {
			sp.TargetPort = intstr.Parse(target)
		}
		s.Spec.Ports = append(s.Spec.Ports, sp)
	}
	return s
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestFindBinding(t *testing.T) {
	trusted := []string{"linkerd-tunnel"}
	svc := bindingService("linkerd-tunnel", "tunnel-home", "home", "10.96.0.10", "api=6443", "probe=14191")
	hl := bindingService("linkerd-tunnel", "tunnel-home-gw", "home", "None", "gateway=4143:14143")
	want := testBinding()
	deleting := bindingService("linkerd-tunnel", "old-home", "home", "10.96.0.11", "api=6443", "probe=14191")
	now := metav1.Now()
	deleting.DeletionTimestamp = &now

	tests := map[string]struct {
		services []corev1.Service
		trusted  []string
		want     *Binding
		err      error  // nil: no error
		msg      string // substring of the error
	}{
		"complete binding": {services: []corev1.Service{svc, hl}, trusted: trusted, want: want},
		"other clusters' Services are skipped": {
			services: []corev1.Service{bindingService("linkerd-tunnel", "x", "east", "10.96.0.9", "api=1"), svc, hl}, trusted: trusted, want: want,
		},
		"Services being deleted are skipped": {services: []corev1.Service{deleting, svc, hl}, trusted: trusted, want: want},
		"gateway port without targetPort is the port": {
			services: []corev1.Service{svc, bindingService("linkerd-tunnel", "tunnel-home-gw", "home", "None", "gateway=14143")}, trusted: trusted, want: want,
		},
		"no Service": {services: nil, trusted: trusted},
		"untrusted binding only": {
			services: []corev1.Service{bindingService("evil", "a", "home", "10.1.1.1", "api=443", "probe=80"), bindingService("evil", "b", "home", "None", "gateway=80")},
			trusted:  trusted, err: ErrUntrustedBinding, msg: "evil/a, evil/b",
		},
		"untrusted Services next to a trusted binding are ignored": {
			services: []corev1.Service{bindingService("evil", "a", "home", "10.1.1.1", "api=443", "probe=80"), svc, hl}, trusted: trusted, want: want,
		},
		"nothing trusted": {services: []corev1.Service{svc, hl}, trusted: nil, err: ErrUntrustedBinding, msg: "trusted: none"},
		"two trusted namespaces": {
			services: []corev1.Service{svc, hl, bindingService("tunnels2", "t", "home", "10.1.1.1", "api=1", "probe=2")},
			trusted:  []string{"linkerd-tunnel", "tunnels2"}, err: ErrAmbiguousBinding, msg: "2 trusted namespaces",
		},
		"two ClusterIP Services": {
			services: []corev1.Service{svc, hl, bindingService("linkerd-tunnel", "tunnel-home-2", "home", "10.96.0.12", "api=1", "probe=2")},
			trusted:  trusted, err: ErrAmbiguousBinding, msg: "2 ClusterIP Services linkerd-tunnel/tunnel-home, linkerd-tunnel/tunnel-home-2",
		},
		"two headless Services": {
			services: []corev1.Service{svc, hl, bindingService("linkerd-tunnel", "gw2", "home", "None", "gateway=1")},
			trusted:  trusted, err: ErrAmbiguousBinding, msg: "2 headless Services",
		},
		"no headless Service":  {services: []corev1.Service{svc}, trusted: trusted, err: ErrIncompleteBinding, msg: "no headless Service"},
		"no ClusterIP Service": {services: []corev1.Service{hl}, trusted: trusted, err: ErrIncompleteBinding, msg: "no ClusterIP Service"},
		"ExternalName Service": {
			services: []corev1.Service{svc, hl, func() corev1.Service {
				s := bindingService("linkerd-tunnel", "ext", "home", "")
				s.Spec.Type = corev1.ServiceTypeExternalName
				return s
			}()},
			trusted: trusted, err: ErrIncompleteBinding, msg: "is of type ExternalName",
		},
		"missing api and gateway ports": {
			services: []corev1.Service{bindingService("linkerd-tunnel", "tunnel-home", "home", "10.96.0.10", "probe=14191"), bindingService("linkerd-tunnel", "tunnel-home-gw", "home", "None", "gw=1")},
			trusted:  trusted, err: ErrIncompleteBinding, msg: `Service linkerd-tunnel/tunnel-home has no port named "api"; headless Service linkerd-tunnel/tunnel-home-gw has no port named "gateway"`,
		},
		"missing probe port": {
			services: []corev1.Service{bindingService("linkerd-tunnel", "tunnel-home", "home", "10.96.0.10", "api=6443"), hl},
			trusted:  trusted, err: ErrIncompleteBinding, msg: `has no port named "probe"`,
		},
		"named gateway targetPort": {
			services: []corev1.Service{svc, bindingService("linkerd-tunnel", "tunnel-home-gw", "home", "None", "gateway=4143:gw")},
			trusted:  trusted, err: ErrIncompleteBinding, msg: `named targetPort "gw"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := FindBinding("home", tc.services, tc.trusted)
			if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("error = %v, want %v", err, tc.err)
			}
			if err != nil && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if err != nil && got != nil {
				t.Errorf("binding %+v returned with an error", got)
			}
			if d := diffAny(tc.want, got); d != "" {
				t.Errorf("binding (-want +got):\n%s", d)
			}
		})
	}
	if b, err := FindBinding("", []corev1.Service{bindingService("linkerd-tunnel", "x", "", "10.1.1.1", "api=1", "probe=2")}, trusted); b != nil || err != nil {
		t.Errorf("empty cluster name: %v, %v", b, err)
	}
}

func TestBindingValidate(t *testing.T) {
	if err := testBinding().Validate(); err != nil {
		t.Fatal(err)
	}
	b := &Binding{Cluster: "home", Namespace: "", Service: "UPPER", Headless: "ok", APIPort: 70000, ProbePort: 1, GatewayPort: -1}
	err := b.Validate()
	if !errors.Is(err, ErrInvalidBinding) {
		t.Fatalf("Validate = %v", err)
	}
	for _, want := range []string{"namespace is empty", `service "UPPER"`, `port "api" is 70000`, `port "gateway" is -1`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}
