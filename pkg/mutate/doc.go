// Package mutate holds the pure decision logic of the l5d-tunnel webhook and
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
//   - the Link gets gatewayAddress = the binding's headless Service,
//     gatewayPort = its gateway port and probeSpec.port = the probe port;
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
package mutate
