package mutate

import (
	"strings"
	"testing"
)

// linkV3 is a v1alpha3 Link as link-gen prints it, with the CRD defaults the
// API server adds before webhooks run.
const linkV3 = `
apiVersion: multicluster.linkerd.io/v1alpha3
kind: Link
metadata:
  annotations:
    linkerd.io/created-by: linkerd/cli version-2.20
  name: home
  namespace: linkerd-multicluster
spec:
  clusterCredentialsSecret: cluster-credentials-home
  gatewayAddress: 203.0.113.10
  gatewayIdentity: linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local
  gatewayPort: "4143"
  probeSpec:
    failureThreshold: "3"
    path: /ready
    period: 3s
    port: "4191"
    timeout: 30s
  selector:
    matchLabels:
      mirror.linkerd.io/exported: "true"
  targetClusterDomain: cluster.local
  targetClusterLinkerdNamespace: linkerd
  targetClusterName: home
status: {}
`

const linkV3Rewritten = `
apiVersion: multicluster.linkerd.io/v1alpha3
kind: Link
metadata:
  annotations:
    linkerd.io/created-by: linkerd/cli version-2.20
    l5d-tunnel.io/rewritten-for: linkerd-tunnel/tunnel-home
    l5d-tunnel.io/rewritten-values: '{"gateway-address":"tunnel-home-gw.linkerd-tunnel.svc.cluster.local","gateway-port":"14143","probe-port":"14191"}'
    l5d-tunnel.io/original-gateway-address: 203.0.113.10
    l5d-tunnel.io/original-gateway-port: "4143"
    l5d-tunnel.io/original-probe-port: "4191"
  name: home
  namespace: linkerd-multicluster
spec:
  clusterCredentialsSecret: cluster-credentials-home
  gatewayAddress: tunnel-home-gw.linkerd-tunnel.svc.cluster.local
  gatewayIdentity: linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local
  gatewayPort: "14143"
  probeSpec:
    failureThreshold: "3"
    path: /ready
    period: 3s
    port: "14191"
    timeout: 30s
  selector:
    matchLabels:
      mirror.linkerd.io/exported: "true"
  targetClusterDomain: cluster.local
  targetClusterLinkerdNamespace: linkerd
  targetClusterName: home
status: {}
`

