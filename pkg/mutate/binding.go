package mutate

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Binding is the tunnel of one linked cluster, as found in the cloud cluster:
// a ClusterIP Service with ports api and probe, and a headless Service with
// port gateway, both labelled l5d-tunnel.io/link=<Cluster>.
type Binding struct {
	// Cluster is the link's cluster name (the LabelLink value).
	Cluster string
	// Namespace holds both Services.
	Namespace string
	// Service is the ClusterIP Service name (ports api, probe).
	Service string
	// Headless is the headless Service name (port gateway).
	Headless string
	// APIPort is the api port of Service.
	APIPort int32
	// ProbePort is the probe port of Service.
	ProbePort int32
	// GatewayPort is the port the tunnel-server pods accept gateway traffic
	// on: the gateway port's targetPort on Headless (mirror Endpoints point
	// straight at the pod IPs the headless name resolves to).
	GatewayPort int32
	// GatewayAddresses are the ready addresses of Headless's endpoints (the
	// tunnel-server pod IPs), as the caller found them (ReadyAddresses).
	// When there is at least one, the Link's gatewayAddress is their sorted,
	// de-duplicated, comma-separated list instead of HeadlessFQDN, so that
	// Linkerd's service mirror drops a dead pod as soon as the list changes
	// (docs/design.md, "Failover"). Empty: HeadlessFQDN. Every entry must
	// be an IP address; order, duplicates and spelling do not matter.
	GatewayAddresses []string
}

// ServiceFQDN is the ClusterIP Service's DNS name,
// <Service>.<Namespace>.svc.<clusterDomain> (default domain when empty).
func (b *Binding) ServiceFQDN(clusterDomain string) string {
	return fqdn(b.Service, b.Namespace, clusterDomain)
}

// HeadlessFQDN is the headless Service's DNS name,
// <Headless>.<Namespace>.svc.<clusterDomain> (default domain when empty).
func (b *Binding) HeadlessFQDN(clusterDomain string) string {
	return fqdn(b.Headless, b.Namespace, clusterDomain)
}

// APIServerURL is the kubeconfig server URL through the tunnel,
// https://<ServiceFQDN>:<APIPort>.
func (b *Binding) APIServerURL(clusterDomain string) string {
	return "https://" + b.ServiceFQDN(clusterDomain) + ":" + strconv.Itoa(int(b.APIPort))
}

// String names the binding as in AnnotationRewrittenFor: "<Namespace>/<Service>".
func (b *Binding) String() string {
	if b == nil {
		return "<none>"
	}
	return b.Namespace + "/" + b.Service
}

// Validate checks that every field of the binding is usable: DNS-label
// names and ports in 1-65535.
func (b *Binding) Validate() error {
	var problems []string
	for _, f := range []struct{ what, v string }{{"namespace", b.Namespace}, {"service", b.Service}, {"headless service", b.Headless}} {
		if f.v == "" {
			problems = append(problems, f.what+" is empty")
		} else if errs := validation.IsDNS1123Label(f.v); len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("%s %q: %s", f.what, f.v, strings.Join(errs, "; ")))
		}
	}
	for _, p := range []struct {
		name string
		v    int32
	}{{PortAPI, b.APIPort}, {PortProbe, b.ProbePort}, {PortGateway, b.GatewayPort}} {
		if p.v < 1 || p.v > 65535 {
			problems = append(problems, fmt.Sprintf("port %q is %d, want 1-65535", p.name, p.v))
		}
	}
	if _, err := GatewayList(b.GatewayAddresses); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w for cluster %q: %s", ErrInvalidBinding, b.Cluster, strings.Join(problems, ", "))
	}
	return nil
}

func fqdn(name, namespace, domain string) string {
	if domain == "" {
		domain = DefaultClusterDomain
	}
	return name + "." + namespace + ".svc." + strings.TrimSuffix(domain, ".")
}

