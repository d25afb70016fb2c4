package mutate

// This file holds the keys of this project's contract: the labels, port
// names and annotations of l5d-tunnel.io/ (see docs/design.md). Linkerd's own
// keys are in linkerd.go.

// Label and annotation keys of the l5d-tunnel contract (see docs/design.md).
const (
	// LabelLink on a Service marks it as part of the tunnel binding of the
	// named link/cluster.
	LabelLink = "l5d-tunnel.io/link"
	// LabelRewrite=enabled on a Namespace opts it in to rewriting.
	LabelRewrite = "l5d-tunnel.io/rewrite"
	// LabelRewriteEnabled is the value of LabelRewrite that opts a Namespace in.
	LabelRewriteEnabled = "enabled"
	// AnnotationPrefix prefixes every annotation this project writes.
	AnnotationPrefix = "l5d-tunnel.io/"
	// AnnotationCheck on an object of a dry-run admission request asks the
	// webhook to answer with one more warning, "check <value>: <result>"
	// (linkerd-tunnel check uses it to prove the webhook is called).
	AnnotationCheck = AnnotationPrefix + "check"

	// PortAPI names the binding ClusterIP Service's port for the home API server.
	PortAPI = "api"
	// PortProbe names the binding ClusterIP Service's port for the gateway probe.
	PortProbe = "probe"
	// PortGateway names the binding headless Service's port for gateway traffic.
	PortGateway = "gateway"
)

// Annotations written on rewritten objects. The marker and the record of
// written values are on every rewritten object; an original-* annotation is
// present exactly when the field was present before the rewrite (a field
// that was absent is removed again on restore).
const (
	// AnnotationRewrittenFor marks a rewritten object. Its value names the
	// binding as "<namespace>/<ClusterIP Service>".
	AnnotationRewrittenFor = AnnotationPrefix + "rewritten-for"
	// AnnotationRewrittenValues holds a JSON object mapping each field key
	// (the suffixes below) to the value Mutate wrote; a key that is missing
	// means Mutate removed that field. A field whose current value differs
	// from it was changed by someone else after the rewrite, and its current
	// value becomes the new original.
	AnnotationRewrittenValues = AnnotationPrefix + "rewritten-values"
	// AnnotationOriginalPrefix prefixes the annotations that keep original
	// values.
	AnnotationOriginalPrefix = AnnotationPrefix + "original-"

	// AnnotationOriginalGatewayAddress keeps the Link's spec.gatewayAddress.
	AnnotationOriginalGatewayAddress = AnnotationOriginalPrefix + FieldGatewayAddress
	// AnnotationOriginalGatewayPort keeps the Link's spec.gatewayPort.
	AnnotationOriginalGatewayPort = AnnotationOriginalPrefix + FieldGatewayPort
	// AnnotationOriginalProbePort keeps the Link's spec.probeSpec.port, or the
	// probe Service's probe port (spec.ports[].port).
	AnnotationOriginalProbePort = AnnotationOriginalPrefix + FieldProbePort
	// AnnotationOriginalProbeTargetPort keeps the probe Service's probe
	// port's targetPort.
	AnnotationOriginalProbeTargetPort = AnnotationOriginalPrefix + FieldProbeTargetPort
	// AnnotationOriginalServiceType keeps the probe Service's spec.type.
	AnnotationOriginalServiceType = AnnotationOriginalPrefix + FieldServiceType
	// AnnotationOriginalExternalName keeps the probe Service's
	// spec.externalName (only if it had one).
	AnnotationOriginalExternalName = AnnotationOriginalPrefix + FieldExternalName
	// AnnotationOriginalInternalTrafficPolicy keeps the probe Service's
	// spec.internalTrafficPolicy.
	AnnotationOriginalInternalTrafficPolicy = AnnotationOriginalPrefix + FieldInternalTrafficPolicy
	// AnnotationOriginalExternalTrafficPolicy keeps the probe Service's
	// spec.externalTrafficPolicy.
	AnnotationOriginalExternalTrafficPolicy = AnnotationOriginalPrefix + FieldExternalTrafficPolicy
	// AnnotationOriginalIPFamilyPolicy keeps the probe Service's
	// spec.ipFamilyPolicy.
	AnnotationOriginalIPFamilyPolicy = AnnotationOriginalPrefix + FieldIPFamilyPolicy
	// AnnotationOriginalIPFamilies keeps the probe Service's spec.ipFamilies,
	// comma-separated.
	AnnotationOriginalIPFamilies = AnnotationOriginalPrefix + FieldIPFamilies
	// AnnotationOriginalServer keeps the kubeconfig server URL of the
	// credentials Secret's current context (it is not a credential).
	AnnotationOriginalServer = AnnotationOriginalPrefix + FieldServer
	// AnnotationOriginalTLSServerName keeps the kubeconfig tls-server-name of
	// the credentials Secret's current context.
	AnnotationOriginalTLSServerName = AnnotationOriginalPrefix + FieldTLSServerName
)

// Field keys: the suffixes of the original-* annotations and the keys of
// AnnotationRewrittenValues.
const (
	FieldGatewayAddress        = "gateway-address"         // Link spec.gatewayAddress
	FieldGatewayPort           = "gateway-port"            // Link spec.gatewayPort
	FieldProbePort             = "probe-port"              // Link spec.probeSpec.port; probe Service port
	FieldProbeTargetPort       = "probe-target-port"       // probe Service port's targetPort
	FieldServiceType           = "service-type"            // probe Service spec.type
	FieldExternalName          = "external-name"           // probe Service spec.externalName
	FieldInternalTrafficPolicy = "internal-traffic-policy" // probe Service spec.internalTrafficPolicy
	FieldExternalTrafficPolicy = "external-traffic-policy" // probe Service spec.externalTrafficPolicy
	FieldIPFamilyPolicy        = "ip-family-policy"        // probe Service spec.ipFamilyPolicy
	FieldIPFamilies            = "ip-families"             // probe Service spec.ipFamilies, comma-separated
	// FieldClusterIP and FieldClusterIPs are cleared on the probe Service but
	// never recorded: the API server allocates a new ClusterIP when the
	// Service becomes ClusterIP again, and asking for the old address could
	// collide with a Service that got it in the meantime.
	FieldClusterIP     = "cluster-ip"
	FieldClusterIPs    = "cluster-ips"
	FieldServer        = "server"
	FieldTLSServerName = "tls-server-name"
)
