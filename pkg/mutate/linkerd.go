package mutate

import "slices"

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

// LinkVersions returns the Link API versions Mutate knows the shape of,
// oldest first. Classify recognises Links of any version of LinkGroup; Mutate
// leaves other versions unchanged with a warning. The reconciler lists Links
// in the newest of them the API server serves.
func LinkVersions() []string { return slices.Clone(linkVersions) }

var linkVersions = []string{"v1alpha1", "v1alpha2", "v1alpha3"}
