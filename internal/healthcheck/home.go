package healthcheck

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

func (e *env) clientChecks() []Checker {
	var out []Checker
	for i := range e.clients {
		d := &e.clients[i]
		key := client.ObjectKeyFromObject(d)
		out = append(out,
			Checker{Description: fmt.Sprintf("tunnel client %s is connected", key), Anchor: "client-connected", Retry: true, Surface: true,
				Check: func(ctx context.Context) error {
					return e.deploymentAvailable(ctx, key, fmt.Sprintf("its readiness probe (/readyz) passes only while a session with the tunnel server is up; see `kubectl logs -n %s deployment/%s` (wrong --server URL, token rejected, ingress not reaching the server?)", key.Namespace, key.Name))
				}},
			Checker{Description: fmt.Sprintf("tunnel client %s upstreams resolve", key), Anchor: "client-upstreams", Retry: true, Surface: true,
				Check: func(ctx context.Context) error { return e.checkUpstreams(ctx, d, false) }},
			Checker{Description: fmt.Sprintf("tunnel client %s upstream ports are Service ports", key), Anchor: "client-upstream-ports", Warning: true,
				Check: func(ctx context.Context) error { return e.checkUpstreams(ctx, d, true) }},
		)
	}
	return out
}

// upstream is one --upstream NAME=HOST:PORT of a tunnel client.
type upstream struct {
	name, host string
	port       int
}

// clientUpstreams reads the --upstream flags of the client container.
func clientUpstreams(d *appsv1.Deployment) ([]upstream, error) {
	var args []string
	for _, c := range d.Spec.Template.Spec.Containers {
		a := append(append([]string{}, c.Command...), c.Args...)
		for i, s := range a {
			if s == "client" {
				args = a[i+1:]
				break
			}
		}
		if args != nil {
			break
		}
	}
	fs := pflag.NewFlagSet("client", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	ups := fs.StringArray("upstream", nil, "")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("the Deployment %s/%s: tunnel client args: %w", d.Namespace, d.Name, err)
	}
	if len(*ups) == 0 {
		return nil, fmt.Errorf("the Deployment %s/%s runs no `tunnel client` with --upstream flags: reinstall it (`linkerd tunnel client NAME --server-url URL | kubectl apply -f -`)", d.Namespace, d.Name)
	}
	var out []upstream
	for _, u := range *ups {
		name, addr, ok := strings.Cut(u, "=")
		host, ps, err := net.SplitHostPort(addr)
		port, perr := strconv.Atoi(ps)
		if !ok || err != nil || perr != nil {
			return nil, fmt.Errorf("the Deployment %s/%s: --upstream %q is not NAME=HOST:PORT: reinstall the client", d.Namespace, d.Name, u)
		}
		out = append(out, upstream{name: name, host: host, port: port})
	}
	return out, nil
}

// serviceOf maps a host to the Service it names, in the forms a pod
// resolves: NAME (the client's namespace), NAME.NS, NAME.NS.svc and
// NAME.NS.svc.<domain>. ok is false for IP addresses and other names (not
// a Service of this cluster: nothing to check).
func (e *env) serviceOf(ctx context.Context, host, clientNS string) (key client.ObjectKey, ok bool) {
	if net.ParseIP(host) != nil {
		return key, false
	}
	parts := strings.Split(strings.TrimSuffix(host, "."), ".")
	switch {
	case len(parts) == 1:
		return client.ObjectKey{Namespace: clientNS, Name: parts[0]}, true
	case len(parts) >= 3 && parts[2] == "svc":
		return client.ObjectKey{Namespace: parts[1], Name: parts[0]}, true
	case len(parts) == 2:
		// NAME.NS, unless NS is no namespace here (then it is a DNS name)
		var ns corev1.Namespace
		if err := e.c.Get(ctx, client.ObjectKey{Name: parts[1]}, &ns); err != nil {
			return key, false
		}
		return client.ObjectKey{Namespace: parts[1], Name: parts[0]}, true
	}
	return key, false
}

// checkUpstreams checks that every upstream naming a Service of this
// cluster finds it with a ready endpoint (ports: that the port is one of
// the Service's ports).
func (e *env) checkUpstreams(ctx context.Context, d *appsv1.Deployment, ports bool) error {
	ups, err := clientUpstreams(d)
	if err != nil {
		return err
	}
	var problems []string
	for _, u := range ups {
		key, ok := e.serviceOf(ctx, u.host, d.Namespace)
		if !ok {
			continue
		}
		var svc corev1.Service
		if err := e.c.Get(ctx, key, &svc); err != nil {
			if apierrors.IsNotFound(err) {
				if !ports {
					problems = append(problems, fmt.Sprintf("upstream %s: Service %s does not exist (%s)", u.name, key, u.host))
				}
				continue
			}
			return fmt.Errorf("upstream %s: Service %s: %w", u.name, key, err)
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		if ports {
			if !hasPort(&svc, u.port) {
				problems = append(problems, fmt.Sprintf("upstream %s: Service %s has no port %d (ports %s)", u.name, key, u.port, servicePorts(&svc)))
			}
			continue
		}
		n, err := e.readyEndpoints(ctx, key)
		if err != nil {
			return err
		}
		if n == 0 {
			problems = append(problems, fmt.Sprintf("upstream %s: Service %s has no ready endpoint", u.name, key))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	todo := "start what they point at (Linkerd's multicluster gateway for gateway and probe, the API server for api) or fix the client's upstreams (`linkerd tunnel client NAME --server-url URL` renders them)"
	if ports {
		todo = "the client dials HOST:PORT as given; fix the upstream's port (re-render the client) or the Service"
	}
	return fmt.Errorf("%s: %s", strings.Join(problems, "; "), todo)
}

func hasPort(s *corev1.Service, port int) bool {
	for _, p := range s.Spec.Ports {
		if int(p.Port) == port {
			return true
		}
	}
	return false
}

func servicePorts(s *corev1.Service) string {
	var ps []string
	for _, p := range s.Spec.Ports {
		ps = append(ps, strconv.Itoa(int(p.Port)))
	}
	return strings.Join(ps, ",")
}

// readyEndpoints counts the ready endpoints in a Service's EndpointSlices.
func (e *env) readyEndpoints(ctx context.Context, key client.ObjectKey) (int, error) {
	var list discoveryv1.EndpointSliceList
	if err := e.c.List(ctx, &list, client.InNamespace(key.Namespace), client.MatchingLabels{mutate.LabelServiceName: key.Name}); err != nil {
		return 0, fmt.Errorf("cannot list the EndpointSlices of Service %s: %w", key, err)
	}
	n := 0
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				n++
			}
		}
	}
	return n, nil
}
