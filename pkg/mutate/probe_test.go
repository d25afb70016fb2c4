package mutate

import (
	"strings"
	"testing"
)

// probeLive is the probe Service as the webhook sees it on CREATE: what the
// link chart renders plus the API server's defaults and allocations.
const probeLive = `
apiVersion: v1
kind: Service
metadata:
  name: probe-gateway-home
  namespace: linkerd-multicluster
  labels:
    mirror.linkerd.io/mirrored-gateway: "true"
    mirror.linkerd.io/cluster-name: home
    linkerd.io/extension: multicluster
  annotations:
    linkerd.io/created-by: linkerd/cli version-2.20
spec:
  type: ClusterIP
  clusterIP: 10.96.12.34
  clusterIPs: [10.96.12.34]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  internalTrafficPolicy: Cluster
  sessionAffinity: None
  ports:
  - name: mc-probe
    port: 4191
    protocol: TCP
    targetPort: 4191
status:
  loadBalancer: {}
`

// probeRewritten is probeLive rewritten for testBinding.
const probeRewritten = `
apiVersion: v1
kind: Service
metadata:
  name: probe-gateway-home
  namespace: linkerd-multicluster
  labels:
    mirror.linkerd.io/mirrored-gateway: "true"
    mirror.linkerd.io/cluster-name: home
    linkerd.io/extension: multicluster
  annotations:
    linkerd.io/created-by: linkerd/cli version-2.20
    l5d-tunnel.io/rewritten-for: linkerd-tunnel/tunnel-home
    l5d-tunnel.io/rewritten-values: '{"external-name":"tunnel-home.linkerd-tunnel.svc.cluster.local","probe-port":"14191","probe-target-port":"14191","service-type":"ExternalName"}'
    l5d-tunnel.io/original-service-type: ClusterIP
    l5d-tunnel.io/original-probe-port: "4191"
    l5d-tunnel.io/original-probe-target-port: "4191"
    l5d-tunnel.io/original-internal-traffic-policy: Cluster
    l5d-tunnel.io/original-ip-family-policy: SingleStack
    l5d-tunnel.io/original-ip-families: IPv4
spec:
  type: ExternalName
  externalName: tunnel-home.linkerd-tunnel.svc.cluster.local
  sessionAffinity: None
  ports:
  - name: mc-probe
    port: 14191
    protocol: TCP
    targetPort: 14191
status:
  loadBalancer: {}
`

// probeRestored is probeRewritten restored: probeLive without the
// addresses the API server allocates again.
const probeRestored = `
apiVersion: v1
kind: Service
metadata:
  name: probe-gateway-home
  namespace: linkerd-multicluster
  labels:
    mirror.linkerd.io/mirrored-gateway: "true"
    mirror.linkerd.io/cluster-name: home
    linkerd.io/extension: multicluster
  annotations:
    linkerd.io/created-by: linkerd/cli version-2.20
spec:
  type: ClusterIP
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  internalTrafficPolicy: Cluster
  sessionAffinity: None
  ports:
  - name: mc-probe
    port: 4191
    protocol: TCP
    targetPort: 4191
status:
  loadBalancer: {}
`

// edit returns the YAML with each old replaced by new (each must occur).
func edit(t testing.TB, y string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(y, pairs[i]) {
			t.Fatalf("edit: %q not found", pairs[i])
		}
		y = strings.Replace(y, pairs[i], pairs[i+1], 1)
	}
	return y
}

