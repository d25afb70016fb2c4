package mutate

import (
	"slices"
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestGatewayList(t *testing.T) {
	tests := map[string]struct {
		in   []string
		want []string
		bad  string // part of the error; "" = no error
	}{
		"none":                     {},
		"one":                      {in: []string{"10.0.0.7"}, want: []string{"10.0.0.7"}},
		"several, sorted by value": {in: []string{"10.0.0.10", "10.0.0.9", "10.0.0.100"}, want: []string{"10.0.0.9", "10.0.0.10", "10.0.0.100"}},
		"duplicates":               {in: []string{"10.0.0.2", "10.0.0.1", "10.0.0.2", " 10.0.0.1"}, want: []string{"10.0.0.1", "10.0.0.2"}},
		"IPv6 canonical, after IPv4": {
			in:   []string{"2001:DB8:0:0::1", "10.0.0.1", "2001:db8::1", "fd00::a"},
			want: []string{"10.0.0.1", "2001:db8::1", "fd00::a"},
		},
		"IPv4-mapped IPv6 is IPv4": {in: []string{"::ffff:10.0.0.1", "10.0.0.1"}, want: []string{"10.0.0.1"}},
		"names are refused":        {in: []string{"gw.example", "10.0.0.1"}, want: []string{"10.0.0.1"}, bad: `"gw.example"`},
		"zones are refused":        {in: []string{"fe80::1%eth0"}, bad: `"fe80::1%eth0"`},
		"empty entry is refused":   {in: []string{""}, bad: `""`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := GatewayList(tc.in)
			if !slices.Equal(got, tc.want) {
				t.Errorf("GatewayList(%q) = %q, want %q", tc.in, got, tc.want)
			}
			switch {
			case tc.bad == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
				t.Errorf("error %v, want one naming %s", err, tc.bad)
			}
		})
	}
}

func TestReadyAddresses(t *testing.T) {
	b := testBinding()
	ep := func(ready *bool, addrs ...string) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	}
	slice := func(name, ns, svc string, typ discoveryv1.AddressType, eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
		s := discoveryv1.EndpointSlice{AddressType: typ, Endpoints: eps}
		s.Name, s.Namespace = name, ns
		s.Labels = map[string]string{LabelServiceName: svc}
		return s
	}
	yes, no := ptr.To(true), ptr.To(false)
	deleting := slice("gone", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv4, ep(yes, "10.0.0.9"))
	deleting.DeletionTimestamp = &metav1.Time{}
	tests := map[string]struct {
		in   []discoveryv1.EndpointSlice
		want []string
	}{
		"no slices":                   {},
		"none ready":                  {in: []discoveryv1.EndpointSlice{slice("a", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv4, ep(no, "10.0.0.1"), ep(no, "10.0.0.2"))}},
		"one ready":                   {in: []discoveryv1.EndpointSlice{slice("a", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv4, ep(yes, "10.0.0.1"), ep(no, "10.0.0.2"))}, want: []string{"10.0.0.1"}},
		"unset ready counts as ready": {in: []discoveryv1.EndpointSlice{slice("a", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv4, ep(nil, "10.0.0.3"))}, want: []string{"10.0.0.3"}},
		"several slices, sorted, duplicates once": {
			in: []discoveryv1.EndpointSlice{
				slice("a", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv4, ep(yes, "10.0.0.12"), ep(yes, "10.0.0.2")),
				slice("b", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv4, ep(yes, "10.0.0.2"), ep(yes, "10.0.0.11")),
			},
			want: []string{"10.0.0.2", "10.0.0.11", "10.0.0.12"},
		},
		"dual stack keeps both families": {
			in: []discoveryv1.EndpointSlice{
				slice("v6", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv6, ep(yes, "FD00::2")),
				slice("v4", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv4, ep(yes, "10.0.0.2")),
			},
			want: []string{"10.0.0.2", "fd00::2"},
		},
		"other Services, namespaces, FQDN slices, deleted slices and bad addresses are ignored": {
			in: []discoveryv1.EndpointSlice{
				slice("a", b.Namespace, b.Service, discoveryv1.AddressTypeIPv4, ep(yes, "10.0.0.5")),
				slice("b", "elsewhere", b.Headless, discoveryv1.AddressTypeIPv4, ep(yes, "10.0.0.6")),
				slice("c", b.Namespace, b.Headless, discoveryv1.AddressTypeFQDN, ep(yes, "gw.example")),
				slice("d", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv4, ep(yes, "not-an-ip"), ep(yes, "10.0.0.8")),
				deleting,
			},
			want: []string{"10.0.0.8"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ReadyAddresses(b, tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("ReadyAddresses = %q, want %q", got, tc.want)
			}
		})
	}
	if got := ReadyAddresses(nil, []discoveryv1.EndpointSlice{slice("a", b.Namespace, b.Headless, discoveryv1.AddressTypeIPv4, ep(yes, "10.0.0.1"))}); got != nil {
		t.Errorf("ReadyAddresses(nil binding) = %q", got)
	}
}