func TestMutateLink(t *testing.T) {
	b := testBinding()
	moved := testBinding()
	moved.Headless, moved.GatewayPort, moved.ProbePort = "gw2", 4000, 4001
	numbers := func(y string) string {
		return edit(t, y, `gatewayPort: "4143"`, `gatewayPort: 4143`, `port: "4191"`, `port: 4191`)
	}
	tests := map[string]struct {
		in, want string // want "" = unchanged
		b        *Binding
		opts     Options
		warning  string
	}{
		"v1alpha3 Link is pointed at the headless Service": {in: linkV3, b: b, want: linkV3Rewritten},
		"v1alpha1 Link": {
			in:   strings.ReplaceAll(linkV3, "v1alpha3", "v1alpha1"),
			b:    b,
			want: strings.ReplaceAll(linkV3Rewritten, "v1alpha3", "v1alpha1"),
		},
		"v1alpha2 Link": {
			in:   strings.ReplaceAll(linkV3, "v1alpha3", "v1alpha2"),
			b:    b,
			want: strings.ReplaceAll(linkV3Rewritten, "v1alpha3", "v1alpha2"),
		},
		"numeric ports stay numbers": {
			in:   numbers(linkV3),
			b:    b,
			want: edit(t, linkV3Rewritten, `gatewayPort: "14143"`, `gatewayPort: 14143`, `port: "14191"`, `port: 14191`),
		},
		"numeric ports are restored as numbers": {
			in:   edit(t, linkV3Rewritten, `gatewayPort: "14143"`, `gatewayPort: 14143`, `port: "14191"`, `port: 14191`),
			want: numbers(linkV3),
		},
		"mixed port types are kept each": {
			in:   edit(t, linkV3, `port: "4191"`, `port: 4191`),
			b:    b,
			want: edit(t, linkV3Rewritten, `port: "14191"`, `port: 14191`),
		},
		"comma-separated gateway addresses are replaced and recorded": {
			in:   edit(t, linkV3, "gatewayAddress: 203.0.113.10", "gatewayAddress: 203.0.113.10,gw.home.example"),
			b:    b,
			want: edit(t, linkV3Rewritten, "original-gateway-address: 203.0.113.10", "original-gateway-address: 203.0.113.10,gw.home.example"),
		},
		"cluster domain option": {
			in: linkV3, b: b, opts: Options{ClusterDomain: "corp.example"},
			want: strings.ReplaceAll(linkV3Rewritten, "svc.cluster.local", "svc.corp.example"),
		},
		"rewritten Link is left as is":                        {in: linkV3Rewritten, b: b},
		"rewritten Link without binding is restored":          {in: linkV3Rewritten, want: linkV3},
		"Link without annotations and binding is not touched": {in: linkV3},
		"binding change re-rewrites from the originals": {
			in: linkV3Rewritten, b: moved,
			want: strings.NewReplacer("tunnel-home-gw.", "gw2.", "14143", "4000", "14191", "4001").Replace(linkV3Rewritten),
		},
		"gateway address re-applied by the user becomes the new original": {
			in:   edit(t, linkV3Rewritten, "gatewayAddress: tunnel-home-gw.linkerd-tunnel.svc.cluster.local", "gatewayAddress: 198.51.100.20"),
			b:    b,
			want: edit(t, linkV3Rewritten, "original-gateway-address: 203.0.113.10", "original-gateway-address: 198.51.100.20"),
		},
		"restore keeps what the user changed, restores the rest": {
			in:   edit(t, linkV3Rewritten, "gatewayAddress: tunnel-home-gw.linkerd-tunnel.svc.cluster.local", "gatewayAddress: 198.51.100.20"),
			want: edit(t, linkV3, "gatewayAddress: 203.0.113.10", "gatewayAddress: 198.51.100.20"),
		},
		"missing probe port is added as a string and removed on restore": {
			in:   edit(t, linkV3, "    port: \"4191\"\n", ""),
			b:    b,
			want: edit(t, linkV3Rewritten, "    l5d-tunnel.io/original-probe-port: \"4191\"\n", ""),
		},
		"Link with a missing probe port is restored without it": {
			in:   edit(t, linkV3Rewritten, "    l5d-tunnel.io/original-probe-port: \"4191\"\n", ""),
			want: edit(t, linkV3, "    port: \"4191\"\n", ""),
		},
		"corrupt record of written values: recorded originals are trusted": {
			in:      edit(t, linkV3Rewritten, `l5d-tunnel.io/rewritten-values: '{"gateway-address"`, `l5d-tunnel.io/rewritten-values: '{"gateway-address`),
			b:       b,
			want:    linkV3Rewritten,
			warning: "l5d-tunnel.io/rewritten-values is missing or not a JSON object of strings",
		},

		// Bad input.
		"gatewayPort is an object": {
			in: edit(t, linkV3, `gatewayPort: "4143"`, "gatewayPort: {port: 4143}"), b: b,
			warning: "spec.gatewayPort is a object, want a string or an integer",
		},
		"gatewayPort is a boolean": {
			in: edit(t, linkV3, `gatewayPort: "4143"`, "gatewayPort: true"), b: b,
			warning: "spec.gatewayPort is a boolean",
		},
		"gatewayPort is a fraction": {
			in: edit(t, linkV3, `gatewayPort: "4143"`, "gatewayPort: 4143.5"), b: b,
			warning: "spec.gatewayPort is a number, want a string or an integer",
		},
		"gatewayAddress is a list": {
			in: edit(t, linkV3, "gatewayAddress: 203.0.113.10", "gatewayAddress: [203.0.113.10]"), b: b,
			warning: "spec.gatewayAddress is a array, want a string",
		},
		"probeSpec is a string": {
			in: edit(t, linkV3, "  probeSpec:\n    failureThreshold: \"3\"\n    path: /ready\n    period: 3s\n    port: \"4191\"\n    timeout: 30s\n", "  probeSpec: /ready\n"), b: b,
			warning: "spec.probeSpec is a string, want an object",
		},
		"probeSpec.port is a list": {
			in: edit(t, linkV3, `port: "4191"`, "port: [4191]"), b: b,
			warning: "spec.probeSpec.port is a array",
		},
		"unknown Link version": {
			in: strings.ReplaceAll(linkV3, "v1alpha3", "v1beta1"), b: b,
			warning: `version "v1beta1" of Link is not one this webhook knows`,
		},
		"unknown Link version is not restored either": {
			in:      strings.ReplaceAll(linkV3Rewritten, "v1alpha3", "v1beta1"),
			warning: `version "v1beta1" of Link is not one this webhook knows`,
		},
		"binding with an invalid name": {
			in: linkV3, b: &Binding{Cluster: "home", Namespace: "Bad_NS", Service: "s", Headless: "h", APIPort: 1, ProbePort: 2, GatewayPort: 3},
			warning: `namespace "Bad_NS"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := obj(t, tc.in)
			if k, c := Classify(in); k != KindLink || c != "home" {
				t.Fatalf("Classify = %q, %q", k, c)
			}
			checkRow(t, in, tc.b, tc.opts, tc.want, tc.warning)
		})
	}
}
