package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
)

// linkObjects are the objects of a link output the webhook rewrites.
type linkObjects struct {
	probe   *unstructured.Unstructured
	link    *unstructured.Unstructured
	secrets []*unstructured.Unstructured
}

func pickLinkObjects(objs []*unstructured.Unstructured) (*linkObjects, error) {
	lo := &linkObjects{}
	for _, o := range objs {
		switch {
		case o.GetKind() == "Service" && o.GetLabels()["mirror.linkerd.io/mirrored-gateway"] == "true":
			lo.probe = o
		case o.GetKind() == "Link":
			lo.link = o
		case o.GetKind() == "Secret" && fmt.Sprint(o.Object["type"]) == "mirror.linkerd.io/remote-kubeconfig":
			lo.secrets = append(lo.secrets, o)
		}
	}
	if lo.probe == nil || lo.link == nil || len(lo.secrets) == 0 {
		return nil, fmt.Errorf("link output lacks the probe Service (%v), the Link (%v) or credentials Secrets (%d)",
			lo.probe != nil, lo.link != nil, len(lo.secrets))
	}
	return lo, nil
}

func (lo *linkObjects) all() []*unstructured.Unstructured {
	return append([]*unstructured.Unstructured{lo.probe, lo.link}, lo.secrets...)
}

func (lo *linkObjects) resourceVersions() []string {
	var out []string
	for _, o := range lo.all() {
		out = append(out, o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName()+"@"+o.GetResourceVersion())
	}
	return out
}

// stored reads the cloud API server's copy of each object of the link output.
func (lt *linkTest) stored(ctx context.Context) (*linkObjects, error) {
	get := func(o *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		err := lt.topo.CloudCP.Client.Get(ctx, types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}, got)
		if err != nil {
			return nil, fmt.Errorf("get stored %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		return got, nil
	}
	var s linkObjects
	var err error
	if s.probe, err = get(lt.original.probe); err != nil {
		return nil, err
	}
	if s.link, err = get(lt.original.link); err != nil {
		return nil, err
	}
	for _, sec := range lt.original.secrets {
		g, err := get(sec)
		if err != nil {
			return nil, err
		}
		s.secrets = append(s.secrets, g)
	}
	return &s, nil
}

func decodeList(js []byte) ([]*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, fmt.Errorf("decode kubectl output: %w", err)
	}
	if !u.IsList() {
		return []*unstructured.Unstructured{u}, nil
	}
	l, err := u.ToList()
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for i := range l.Items {
		out = append(out, &l.Items[i])
	}
	return out, nil
}

func secretKubeconfig(s *unstructured.Unstructured) ([]byte, error) {
	enc, _, _ := unstructured.NestedString(s.Object, "data", "kubeconfig")
	kc, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: kubeconfig: %w", s.GetNamespace(), s.GetName(), err)
	}
	return kc, nil
}

// fieldString renders a string or number field as a string ("" if absent).
func fieldString(obj map[string]any, path ...string) string {
	v, found, _ := unstructured.NestedFieldNoCopy(obj, path...)
	if !found || v == nil {
		return ""
	}
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// sameKind reports whether the field keeps the original's JSON type.
func sameType(a, b any) bool {
	_, as := a.(string)
	_, bs := b.(string)
	return as == bs
}

func subset(what string, want, got map[string]string) []string {
	var p []string
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			p = append(p, fmt.Sprintf("%s %s=%q lost (now %q)", what, k, v, g))
		}
	}
	return p
}

func hasTunnelAnnotation(o *unstructured.Unstructured) bool {
	for k := range o.GetAnnotations() {
		if strings.HasPrefix(k, "l5d-tunnel.io/") {
			return true
		}
	}
	return false
}