func TestMutateProbe(t *testing.T) {
	b := testBinding()
	otherPort := testBinding()
	otherPort.ProbePort = 24191
	tests := map[string]struct {
		in      string
		b       *Binding
		opts    Options
		want    string // "" = unchanged
		warning string // substring of the only warning; "" = no warnings
	}{
		"live ClusterIP probe Service is made ExternalName, allocation fields cleared": {
			in: probeLive, b: b, want: probeRewritten,
		},
		"rewritten probe Service is left as is": {
			in: probeRewritten, b: b,
		},
		"rewritten probe Service without binding is restored": {
			in: probeRewritten, want: probeRestored,
		},
		"restored probe Service without binding stays": {
			in: probeRestored,
		},
		"probe Service of a cluster without binding is not touched": {
			in: probeLive,
		},
		"binding probe port change re-rewrites from the originals": {
			in: probeRewritten, b: otherPort,
			want: strings.ReplaceAll(probeRewritten, "14191", "24191"),
		},
		"binding moved to another namespace": {
			in: probeRewritten, b: &Binding{Cluster: "home", Namespace: "tunnels", Service: "t", Headless: "t-gw", APIPort: 1, ProbePort: 14191, GatewayPort: 2},
			want: strings.NewReplacer("linkerd-tunnel/tunnel-home", "tunnels/t", "tunnel-home.linkerd-tunnel.svc", "t.tunnels.svc").Replace(probeRewritten),
		},
		"cluster domain option is used in externalName": {
			in: probeLive, b: b, opts: Options{ClusterDomain: "corp.example."},
			want: strings.ReplaceAll(probeRewritten, "svc.cluster.local", "svc.corp.example"),
		},
		"port changed by someone after the rewrite becomes the original": {
			in:   edit(t, probeRewritten, "port: 14191", "port: 5191"),
			b:    b,
			want: edit(t, probeRewritten, `original-probe-port: "4191"`, `original-probe-port: "5191"`),
		},
		"restore keeps a port changed by someone after the rewrite": {
			in:   edit(t, probeRewritten, "port: 14191", "port: 5191"),
			want: edit(t, probeRestored, "port: 4191", "port: 5191"),
		},
		"probe Service without annotations (2.12 link chart) gets them": {
			in: `
apiVersion: v1
kind: Service
metadata:
  name: probe-gateway-home
  namespace: linkerd-multicluster
  labels: {mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}
spec:
  ports: [{name: mc-probe, port: 4191, protocol: TCP}]
`, b: b, want: `
apiVersion: v1
kind: Service
metadata:
  name: probe-gateway-home
  namespace: linkerd-multicluster
  labels: {mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}
  annotations:
    l5d-tunnel.io/rewritten-for: linkerd-tunnel/tunnel-home
    l5d-tunnel.io/rewritten-values: '{"external-name":"tunnel-home.linkerd-tunnel.svc.cluster.local","probe-port":"14191","probe-target-port":"14191","service-type":"ExternalName"}'
    l5d-tunnel.io/original-probe-port: "4191"
spec:
  type: ExternalName
  externalName: tunnel-home.linkerd-tunnel.svc.cluster.local
  ports: [{name: mc-probe, port: 14191, protocol: TCP, targetPort: 14191}]
`},
		"null annotations (2.18 probe-svc.yaml) are handled": {
			in: `
apiVersion: v1
kind: Service
metadata:
  name: probe-home
  namespace: linkerd-multicluster
  annotations:
  labels: {mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}
spec:
  ports: [{name: mc-probe, port: 4191, protocol: TCP}]
`, b: b, want: `
apiVersion: v1
kind: Service
metadata:
  name: probe-home
  namespace: linkerd-multicluster
  labels: {mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}
  annotations:
    l5d-tunnel.io/rewritten-for: linkerd-tunnel/tunnel-home
    l5d-tunnel.io/rewritten-values: '{"external-name":"tunnel-home.linkerd-tunnel.svc.cluster.local","probe-port":"14191","probe-target-port":"14191","service-type":"ExternalName"}'
    l5d-tunnel.io/original-probe-port: "4191"
spec:
  type: ExternalName
  externalName: tunnel-home.linkerd-tunnel.svc.cluster.local
  ports: [{name: mc-probe, port: 14191, protocol: TCP, targetPort: 14191}]
`},
		"hand-made ExternalName probe Service (seed) keeps its original name": {
			in: edit(t, probeRestored,
				"  type: ClusterIP\n  ipFamilies: [IPv4]\n  ipFamilyPolicy: SingleStack\n  internalTrafficPolicy: Cluster\n",
				"  type: ExternalName\n  externalName: old-tunnel.tunnels.svc.cluster.local\n"),
			b: b, want: `
apiVersion: v1
kind: Service
metadata:
  name: probe-gateway-home
  namespace: linkerd-multicluster
  labels:
    mirror.linkerd.io/mirrored-gateway: "true"
    mirror.linkerd.io/cluster-name: home
    linkerd.io/extension: multicluster
  annotations:
    linkerd.io/created-by: linkerd/cli version-2.20
    l5d-tunnel.io/rewritten-for: linkerd-tunnel/tunnel-home
    l5d-tunnel.io/rewritten-values: '{"external-name":"tunnel-home.linkerd-tunnel.svc.cluster.local","probe-port":"14191","probe-target-port":"14191","service-type":"ExternalName"}'
    l5d-tunnel.io/original-service-type: ExternalName
    l5d-tunnel.io/original-external-name: old-tunnel.tunnels.svc.cluster.local
    l5d-tunnel.io/original-probe-port: "4191"
    l5d-tunnel.io/original-probe-target-port: "4191"
spec:
  type: ExternalName
  externalName: tunnel-home.linkerd-tunnel.svc.cluster.local
  sessionAffinity: None
  ports:
  - name: mc-probe
    port: 14191
    protocol: TCP
    targetPort: 14191
status:
  loadBalancer: {}
`},
		"externalIPs stay, externalTrafficPolicy is cleared and recorded": {
			in: edit(t, probeLive, "  sessionAffinity: None\n",
				"  sessionAffinity: None\n  externalIPs: [192.0.2.7]\n  externalTrafficPolicy: Cluster\n"),
			b: b,
			want: edit(t, probeRewritten, "  sessionAffinity: None\n", "  sessionAffinity: None\n  externalIPs: [192.0.2.7]\n",
				"    l5d-tunnel.io/original-ip-families: IPv4\n",
				"    l5d-tunnel.io/original-ip-families: IPv4\n    l5d-tunnel.io/original-external-traffic-policy: Cluster\n"),
		},
		"only the mc-probe port of several is rewritten": {
			in:   edit(t, probeLive, "  ports:\n", "  ports:\n  - {name: admin, port: 9990, protocol: TCP, targetPort: 9990}\n"),
			b:    b,
			want: edit(t, probeRewritten, "  ports:\n", "  ports:\n  - {name: admin, port: 9990, protocol: TCP, targetPort: 9990}\n"),
		},
		"named targetPort is recorded as a name": {
			in:   edit(t, probeLive, "targetPort: 4191", "targetPort: admin-http"),
			b:    b,
			want: edit(t, probeRewritten, `original-probe-target-port: "4191"`, `original-probe-target-port: admin-http`),
		},
		"named targetPort is restored as a name": {
			in:   edit(t, probeRewritten, `original-probe-target-port: "4191"`, `original-probe-target-port: admin-http`),
			want: edit(t, probeRestored, "targetPort: 4191", "targetPort: admin-http"),
		},

		// kubectl apply of the same link output merges spec.ports by port
		// number: Linkerd's 4191 comes back next to the rewritten port.
		"re-apply: Linkerd's port merged next to the rewritten one is folded": {
			in: edit(t, probeRewritten, "    targetPort: 14191\n",
				"    targetPort: 14191\n  - name: mc-probe\n    port: 4191\n    protocol: TCP\n    targetPort: 4191\n"),
			b: b, want: probeRewritten,
		},
		"re-apply: merged port listed first is folded too": {
			in: edit(t, probeRewritten, "  ports:\n",
				"  ports:\n  - name: mc-probe\n    port: 4191\n    protocol: TCP\n    targetPort: 4191\n"),
			b: b, want: probeRewritten,
		},
		"re-apply after the binding is gone: the stale port is dropped on restore": {
			in: edit(t, probeRewritten, "    targetPort: 14191\n",
				"    targetPort: 14191\n  - name: mc-probe\n    port: 4191\n    protocol: TCP\n    targetPort: 4191\n"),
			want: probeRestored,
		},
		"two mc-probe ports, neither the one written": {
			in: edit(t, probeRewritten, "    targetPort: 14191\n",
				"    targetPort: 14191\n  - name: mc-probe\n    port: 4191\n    protocol: TCP\n    targetPort: 4191\n",
				"port: 14191\n", "port: 24191\n"), b: b,
			warning: `spec.ports has 2 ports named "mc-probe"`,
		},
		"two mc-probe ports on an object never rewritten": {
			in: edit(t, probeLive, "  ports:\n", "  ports:\n  - {name: mc-probe, port: 4192, protocol: TCP}\n"), b: b,
			warning: `spec.ports has 2 ports named "mc-probe"`,
		},

		// Bad input: unchanged, with a warning saying what is wrong.
		"LoadBalancer probe Service": {
			in: edit(t, probeLive, "type: ClusterIP", "type: LoadBalancer"), b: b,
			warning: `spec.type is "LoadBalancer"`,
		},
		"headless probe Service": {
			in: edit(t, probeLive, "clusterIP: 10.96.12.34", "clusterIP: None"), b: b,
			warning: "headless probe Services are not rewritten",
		},
		"probe Service without ports": {
			in: edit(t, probeLive, "  ports:\n  - name: mc-probe\n    port: 4191\n    protocol: TCP\n    targetPort: 4191\n", ""), b: b,
			warning: "spec.ports is a null, want a non-empty array",
		},
		"two ports, none named mc-probe": {
			in: edit(t, probeLive, "name: mc-probe", "name: probe", "  ports:\n", "  ports:\n  - {name: admin, port: 9990}\n"), b: b,
			warning: `spec.ports has 2 ports and none is named "mc-probe"`,
		},
		"port is a string": {
			in: edit(t, probeLive, "port: 4191", `port: "4191"`), b: b,
			warning: "spec.ports[0].port is a string, want an integer",
		},
		"targetPort is an object": {
			in: edit(t, probeLive, "targetPort: 4191", "targetPort: {a: 1}"), b: b,
			warning: "spec.ports[0].targetPort is a object, want a string or an integer",
		},
		"ipFamilies is not a list": {
			in: edit(t, probeLive, "ipFamilies: [IPv4]", "ipFamilies: IPv4"), b: b,
			warning: "spec.ipFamilies is a string, want an array of strings",
		},
		"spec is a list": {
			in: `
apiVersion: v1
kind: Service
metadata:
  name: probe-home
  namespace: linkerd-multicluster
  labels: {mirror.linkerd.io/mirrored-gateway: "true", mirror.linkerd.io/cluster-name: home}
spec: [1, 2]
`, b: b, warning: "spec is a array, want an object",
		},
		"annotation value is a number": {
			in: edit(t, probeLive, "linkerd.io/created-by: linkerd/cli version-2.20", "linkerd.io/created-by: 3"), b: b,
			warning: `metadata.annotations["linkerd.io/created-by"] is a number, want a string`,
		},
		"binding without probe port": {
			in: probeLive, b: &Binding{Cluster: "home", Namespace: "linkerd-tunnel", Service: "tunnel-home", Headless: "tunnel-home-gw", APIPort: 6443, GatewayPort: 14143},
			warning: `port "probe" is 0, want 1-65535`,
		},
		"corrupt recorded original port": {
			in:      edit(t, probeRewritten, `original-probe-port: "4191"`, `original-probe-port: "forty"`),
			warning: `cannot set the probe port to "forty"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := obj(t, tc.in)
			if k, c := Classify(in); k != KindProbe || c != "home" {
				t.Fatalf("Classify = %q, %q", k, c)
			}
			checkRow(t, in, tc.b, tc.opts, tc.want, tc.warning)
		})
	}
}
