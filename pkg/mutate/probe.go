package mutate

import (
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// probeRewriter turns the probe Service into an ExternalName Service that
// points at the binding's ClusterIP Service on its probe port.
//
// An ExternalName Service must not carry clusterIP, clusterIPs, ipFamilies or
// ipFamilyPolicy (the API server rejects them on CREATE; on UPDATE it wipes
// them only when unchanged), nor externalTrafficPolicy (only for externally
// reachable Services). internalTrafficPolicy is accepted but hidden on read,
// so it is cleared too. Fields only LoadBalancer and NodePort Services carry
// never appear: probe Services of other types are left alone with a warning.
type probeRewriter struct {
	port map[string]any // the probe port entry of spec.ports
}

// foldReappliedProbePort handles the probe Service as a re-apply of the link
// output leaves it, before read sees it. kubectl apply (client- or
// server-side) merges spec.ports by port number, so re-asserting Linkerd's
// port (4191) next to the rewritten one gives two ports named mc-probe, which
// the API server rejects. When exactly two ports are named so and exactly one
// of them holds the port this package wrote (AnnotationRewrittenValues), it is
// the stale one: it is dropped from spec.ports of u, and the other, the value
// the user just applied, is what read then sees as the current one. It
// reports whether it dropped a port; in every other case it leaves u alone
// (read then rejects what is wrong with it).
func foldReappliedProbePort(u *unstructured.Unstructured, st state) bool {
	written := st.written.get(FieldProbePort)
	if !st.marker || !written.ok {
		return false
	}
	spec, ok := u.Object["spec"].(map[string]any)
	if !ok {
		return false
	}
	ports, _ := spec["ports"].([]any)
	stale, keep, named := -1, -1, 0
	for i, x := range ports {
		pm, ok := x.(map[string]any)
		if !ok {
			return false
		}
		if name, _ := pm["name"].(string); name != LinkerdProbePortName {
			continue
		}
		named++
		if t, ok := numberText(pm["port"]); ok && t == written.text {
			stale = i
		} else {
			keep = i
		}
	}
	if named != 2 || stale < 0 || keep < 0 {
		return false
	}
	out := make([]any, 0, len(ports)-1)
	out = append(out, ports[:stale]...)
	spec["ports"] = append(out, ports[stale+1:]...)
	return true
}

var probeFields = []field{
	{FieldServiceType, true},
	{FieldExternalName, true},
	{FieldProbePort, true},
	{FieldProbeTargetPort, true},
	{FieldInternalTrafficPolicy, true},
	{FieldExternalTrafficPolicy, true},
	{FieldIPFamilyPolicy, true},
	{FieldIPFamilies, true},
	{FieldClusterIP, false},
	{FieldClusterIPs, false},
}

func (p *probeRewriter) fields() []field { return probeFields }

func (p *probeRewriter) read(u *unstructured.Unstructured) (values, error) {
	spec, ok := u.Object["spec"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("spec is a %s, want an object", jsonType(u.Object["spec"]))
	}
	v := make(values, len(probeFields))
	var err error
	for _, s := range []struct{ key, field string }{
		{FieldServiceType, "type"},
		{FieldExternalName, "externalName"},
		{FieldInternalTrafficPolicy, "internalTrafficPolicy"},
		{FieldExternalTrafficPolicy, "externalTrafficPolicy"},
		{FieldIPFamilyPolicy, "ipFamilyPolicy"},
		{FieldClusterIP, "clusterIP"},
	} {
		if v[s.key], err = optString(spec, s.field, "spec."+s.field); err != nil {
			return nil, err
		}
	}
	if v[FieldIPFamilies], err = optStringList(spec, "ipFamilies", "spec.ipFamilies"); err != nil {
		return nil, err
	}
	if v[FieldClusterIPs], err = optStringList(spec, "clusterIPs", "spec.clusterIPs"); err != nil {
		return nil, err
	}
	switch t := v[FieldServiceType]; {
	case !t.ok, t.text == "ClusterIP", t.text == "ExternalName":
	default:
		return nil, fmt.Errorf("spec.type is %q; only ClusterIP probe Services (what Linkerd creates) are rewritten", t.text)
	}
	if ip := v[FieldClusterIP]; ip.ok && ip.text == "None" {
		return nil, fmt.Errorf("spec.clusterIP is None; headless probe Services are not rewritten")
	}

	ports, ok := spec["ports"].([]any)
	if !ok || len(ports) == 0 {
		return nil, fmt.Errorf("spec.ports is a %s, want a non-empty array", jsonType(spec["ports"]))
	}
	var named []int
	for i, x := range ports {
		pm, ok := x.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("spec.ports[%d] is a %s, want an object", i, jsonType(x))
		}
		if name, _ := pm["name"].(string); name == LinkerdProbePortName {
			named = append(named, i)
		}
	}
	if len(named) > 1 {
		return nil, fmt.Errorf("spec.ports has %d ports named %q", len(named), LinkerdProbePortName)
	}
	idx := -1
	if len(named) == 1 {
		idx = named[0]
	}
	if idx < 0 {
		if len(ports) != 1 {
			return nil, fmt.Errorf("spec.ports has %d ports and none is named %q", len(ports), LinkerdProbePortName)
		}
		idx = 0
	}
	p.port = ports[idx].(map[string]any)
	path := fmt.Sprintf("spec.ports[%d]", idx)
	raw, ok := p.port["port"]
	if !ok {
		return nil, fmt.Errorf("%s.port is missing", path)
	}
	t, ok := numberText(raw)
	if !ok {
		return nil, fmt.Errorf("%s.port is a %s, want an integer", path, jsonType(raw))
	}
	v[FieldProbePort] = present(t)
	tp, _, err := optPort(p.port, "targetPort", path+".targetPort")
	if err != nil {
		return nil, err
	}
	v[FieldProbeTargetPort] = tp
	return v, nil
}

