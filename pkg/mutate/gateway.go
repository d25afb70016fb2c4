package mutate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// LabelServiceName is the EndpointSlice label naming the Service a slice
// belongs to (discovery.k8s.io, set by Kubernetes' EndpointSlice controllers).
const LabelServiceName = discoveryv1.LabelServiceName

// ReadyAddresses returns the ready addresses of b's headless Service: the
// endpoints of slices in b.Namespace labelled LabelServiceName=b.Headless,
// of address type IPv4 or IPv6, whose ready condition is true or unset (the
// API says unset means ready), sorted and de-duplicated (GatewayList order).
// Slices being deleted, FQDN slices and addresses that are not IP addresses
// are skipped. It returns nil when none is ready; the caller puts the result
// in b.GatewayAddresses.
//
// Both address families of a dual-stack Service are kept: the headless name
// resolves to both too, and Linkerd's service mirror takes every address it
// resolves.
func ReadyAddresses(b *Binding, slices []discoveryv1.EndpointSlice) []string {
	if b == nil {
		return nil
	}
	var out []string
	for i := range slices {
		s := &slices[i]
		if s.Namespace != b.Namespace || s.Labels[LabelServiceName] != b.Headless || s.DeletionTimestamp != nil {
			continue
		}
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			out = append(out, ep.Addresses...)
		}
	}
	list, _ := GatewayList(out)
	return list
}

// GatewayList normalises gateway addresses: each is parsed as an IP address
// and written in its canonical form (lower-case, shortest IPv6, an
// IPv4-mapped IPv6 address as IPv4), then the list is sorted (IPv4 before
// IPv6, numerically) and de-duplicated. Entries that are not IP addresses,
// or carry an IPv6 zone (never a pod address), are left out and named in
// err; the result holds the valid ones.
func GatewayList(addrs []string) (list []string, err error) {
	parsed := make([]netip.Addr, 0, len(addrs))
	var bad []string
	for _, a := range addrs {
		ip, perr := netip.ParseAddr(strings.TrimSpace(a))
		if perr != nil || ip.Zone() != "" {
			bad = append(bad, fmt.Sprintf("%q", a))
			continue
		}
		parsed = append(parsed, ip.Unmap())
	}
	slices.SortFunc(parsed, func(a, b netip.Addr) int { return a.Compare(b) })
	parsed = slices.Compact(parsed)
	if len(parsed) > 0 {
		list = make([]string, len(parsed))
		for i, ip := range parsed {
			list[i] = ip.String()
		}
	}
	if len(bad) > 0 {
		err = fmt.Errorf("gateway addresses %s are not IP addresses", strings.Join(bad, ", "))
	}
	return list, err
}

// GatewayAddress is the Link spec.gatewayAddress Mutate writes for b: the
// comma-separated GatewayList of b.GatewayAddresses when there is at least
// one, else the headless Service's FQDN.
func (b *Binding) GatewayAddress(clusterDomain string) string {
	if list, _ := GatewayList(b.GatewayAddresses); len(list) > 0 {
		return strings.Join(list, ",")
	}
	return b.HeadlessFQDN(clusterDomain)
}