// checkRewritten lists how the objects differ from what design.md says the
// webhook makes of the originals.
func (lt *linkTest) checkRewritten(got *linkObjects) []string {
	b := lt.topo.Binding
	var p []string
	orig := lt.original

	// probe Service: ExternalName to the binding's ClusterIP Service, on its probe port
	pr := got.probe
	if typ := fieldString(pr.Object, "spec", "type"); typ != "ExternalName" {
		p = append(p, fmt.Sprintf("probe Service type %q, want ExternalName", typ))
	}
	if en := fieldString(pr.Object, "spec", "externalName"); en != b.ServiceFQDN() {
		p = append(p, fmt.Sprintf("probe Service externalName %q, want %q", en, b.ServiceFQDN()))
	}
	if ip := fieldString(pr.Object, "spec", "clusterIP"); ip != "" {
		p = append(p, fmt.Sprintf("probe Service keeps clusterIP %q", ip))
	}
	ports, _, _ := unstructured.NestedSlice(pr.Object, "spec", "ports")
	if len(ports) != 1 || fieldString(ports[0].(map[string]any), "port") != strconv.Itoa(int(b.ProbePort)) {
		p = append(p, fmt.Sprintf("probe Service ports %v, want one port %d", ports, b.ProbePort))
	}
	p = append(p, subset("probe Service label", orig.probe.GetLabels(), pr.GetLabels())...)
	p = append(p, subset("probe Service annotation", orig.probe.GetAnnotations(), pr.GetAnnotations())...)

	// Link: gateway address/port and probe port of the binding, types kept
	l, ol := got.link, orig.link
	// the ready tunnel-server addresses (the headless name when none is ready)
	if a, want := fieldString(l.Object, "spec", "gatewayAddress"), lt.topo.GatewayAddress(); a != want {
		p = append(p, fmt.Sprintf("Link gatewayAddress %q, want %q (ready tunnel-server pods %v)", a, want, lt.topo.ReadyTunnelPods()))
	}
	for _, f := range []struct {
		path []string
		want int32
	}{{[]string{"spec", "gatewayPort"}, b.GatewayPort}, {[]string{"spec", "probeSpec", "port"}, b.ProbePort}} {
		if v := fieldString(l.Object, f.path...); v != strconv.Itoa(int(f.want)) {
			p = append(p, fmt.Sprintf("Link %s %q, want %d", strings.Join(f.path, "."), v, f.want))
		}
		gv, _, _ := unstructured.NestedFieldNoCopy(l.Object, f.path...)
		ov, _, _ := unstructured.NestedFieldNoCopy(ol.Object, f.path...)
		if !sameType(gv, ov) {
			p = append(p, fmt.Sprintf("Link %s changed JSON type: %T -> %T", strings.Join(f.path, "."), ov, gv))
		}
	}
	ospec, _, _ := unstructured.NestedMap(ol.Object, "spec")
	gspec, _, _ := unstructured.NestedMap(l.Object, "spec")
	for k, v := range ospec {
		switch k {
		case "gatewayAddress", "gatewayPort":
			continue
		case "probeSpec":
			om, _ := v.(map[string]any)
			gm, _ := gspec[k].(map[string]any)
			for pk, pv := range om {
				if pk != "port" && !reflect.DeepEqual(gm[pk], pv) {
					p = append(p, fmt.Sprintf("Link spec.probeSpec.%s changed: %v -> %v", pk, pv, gm[pk]))
				}
			}
			continue
		}
		if !reflect.DeepEqual(gspec[k], v) {
			p = append(p, fmt.Sprintf("Link spec.%s changed: %v -> %v", k, v, gspec[k]))
		}
	}
	p = append(p, subset("Link annotation", ol.GetAnnotations(), l.GetAnnotations())...)

	// credentials Secrets: server through the tunnel, tls-server-name = home's host
	home := lt.topo.HomeCredentials()
	for i, s := range got.secrets {
		kc, err := secretKubeconfig(s)
		if err != nil {
			p = append(p, err.Error())
			continue
		}
		cfg, err := clientcmd.Load(kc)
		if err != nil {
			p = append(p, fmt.Sprintf("Secret %s/%s: kubeconfig does not load: %v", s.GetNamespace(), s.GetName(), err))
			continue
		}
		ctx := cfg.Contexts[cfg.CurrentContext]
		if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
			p = append(p, fmt.Sprintf("Secret %s/%s: kubeconfig lost its current context", s.GetNamespace(), s.GetName()))
			continue
		}
		cl, ai := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
		wantServer := fmt.Sprintf("https://%s:%d", b.ServiceFQDN(), b.APIPort)
		if cl.Server != wantServer {
			p = append(p, fmt.Sprintf("Secret %s/%s: server %q, want %q", s.GetNamespace(), s.GetName(), cl.Server, wantServer))
		}
		if cl.TLSServerName != harness.HomeAPIIP {
			p = append(p, fmt.Sprintf("Secret %s/%s: tls-server-name %q, want the original host %q", s.GetNamespace(), s.GetName(), cl.TLSServerName, harness.HomeAPIIP))
		}
		if !bytes.Equal(cl.CertificateAuthorityData, home.CAData) || ai.Token != home.Token || cl.InsecureSkipTLSVerify {
			p = append(p, fmt.Sprintf("Secret %s/%s: CA, token or TLS verification changed", s.GetNamespace(), s.GetName()))
		}
		if typ := fmt.Sprint(s.Object["type"]); typ != "mirror.linkerd.io/remote-kubeconfig" {
			p = append(p, fmt.Sprintf("Secret type %q", typ))
		}
		p = append(p, subset("Secret label", orig.secrets[i].GetLabels(), s.GetLabels())...)
		p = append(p, subset("Secret annotation", orig.secrets[i].GetAnnotations(), s.GetAnnotations())...)
	}
	for _, o := range got.all() {
		if !hasTunnelAnnotation(o) {
			p = append(p, fmt.Sprintf("%s %s/%s carries no l5d-tunnel.io/ annotation recording the original", o.GetKind(), o.GetNamespace(), o.GetName()))
		}
	}
	return p
}

