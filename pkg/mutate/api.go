package mutate

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

// Linkerd's keys (kept here because github.com/linkerd/linkerd2 cannot be
// imported; see docs/linkerd-facts.md).
const (
	// LinkerdLabelMirroredGateway=true marks the probe Service.
	LinkerdLabelMirroredGateway = "mirror.linkerd.io/mirrored-gateway"
	// LinkerdLabelMirroredService=true marks mirror and federated Services.
	LinkerdLabelMirroredService = "mirror.linkerd.io/mirrored-service"
	// LinkerdLabelClusterName names the link of probe and mirror objects.
	LinkerdLabelClusterName = "mirror.linkerd.io/cluster-name"
	// LinkerdLabelHeadlessMirror marks endpoint-mirror Services of a headless mirror.
	LinkerdLabelHeadlessMirror = "mirror.linkerd.io/headless-mirror-svc-name"
	// LinkerdLabelRemoteDiscovery marks remote-discovery mirrors.
	LinkerdLabelRemoteDiscovery = "multicluster.linkerd.io/remote-discovery"
	// LinkerdAnnotationRemoteDiscovery marks federated Services.
	LinkerdAnnotationRemoteDiscovery = "multicluster.linkerd.io/remote-discovery"
	// LinkerdAnnotationLocalDiscovery marks federated Services.
	LinkerdAnnotationLocalDiscovery = "multicluster.linkerd.io/local-discovery"
	// LinkerdLabelMCClusterName names the cluster of the credentials Secret
	// copy in the linkerd namespace.
	LinkerdLabelMCClusterName = "multicluster.linkerd.io/cluster-name"
	// LinkerdSecretTypeKubeconfig is the type of credentials Secrets.
	LinkerdSecretTypeKubeconfig = "mirror.linkerd.io/remote-kubeconfig"
	// LinkerdCredentialsNamePrefix prefixes credentials Secret names.
	LinkerdCredentialsNamePrefix = "cluster-credentials-"
	// LinkerdKubeconfigKey is the data key of the kubeconfig in credentials Secrets.
	LinkerdKubeconfigKey = "kubeconfig"
	// LinkerdProbePortName names the probe Service's port.
	LinkerdProbePortName = "mc-probe"
	// LinkGroup is the API group of Link.
	LinkGroup = "multicluster.linkerd.io"
	// LinkKind is the kind of Link.
	LinkKind = "Link"
)

// linkVersions are the Link API versions Mutate knows the shape of. Classify
// recognises Links of any version of LinkGroup; Mutate leaves other versions
// unchanged with a warning.
var linkVersions = []string{"v1alpha1", "v1alpha2", "v1alpha3"}

// Kind is what a link object is to this package.
type Kind string

// The kinds of objects Classify tells apart.
const (
	KindNone        Kind = ""            // not an object this package rewrites
	KindProbe       Kind = "probe"       // the probe Service
	KindLink        Kind = "link"        // a multicluster.linkerd.io Link
	KindCredentials Kind = "credentials" // a remote-kubeconfig Secret
)

// Binding is the tunnel of one linked cluster, as found in the cloud cluster:
// a ClusterIP Service with ports api and probe, and a headless Service with
// port gateway, both labelled l5d-tunnel.io/link=<Cluster>.
type Binding struct {
	// Cluster is the link's cluster name (the LabelLink value).
	Cluster string
	// Namespace holds both Services.
	Namespace string
	// Service is the ClusterIP Service name (ports api, probe).
	Service string
	// Headless is the headless Service name (port gateway).
	Headless string
	// APIPort is the api port of Service.
	APIPort int32
	// ProbePort is the probe port of Service.
	ProbePort int32
	// GatewayPort is the port the tunnel-server pods accept gateway traffic
	// on: the gateway port's targetPort on Headless (mirror Endpoints point
	// straight at the pod IPs the headless name resolves to).
	GatewayPort int32
	// GatewayAddresses are the ready addresses of Headless's endpoints (the
	// tunnel-server pod IPs), as the caller found them (ReadyAddresses).
	// When there is at least one, the Link's gatewayAddress is their sorted,
	// de-duplicated, comma-separated list instead of HeadlessFQDN, so that
	// Linkerd's service mirror drops a dead pod as soon as the list changes
	// (docs/design.md, "Failover"). Empty: HeadlessFQDN. Every entry must
	// be an IP address; order, duplicates and spelling do not matter.
	GatewayAddresses []string
}

// Options are the cluster-wide settings of the rewrite.
type Options struct {
	// ClusterDomain builds Service FQDNs; default "cluster.local".
	ClusterDomain string
	// DefaultTLSServerName is used for the credentials kubeconfig when the
	// original server already pointed at the tunnel; default
	// "kubernetes.default.svc".
	DefaultTLSServerName string
}
