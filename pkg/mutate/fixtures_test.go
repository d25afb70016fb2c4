package mutate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// linkFiles are the `linkerd multicluster link` outputs of a version.
func linkFiles(v string) []string {
	files := []string{"link.yaml"}
	if fixtures.Has(v, "link-legacy.yaml") {
		files = append(files, "link-legacy.yaml")
	}
	return files
}

// TestFixtures rewrites what every Linkerd version's link command prints, as
// printed and as the API server hands it to the webhook, and checks each
// object, idempotence and the restore round trip.
func TestFixtures(t *testing.T) {
	b := testBinding()
	for _, v := range fixtures.Versions() {
		for _, file := range linkFiles(v) {
			objs, err := fixtures.Objects(v, file)
			if err != nil {
				t.Fatal(err)
			}
			counts := map[Kind]int{}
			for i, o := range objs {
				kind, cluster := Classify(o)
				counts[kind]++
				for _, live := range []bool{false, true} {
					in := o
					if live {
						in = asAdmitted(t, o, i)
					}
					name := fmt.Sprintf("%s/%s/%d-%s-%s/live=%v", v, file, i, o.GetKind(), o.GetName(), live)
					t.Run(name, func(t *testing.T) {
						if kind != KindNone && cluster != "home" {
							t.Fatalf("cluster = %q", cluster)
						}
						out, changed, warnings := mutate(t, in, b, Options{})
						if len(warnings) > 0 {
							t.Errorf("warnings: %q", warnings)
						}
						if changed != (kind != KindNone) {
							t.Fatalf("kind %q: changed = %v", kind, changed)
						}
						switch kind {
						case KindNone:
							return
						case KindProbe:
							checkProbe(t, in, out)
						case KindLink:
							checkLink(t, in, out)
						case KindCredentials:
							checkCredentials(t, in, out)
						}
						if _, again, w := mutate(t, out, b, Options{}); again || len(w) > 0 {
							t.Errorf("second Mutate: changed=%v warnings=%q", again, w)
						}
						back, restored, w := mutate(t, out, nil, Options{})
						if !restored || len(w) > 0 {
							t.Errorf("restore: changed=%v warnings=%q", restored, w)
						}
						checkRoundTrip(t, kind, in, back)
						if _, again, _ := mutate(t, back, nil, Options{}); again {
							t.Error("restoring a restored object changed it")
						}
					})
				}
			}
			wantSecrets := 2
			if v == "stable-2.12.6" {
				wantSecrets = 1
			}
			if counts[KindLink] != 1 || counts[KindProbe] != 1 || counts[KindCredentials] != wantSecrets {
				t.Errorf("%s/%s: found %v", v, file, counts)
			}
		}
		// What the service mirror creates is never touched.
		mirrored, err := fixtures.Objects(v, "mirrored.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if len(mirrored) < 5 {
			t.Fatalf("%s/mirrored.yaml: only %d objects", v, len(mirrored))
		}
		for i, o := range mirrored {
			for _, live := range []bool{false, true} {
				in := o
				if live {
					in = asAdmitted(t, o, i)
				}
				if k, _ := Classify(in); k != KindNone {
					t.Errorf("%s/mirrored.yaml %s %s: kind %q", v, o.GetKind(), o.GetName(), k)
				}
				out, changed, w := mutate(t, in, b, Options{})
				if changed || len(w) > 0 || diff(in, out) != "" {
					t.Errorf("%s/mirrored.yaml %s %s: changed=%v warnings=%q", v, o.GetKind(), o.GetName(), changed, w)
				}
			}
		}
	}
}