// checkOriginal lists how the objects differ from the link output as
// applied (what they must be without a binding).
func (lt *linkTest) checkOriginal(got *linkObjects) []string {
	var p []string
	orig := lt.original
	if typ := fieldString(got.probe.Object, "spec", "type"); typ != "ClusterIP" {
		p = append(p, fmt.Sprintf("probe Service type %q, want ClusterIP", typ))
	}
	if en := fieldString(got.probe.Object, "spec", "externalName"); en != "" {
		p = append(p, fmt.Sprintf("probe Service keeps externalName %q", en))
	}
	op, _, _ := unstructured.NestedSlice(orig.probe.Object, "spec", "ports")
	gp, _, _ := unstructured.NestedSlice(got.probe.Object, "spec", "ports")
	if len(op) != len(gp) || len(gp) == 0 || fieldString(op[0].(map[string]any), "port") != fieldString(gp[0].(map[string]any), "port") {
		p = append(p, fmt.Sprintf("probe Service ports %v, want %v", gp, op))
	}
	for _, f := range [][]string{{"spec", "gatewayAddress"}, {"spec", "gatewayPort"}, {"spec", "probeSpec", "port"}} {
		ov, _, _ := unstructured.NestedFieldNoCopy(orig.link.Object, f...)
		gv, _, _ := unstructured.NestedFieldNoCopy(got.link.Object, f...)
		if !reflect.DeepEqual(ov, gv) {
			p = append(p, fmt.Sprintf("Link %s is %v, want the original %v", strings.Join(f, "."), gv, ov))
		}
	}
	for i, s := range got.secrets {
		kc, err := secretKubeconfig(s)
		if err != nil {
			p = append(p, err.Error())
			continue
		}
		okc, _ := secretKubeconfig(orig.secrets[i])
		if string(kc) != string(okc) {
			// Restore edits server and tls-server-name back in place.
			p = append(p, fmt.Sprintf("Secret %s/%s: kubeconfig is not the original byte for byte", s.GetNamespace(), s.GetName()))
		}
		gcfg, err1 := clientcmd.Load(kc)
		ocfg, err2 := clientcmd.Load(okc)
		if err1 != nil || err2 != nil {
			p = append(p, fmt.Sprintf("Secret %s/%s: kubeconfig does not load: %v %v", s.GetNamespace(), s.GetName(), err1, err2))
			continue
		}
		gcl := gcfg.Clusters[gcfg.Contexts[gcfg.CurrentContext].Cluster]
		ocl := ocfg.Clusters[ocfg.Contexts[ocfg.CurrentContext].Cluster]
		if gcl.Server != ocl.Server || gcl.TLSServerName != ocl.TLSServerName {
			p = append(p, fmt.Sprintf("Secret %s/%s: server %q tls-server-name %q, want the original %q %q",
				s.GetNamespace(), s.GetName(), gcl.Server, gcl.TLSServerName, ocl.Server, ocl.TLSServerName))
		}
	}
	return p
}

// objectDiff shows the fields that differ between two versions of an object
// (for Secrets: the kubeconfig's server and tls-server-name, no credentials).
func objectDiff(a, b *unstructured.Unstructured) string {
	lines := harness.Diff(a, b)
	if a.GetKind() == "Secret" {
		kl, err := harness.DiffKubeconfig(a, b)
		if err != nil {
			kl = []string{"kubeconfig: " + err.Error()}
		}
		lines = append(lines, kl...)
		ea, _, _ := unstructured.NestedString(a.Object, "data", "kubeconfig")
		eb, _, _ := unstructured.NestedString(b.Object, "data", "kubeconfig")
		if ea != eb && len(kl) == 0 {
			lines = append(lines, "~ data.kubeconfig changed (not in server or tls-server-name)")
		}
	}
	return strings.Join(lines, "\n")
}