// TestMutateLinkReadyAddresses covers the Link's gatewayAddress when the
// binding has ready addresses: the list is a rewritten value like the
// headless name, with the same originals, restore, drift rule and
// idempotence.
func TestMutateLinkReadyAddresses(t *testing.T) {
	with := func(addrs ...string) *Binding {
		b := testBinding()
		b.GatewayAddresses = addrs
		return b
	}
	// rewrittenAt is linkV3Rewritten with gatewayAddress (and its record) = v.
	rewrittenAt := func(v string) string {
		return strings.NewReplacer(
			"gatewayAddress: "+headlessFQDN, "gatewayAddress: "+v,
			`"gateway-address":"`+headlessFQDN+`"`, `"gateway-address":"`+v+`"`,
		).Replace(linkV3Rewritten)
	}
	tests := map[string]struct {
		in, want string // want "" = unchanged
		b        *Binding
		warning  string
	}{
		"none ready: the headless name":      {in: linkV3, b: with(), want: linkV3Rewritten},
		"one ready":                          {in: linkV3, b: with("10.244.0.10"), want: rewrittenAt("10.244.0.10")},
		"several ready, sorted":              {in: linkV3, b: with("10.244.0.11", "10.244.0.10"), want: rewrittenAt("10.244.0.10,10.244.0.11")},
		"duplicates once":                    {in: linkV3, b: with("10.244.0.11", "10.244.0.10", "10.244.0.11"), want: rewrittenAt("10.244.0.10,10.244.0.11")},
		"IPv6 in canonical form, after IPv4": {in: linkV3, b: with("FD00:0::1", "10.244.0.10"), want: rewrittenAt("10.244.0.10,fd00::1")},
		"same list: unchanged":               {in: rewrittenAt("10.244.0.10,10.244.0.11"), b: with("10.244.0.11", "10.244.0.10")},
		"the list changes: one pod died": {
			in: rewrittenAt("10.244.0.10,10.244.0.11"), b: with("10.244.0.10"), want: rewrittenAt("10.244.0.10"),
		},
		"the list changes: a pod came back": {
			in: rewrittenAt("10.244.0.10"), b: with("10.244.0.10", "10.244.0.11"), want: rewrittenAt("10.244.0.10,10.244.0.11"),
		},
		"the list changes: all replaced": {
			in: rewrittenAt("10.244.0.10,10.244.0.11"), b: with("10.244.0.12", "10.244.0.13"), want: rewrittenAt("10.244.0.12,10.244.0.13"),
		},
		"none ready any more: back to the headless name": {
			in: rewrittenAt("10.244.0.10"), b: with(), want: linkV3Rewritten,
		},
		"first pod ready: the headless name becomes the list": {
			in: linkV3Rewritten, b: with("10.244.0.10"), want: rewrittenAt("10.244.0.10"),
		},
		"restore from a list": {in: rewrittenAt("10.244.0.10,10.244.0.11"), want: linkV3},
		"restore from a list keeps a user's address": {
			in:   edit(t, rewrittenAt("10.244.0.10,10.244.0.11"), "gatewayAddress: 10.244.0.10,10.244.0.11", "gatewayAddress: 198.51.100.20"),
			want: edit(t, linkV3, "gatewayAddress: 203.0.113.10", "gatewayAddress: 198.51.100.20"),
		},
		"an address a user wrote over the list becomes the new original": {
			in:   edit(t, rewrittenAt("10.244.0.10"), "gatewayAddress: 10.244.0.10", "gatewayAddress: 198.51.100.20"),
			b:    with("10.244.0.10"),
			want: edit(t, rewrittenAt("10.244.0.10"), "original-gateway-address: 203.0.113.10", "original-gateway-address: 198.51.100.20"),
		},
		"an original that was a list of IPs is kept": {
			in:   edit(t, linkV3, "gatewayAddress: 203.0.113.10", "gatewayAddress: 203.0.113.10,203.0.113.11"),
			b:    with("10.244.0.10"),
			want: edit(t, rewrittenAt("10.244.0.10"), "original-gateway-address: 203.0.113.10", "original-gateway-address: 203.0.113.10,203.0.113.11"),
		},
		"a name among the addresses: binding refused, left unchanged": {
			in: linkV3, b: with("10.244.0.10", "tunnel.example"), warning: `"tunnel.example" are not IP addresses`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := obj(t, tc.in)
			out := checkRow(t, in, tc.b, Options{}, tc.want, tc.warning)
			// whatever list was written, restoring gives back the original
			if tc.warning == "" {
				back, _, _ := mutate(t, out, nil, Options{})
				orig := obj(t, tc.in)
				if tc.b != nil && !strings.Contains(tc.in, "l5d-tunnel.io/") {
					if d := diff(orig, back); d != "" {
						t.Errorf("restore after the rewrite (-want +got):\n%s", d)
					}
				}
			}
		})
	}
}

// The credentials Secret keeps pointing at the ClusterIP Service whatever
// the ready addresses: the API path a watcher restart needs survives a pod
// death.
func TestReadyAddressesLeaveCredentialsAndProbe(t *testing.T) {
	b := testBinding()
	b.GatewayAddresses = []string{"10.244.0.10"}
	plain := testBinding()
	for name, in := range map[string]string{"probe": probeLive, "credentials": ""} {
		t.Run(name, func(t *testing.T) {
			var o = secret(t, kubeconfig(t, "https://203.0.113.1:6443", nil), nil)
			if in != "" {
				o = obj(t, in)
			}
			got, _, _ := mutate(t, o, b, Options{})
			want, _, _ := mutate(t, o, plain, Options{})
			if d := diff(want, got); d != "" {
				t.Errorf("ready addresses changed the %s rewrite (-without +with):\n%s", name, d)
			}
		})
	}
}