// asAdmitted returns o as a mutating webhook receives it on CREATE after
// `kubectl apply`: server-side metadata, the last-applied annotation, Service
// defaults and allocations, and the Link CRD defaults.
func asAdmitted(t testing.TB, o *unstructured.Unstructured, i int) *unstructured.Unstructured {
	t.Helper()
	u := o.DeepCopy()
	js, err := json.Marshal(o.Object)
	if err != nil {
		t.Fatal(err)
	}
	ann, _ := annotationsOf(u)
	ann["kubectl.kubernetes.io/last-applied-configuration"] = string(js) + "\n"
	u.SetAnnotations(ann)
	u.SetUID(types.UID(fmt.Sprintf("0b1c2d3e-0000-4000-8000-%012d", i)))
	u.SetResourceVersion(fmt.Sprint(1000 + i))
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	switch {
	case u.GetKind() == "Service" && u.GetAPIVersion() == "v1":
		spec, _ := u.Object["spec"].(map[string]any)
		setDefault(spec, "type", "ClusterIP")
		setDefault(spec, "sessionAffinity", "None")
		if spec["type"] == "ClusterIP" {
			setDefault(spec, "internalTrafficPolicy", "Cluster")
			ip := fmt.Sprintf("10.96.%d.%d", i/200, 10+i%200)
			setDefault(spec, "clusterIP", ip)
			setDefault(spec, "clusterIPs", []any{spec["clusterIP"]})
			setDefault(spec, "ipFamilies", []any{"IPv4"})
			setDefault(spec, "ipFamilyPolicy", "SingleStack")
		}
		ports, _ := spec["ports"].([]any)
		for _, p := range ports {
			pm := p.(map[string]any)
			setDefault(pm, "protocol", "TCP")
			setDefault(pm, "targetPort", pm["port"])
		}
	case u.GetKind() == LinkKind:
		probe, _, _ := unstructured.NestedMap(u.Object, "spec", "probeSpec")
		setDefault(probe, "timeout", "30s")
		setDefault(probe, "failureThreshold", "3")
		if err := unstructured.SetNestedMap(u.Object, probe, "spec", "probeSpec"); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

func setDefault(m map[string]any, k string, v any) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func checkProbe(t *testing.T, in, out *unstructured.Unstructured) {
	t.Helper()
	checkExternalNameValid(t, out)
	spec := out.Object["spec"].(map[string]any)
	if spec["externalName"] != tunnelFQDN {
		t.Errorf("externalName = %v", spec["externalName"])
	}
	port := spec["ports"].([]any)[0].(map[string]any)
	if port["port"] != int64(14191) || port["targetPort"] != int64(14191) || port["name"] != "mc-probe" {
		t.Errorf("port = %v", port)
	}
	if !reflect.DeepEqual(in.GetLabels(), out.GetLabels()) {
		t.Errorf("labels changed: %v", out.GetLabels())
	}
	checkAnnotationsKept(t, in, out)
	ann := out.GetAnnotations()
	if ann[AnnotationOriginalProbePort] != "4191" || ann[AnnotationRewrittenFor] != "linkerd-tunnel/tunnel-home" {
		t.Errorf("annotations: %v", ann)
	}
	// Outside spec and metadata.annotations nothing changed.
	a, c := in.DeepCopy(), out.DeepCopy()
	for _, u := range []*unstructured.Unstructured{a, c} {
		delete(u.Object, "spec")
		unstructured.RemoveNestedField(u.Object, "metadata", "annotations")
	}
	if d := diff(a, c); d != "" {
		t.Errorf("changed beyond spec and annotations:\n%s", d)
	}
}

// checkExternalNameValid applies what k8s.io/kubernetes
// pkg/apis/core/validation.validateService requires of an ExternalName
// Service on CREATE (on UPDATE the same holds: the registry only wipes
// unchanged fields).
func checkExternalNameValid(t *testing.T, out *unstructured.Unstructured) {
	t.Helper()
	var svc corev1.Service
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(out.Object, &svc); err != nil {
		t.Fatalf("not a Service: %v", err)
	}
	s := svc.Spec
	if s.Type != corev1.ServiceTypeExternalName {
		t.Errorf("type = %q", s.Type)
	}
	if errs := validation.IsDNS1123Subdomain(strings.TrimSuffix(s.ExternalName, ".")); len(errs) > 0 {
		t.Errorf("externalName %q: %v", s.ExternalName, errs)
	}
	forbidden := map[string]bool{
		"clusterIP": s.ClusterIP != "", "clusterIPs": len(s.ClusterIPs) > 0, "ipFamilies": len(s.IPFamilies) > 0,
		"ipFamilyPolicy": s.IPFamilyPolicy != nil, "externalTrafficPolicy": s.ExternalTrafficPolicy != "",
		"healthCheckNodePort": s.HealthCheckNodePort != 0, "allocateLoadBalancerNodePorts": s.AllocateLoadBalancerNodePorts != nil,
		"loadBalancerClass": s.LoadBalancerClass != nil, "loadBalancerSourceRanges": len(s.LoadBalancerSourceRanges) > 0,
		"internalTrafficPolicy (hidden on read)": s.InternalTrafficPolicy != nil,
	}
	for _, p := range s.Ports {
		if p.NodePort != 0 {
			forbidden["nodePort"] = true
		}
	}
	for f, set := range forbidden {
		if set {
			t.Errorf("ExternalName Service carries %s", f)
		}
	}
}

func checkAnnotationsKept(t *testing.T, in, out *unstructured.Unstructured) {
	t.Helper()
	inAnn, _ := annotationsOf(in)
	outAnn := out.GetAnnotations()
	for k, v := range inAnn {
		if outAnn[k] != v {
			t.Errorf("annotation %s lost or changed", k)
		}
	}
}

func checkLink(t *testing.T, in, out *unstructured.Unstructured) {
	t.Helper()
	want := in.DeepCopy()
	spec := want.Object["spec"].(map[string]any)
	spec["gatewayAddress"] = headlessFQDN
	spec["gatewayPort"] = "14143"
	spec["probeSpec"].(map[string]any)["port"] = "14191"
	ann, _ := annotationsOf(in)
	ann[AnnotationRewrittenFor] = "linkerd-tunnel/tunnel-home"
	ann[AnnotationRewrittenValues] = `{"gateway-address":"` + headlessFQDN + `","gateway-port":"14143","probe-port":"14191"}`
	ann[AnnotationOriginalGatewayAddress] = "203.0.113.10"
	ann[AnnotationOriginalGatewayPort] = "4143"
	ann[AnnotationOriginalProbePort] = "4191"
	want.SetAnnotations(ann)
	if d := diff(want, out); d != "" {
		t.Errorf("Link (-want +got):\n%s", d)
	}
}

func checkCredentials(t *testing.T, in, out *unstructured.Unstructured) {
	t.Helper()
	inCfg, inCluster := loadKubeconfig(t, in)
	origServer := inCluster.Server
	cfg, cluster := loadKubeconfig(t, out)
	wantTLS := strings.TrimSuffix(strings.TrimPrefix(origServer, "https://"), ":6443")
	if cluster.Server != tunnelServer || cluster.TLSServerName != wantTLS {
		t.Errorf("server %q tls-server-name %q, want %q %q", cluster.Server, cluster.TLSServerName, tunnelServer, wantTLS)
	}
	if !bytes.Equal(cluster.CertificateAuthorityData, inCluster.CertificateAuthorityData) || len(cluster.CertificateAuthorityData) == 0 {
		t.Error("CA changed or empty")
	}
	user := cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo]
	inUser := inCfg.AuthInfos[inCfg.Contexts[inCfg.CurrentContext].AuthInfo]
	if user == nil || user.Token == "" || user.Token != inUser.Token || strings.Count(user.Token, ".") != 2 {
		t.Error("token changed or not a JWT")
	}
	// The rest of the kubeconfig is the same.
	cluster.Server, cluster.TLSServerName, inCluster.Server = "", "", ""
	if d := diffAny(inCfg, cfg); d != "" {
		t.Errorf("kubeconfig changed beyond server and tls-server-name:\n%s", d)
	}
	checkAnnotationsKept(t, in, out)
	ann := out.GetAnnotations()
	if ann[AnnotationOriginalServer] != origServer {
		t.Errorf("original server annotation = %q", ann[AnnotationOriginalServer])
	}
	if _, ok := ann[AnnotationOriginalTLSServerName]; ok {
		t.Error("original tls-server-name recorded though there was none")
	}
}

// checkRoundTrip checks that restoring gives back the original, except
// for what the API server allocates or canonicalises anyway: the probe
// Service's ClusterIPs (allocated again) and null annotations (stored as
// absent). The kubeconfig comes back byte for byte.
func checkRoundTrip(t *testing.T, kind Kind, in, back *unstructured.Unstructured) {
	t.Helper()
	want := in.DeepCopy()
	if md, ok := want.Object["metadata"].(map[string]any); ok {
		if a, ok := md["annotations"]; ok && a == nil {
			delete(md, "annotations")
		}
	}
	switch kind {
	case KindProbe:
		unstructured.RemoveNestedField(want.Object, "spec", "clusterIP")
		unstructured.RemoveNestedField(want.Object, "spec", "clusterIPs")
	case KindCredentials:
		if got, orig := kubeconfigOf(t, back), kubeconfigOf(t, want); got != orig {
			t.Errorf("restored kubeconfig differs in bytes (-original +restored):\n%s", diffAny(orig, got))
		}
	}
	if d := diff(want, back); d != "" {
		t.Errorf("restore differs (-original +restored):\n%s", d)
	}
}