// FindBinding builds the binding of cluster from candidate Services (those
// labelled l5d-tunnel.io/link=<cluster>; others in the slice are skipped, as
// are Services being deleted), trusting only those whose namespace is in
// trusted.
//
// It returns nil and no error when no Service is labelled for cluster. It
// returns nil and an error wrapping ErrUntrustedBinding, naming the ignored
// Services, when the only labelled Services are in untrusted namespaces:
// there is no binding, and the caller should log why (labelled Services in
// untrusted namespaces next to a trusted binding are ignored silently). It
// returns an error wrapping ErrAmbiguousBinding or ErrIncompleteBinding that
// says what is wrong when trusted Services are there but unusable: bindings
// in two namespaces, two ClusterIP or two headless Services, a missing
// Service or named port, a named targetPort on the gateway port.
//
// The gateway port of the binding is the headless Service's gateway
// targetPort (its port when targetPort is unset): the Link's gatewayAddress
// resolves to pod IPs, so mirror Endpoints bypass the Service's port mapping.
func FindBinding(cluster string, services []corev1.Service, trusted []string) (*Binding, error) {
	var mine, untrusted []*corev1.Service
	for i := range services {
		s := &services[i]
		if s.Labels[LabelLink] != cluster || cluster == "" || s.DeletionTimestamp != nil {
			continue
		}
		if slices.Contains(trusted, s.Namespace) {
			mine = append(mine, s)
		} else {
			untrusted = append(untrusted, s)
		}
	}
	if len(mine) == 0 {
		if len(untrusted) > 0 {
			return nil, fmt.Errorf("%w: cluster %q: Services %s are labelled %s=%s but their namespaces are not trusted (trusted: %s)",
				ErrUntrustedBinding, cluster, names(untrusted), LabelLink, cluster, quoteList(trusted))
		}
		return nil, nil
	}
	namespaces := map[string]bool{}
	for _, s := range mine {
		namespaces[s.Namespace] = true
	}
	if len(namespaces) > 1 {
		return nil, fmt.Errorf("%w: cluster %q: Services %s labelled %s=%s are in %d trusted namespaces; keep one binding",
			ErrAmbiguousBinding, cluster, names(mine), LabelLink, cluster, len(namespaces))
	}
	var clusterIP, headless []*corev1.Service
	for _, s := range mine {
		switch {
		case s.Spec.Type == corev1.ServiceTypeExternalName:
			return nil, fmt.Errorf("%w: cluster %q: Service %s/%s is of type ExternalName; a binding is one ClusterIP and one headless Service",
				ErrIncompleteBinding, cluster, s.Namespace, s.Name)
		case s.Spec.ClusterIP == corev1.ClusterIPNone:
			headless = append(headless, s)
		default:
			clusterIP = append(clusterIP, s)
		}
	}
	switch {
	case len(clusterIP) > 1:
		return nil, fmt.Errorf("%w: cluster %q: %d ClusterIP Services %s; keep one (with ports %q and %q)",
			ErrAmbiguousBinding, cluster, len(clusterIP), names(clusterIP), PortAPI, PortProbe)
	case len(headless) > 1:
		return nil, fmt.Errorf("%w: cluster %q: %d headless Services %s; keep one (with port %q)",
			ErrAmbiguousBinding, cluster, len(headless), names(headless), PortGateway)
	case len(clusterIP) == 0:
		return nil, fmt.Errorf("%w: cluster %q: no ClusterIP Service with ports %q and %q next to headless Service %s",
			ErrIncompleteBinding, cluster, PortAPI, PortProbe, names(headless))
	case len(headless) == 0:
		return nil, fmt.Errorf("%w: cluster %q: no headless Service (clusterIP: None) with port %q next to Service %s",
			ErrIncompleteBinding, cluster, PortGateway, names(clusterIP))
	}
	svc, hl := clusterIP[0], headless[0]
	b := &Binding{Cluster: cluster, Namespace: svc.Namespace, Service: svc.Name, Headless: hl.Name}
	var problems []string
	if p, ok := servicePort(svc, PortAPI); ok {
		b.APIPort = p.Port
	} else {
		problems = append(problems, fmt.Sprintf("Service %s/%s has no port named %q", svc.Namespace, svc.Name, PortAPI))
	}
	if p, ok := servicePort(svc, PortProbe); ok {
		b.ProbePort = p.Port
	} else {
		problems = append(problems, fmt.Sprintf("Service %s/%s has no port named %q", svc.Namespace, svc.Name, PortProbe))
	}
	if p, ok := servicePort(hl, PortGateway); !ok {
		problems = append(problems, fmt.Sprintf("headless Service %s/%s has no port named %q", hl.Namespace, hl.Name, PortGateway))
	} else {
		switch {
		case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
			problems = append(problems, fmt.Sprintf("headless Service %s/%s port %q has the named targetPort %q; give the container port number (mirror Endpoints point at pod IPs)",
				hl.Namespace, hl.Name, PortGateway, p.TargetPort.StrVal))
		case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal != 0:
			b.GatewayPort = p.TargetPort.IntVal
		default:
			b.GatewayPort = p.Port
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: cluster %q: %s", ErrIncompleteBinding, cluster, strings.Join(problems, "; "))
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIncompleteBinding, err)
	}
	return b, nil
}

func servicePort(s *corev1.Service, name string) (corev1.ServicePort, bool) {
	for _, p := range s.Spec.Ports {
		if p.Name == name {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

func names(svcs []*corev1.Service) string {
	out := make([]string, 0, len(svcs))
	for _, s := range svcs {
		out = append(out, s.Namespace+"/"+s.Name)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func quoteList(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
