// Package mutate owns the contract keys (keys.go, linkerd.go), the Binding and
// Options types and the pure rewrite engine; any package may import it (it
// imports only Kubernetes API types, client-go's clientcmd and a YAML parser).
//
// It holds the pure decision logic of the l5d-tunnel webhook and
// reconciler: given one object that `linkerd multicluster link` (or Linkerd's
// controllers) wrote and the tunnel binding of its cluster, it returns the
// object as it must be stored so that the link works through the tunnel.
//
// Nothing here talks to an API server or logs: callers look bindings up and
// log the warnings. Every function is deterministic and safe on any input.
//
// Three kinds of objects are rewritten (see Classify):
//
//   - the probe Service (label mirror.linkerd.io/mirrored-gateway=true)
//     becomes type ExternalName pointing at the binding's ClusterIP Service,
//     on the binding's probe port;
//   - the Link gets gatewayAddress = the binding's ready tunnel-server
//     addresses (Binding.GatewayAddresses, comma-separated; the headless
//     Service's name when none is ready), gatewayPort = its gateway port and
//     probeSpec.port = the probe port;
//   - the credentials Secret gets its kubeconfig server pointed at the
//     binding's api port, with tls-server-name set so the home API server's
//     certificate still verifies.
//
// Every rewritten field keeps its original value in an annotation
// (AnnotationOriginalPrefix + field), the values written are recorded in
// AnnotationRewrittenValues and the binding in AnnotationRewrittenFor. With
// these, Mutate is idempotent, re-rewrites from the recorded originals when
// the binding changes, tells a value it wrote from a value a user wrote
// later, and restores the originals when called without a binding.
//
// Annotations per kind (original-* only for fields that were present):
//
//	probe Service  original-service-type, original-external-name,
//	               original-probe-port, original-probe-target-port,
//	               original-internal-traffic-policy,
//	               original-external-traffic-policy,
//	               original-ip-family-policy, original-ip-families
//	Link           original-gateway-address, original-gateway-port,
//	               original-probe-port
//	Secret         original-server, original-tls-server-name
//	all            rewritten-for, rewritten-values
//
// The probe Service's clusterIP and clusterIPs are cleared but not recorded:
// the API server allocates new ones on restore. Secrets' kubeconfigs are
// parsed and written with client-go's clientcmd; a kubeconfig written by an
// older client-go comes back from a restore equal as a kubeconfig, not byte
// for byte (client-go v0.35 omits `preferences: {}`).
//
// The ready addresses are an input: the caller reads the headless Service's
// EndpointSlices and passes them through ReadyAddresses. A new list is a new
// rewritten value like any other: the recorded original stays, and a list
// that changes is written again because the stored one is the recorded
// written value.
//
// Bindings: FindBinding trusts only Services in the namespaces it is given;
// an error wrapping ErrUntrustedBinding means there is no usable binding
// (callers restore, and log the error so that users see why).
package mutate