func (p *probeRewriter) tunnel(b *Binding, opts Options, _ values) (values, error) {
	port := present(itoa(b.ProbePort))
	// Everything else is absent: cleared.
	return values{
		FieldServiceType:     present("ExternalName"),
		FieldExternalName:    present(b.ServiceFQDN(opts.ClusterDomain)),
		FieldProbePort:       port,
		FieldProbeTargetPort: port, // always set: the API server would default it to port, a tunnel value
	}, nil
}

func (p *probeRewriter) write(u *unstructured.Unstructured, v values) error {
	spec := u.Object["spec"].(map[string]any) // read checked it
	for key, x := range v {
		switch key {
		case FieldServiceType:
			setString(spec, "type", x)
		case FieldExternalName:
			setString(spec, "externalName", x)
		case FieldInternalTrafficPolicy:
			setString(spec, "internalTrafficPolicy", x)
		case FieldExternalTrafficPolicy:
			setString(spec, "externalTrafficPolicy", x)
		case FieldIPFamilyPolicy:
			setString(spec, "ipFamilyPolicy", x)
		case FieldClusterIP:
			setString(spec, "clusterIP", x)
		case FieldIPFamilies:
			if x.ok {
				spec["ipFamilies"] = splitList(x.text)
			} else {
				delete(spec, "ipFamilies")
			}
		case FieldClusterIPs:
			if x.ok {
				spec["clusterIPs"] = splitList(x.text)
			} else {
				delete(spec, "clusterIPs")
			}
		case FieldProbePort:
			n, err := strconv.ParseInt(x.text, 10, 32)
			if !x.ok || err != nil {
				return fmt.Errorf("cannot set the probe port to %q: not an integer", x.text)
			}
			p.port["port"] = n
		case FieldProbeTargetPort:
			// A digits-only targetPort is a number: port names must contain a letter.
			setPort(p.port, "targetPort", x, true)
		default:
			return fmt.Errorf("internal error: unknown probe Service field %q", key)
		}
	}
	return nil
}
