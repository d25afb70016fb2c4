package mutate

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// linkRewriter points a Link's gateway at the binding's ready tunnel-server
// addresses (the headless Service's name when none is ready) and
// its probe at the binding's probe port, keeping each port's JSON type
// (string in every CRD version, a number in some older CLIs' output).
type linkRewriter struct {
	spec, probe                  map[string]any
	gatewayPortNum, probePortNum bool
}

var linkFields = []field{
	{FieldGatewayAddress, true},
	{FieldGatewayPort, true},
	{FieldProbePort, true},
}

func (l *linkRewriter) fields() []field { return linkFields }

func (l *linkRewriter) read(u *unstructured.Unstructured) (values, error) {
	gv, _ := schema.ParseGroupVersion(u.GetAPIVersion()) // Classify parsed it
	if !slices.Contains(linkVersions, gv.Version) {
		return nil, fmt.Errorf("version %q of Link is not one this webhook knows (%s)", gv.Version, strings.Join(linkVersions, ", "))
	}
	var ok bool
	if l.spec, ok = u.Object["spec"].(map[string]any); !ok {
		return nil, fmt.Errorf("spec is a %s, want an object", jsonType(u.Object["spec"]))
	}
	if l.probe, ok = l.spec["probeSpec"].(map[string]any); !ok {
		return nil, fmt.Errorf("spec.probeSpec is a %s, want an object", jsonType(l.spec["probeSpec"]))
	}
	v := make(values, len(linkFields))
	var err error
	if v[FieldGatewayAddress], err = optString(l.spec, "gatewayAddress", "spec.gatewayAddress"); err != nil {
		return nil, err
	}
	if v[FieldGatewayPort], l.gatewayPortNum, err = optPort(l.spec, "gatewayPort", "spec.gatewayPort"); err != nil {
		return nil, err
	}
	if v[FieldProbePort], l.probePortNum, err = optPort(l.probe, "port", "spec.probeSpec.port"); err != nil {
		return nil, err
	}
	return v, nil
}

func (l *linkRewriter) tunnel(b *Binding, opts Options, _ values) (values, error) {
	return values{
		FieldGatewayAddress: present(b.GatewayAddress(opts.ClusterDomain)),
		FieldGatewayPort:    present(itoa(b.GatewayPort)),
		FieldProbePort:      present(itoa(b.ProbePort)),
	}, nil
}

func (l *linkRewriter) write(_ *unstructured.Unstructured, v values) error {
	for key, x := range v {
		switch key {
		case FieldGatewayAddress:
			setString(l.spec, "gatewayAddress", x)
		case FieldGatewayPort:
			setPort(l.spec, "gatewayPort", x, l.gatewayPortNum)
		case FieldProbePort:
			setPort(l.probe, "port", x, l.probePortNum)
		default:
			return fmt.Errorf("internal error: unknown Link field %q", key)
		}
	}
	return nil
}
