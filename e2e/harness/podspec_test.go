package harness

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

func testDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	const y = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: home-tunnel-client, namespace: l5d-tunnel}
spec:
  template:
    spec:
      containers:
      - name: tunnel
        image: ghcr.io/l5d-tunnel/tunnel:v0.1.0
        args:
        - client
        - --server=$(TUNNEL_SERVER)
        - --literal=$$(TUNNEL_SERVER)
        - --undefined=$(NOPE)
        - --admin-addr=:9090
        - --port=api=:6443
        - --keep=10.0.0.1:80
        - --token-file=/etc/l5d-tunnel/token/token
        - --ca-file=/etc/l5d-tunnel/ca/ca.crt
        - --log-level=info
        env:
        - {name: TUNNEL_SERVER, value: "wss://cloud.example/tunnel"}
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - name: GOMEMLIMIT
          valueFrom: {resourceFieldRef: {resource: limits.memory}}
        resources:
          limits: {memory: 64Mi}
        ports:
        - {name: admin, containerPort: 9090}
        readinessProbe:
          httpGet: {path: /readyz, port: admin}
        volumeMounts:
        - {name: token, mountPath: /etc/l5d-tunnel/token, readOnly: true}
        - {name: ca, mountPath: /etc/l5d-tunnel/ca/}
      volumes:
      - name: token
        secret: {secretName: home-tunnel-token}
      - name: ca
        configMap:
          name: home-ca
          items: [{key: bundle, path: ca.crt}]
`
	d := &appsv1.Deployment{}
	if err := yaml.UnmarshalStrict([]byte(y), d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPodProcessCommand(t *testing.T) {
	dir := t.TempDir()
	p := PodProcess{
		Deployment: testDeployment(t), PodName: "pod-0", PodIP: "10.244.0.10", Dir: dir,
		Volume: func(v corev1.Volume) (map[string][]byte, error) {
			if v.Secret != nil {
				return map[string][]byte{"token": []byte("s3cret")}, nil
			}
			return map[string][]byte{"bundle": []byte("PEM"), "other": []byte("not mounted")}, nil
		},
		Override:  map[string]string{"log-level": "debug"},
		ExtraArgs: []string{"--extra"},
	}
	args, env, err := p.Command()
	if err != nil {
		t.Fatal(err)
	}
	tokenDir, caDir := filepath.Join(dir, "volumes", "token"), filepath.Join(dir, "volumes", "ca")
	want := []string{"client",
		"--server=wss://cloud.example/tunnel",
		"--literal=$(TUNNEL_SERVER)",
		"--undefined=$(NOPE)",
		"--admin-addr=10.244.0.10:9090",
		"--port=api=10.244.0.10:6443",
		"--keep=10.0.0.1:80",
		"--token-file=" + tokenDir + "/token",
		"--ca-file=" + caDir + "/ca.crt",
		"--log-level=debug",
		"--extra",
	}
	if !slices.Equal(args, want) {
		t.Errorf("args:\n got %q\nwant %q", args, want)
	}
	wantEnv := []string{"TUNNEL_SERVER=wss://cloud.example/tunnel", "POD_NAMESPACE=l5d-tunnel", "GOMEMLIMIT=67108864"}
	if !slices.Equal(env, wantEnv) {
		t.Errorf("env %q, want %q", env, wantEnv)
	}
	for path, content := range map[string]string{tokenDir + "/token": "s3cret", caDir + "/ca.crt": "PEM"} {
		if b, err := os.ReadFile(path); err != nil || string(b) != content {
			t.Errorf("%s: %q %v, want %q", path, b, err, content)
		}
	}
	if _, err := os.Stat(filepath.Join(caDir, "other")); !os.IsNotExist(err) {
		t.Errorf("a ConfigMap key not in items was mounted: %v", err)
	}
	if u := p.ReadinessURL(); u != "http://10.244.0.10:9090/readyz" {
		t.Errorf("readiness URL %q", u)
	}
}

func TestPodProcessRefuses(t *testing.T) {
	vol := func(corev1.Volume) (map[string][]byte, error) { return nil, nil }
	for name, edit := range map[string]func(*PodProcess){
		"override of an unset flag": func(p *PodProcess) { p.Override = map[string]string{"nope": "x"} },
		"command set":               func(p *PodProcess) { p.Deployment.Spec.Template.Spec.Containers[0].Command = []string{"/bin/sh"} },
		"unknown fieldRef": func(p *PodProcess) {
			c := &p.Deployment.Spec.Template.Spec.Containers[0]
			c.Env = append(c.Env, corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}})
		},
		"limit not set": func(p *PodProcess) {
			p.Deployment.Spec.Template.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}
		},
		"mount without volume": func(p *PodProcess) { p.Deployment.Spec.Template.Spec.Volumes = nil },
	} {
		t.Run(name, func(t *testing.T) {
			p := PodProcess{Deployment: testDeployment(t), PodIP: "10.0.0.1", Dir: t.TempDir(), Volume: vol}
			edit(&p)
			if _, _, err := p.Command(); err == nil || !strings.Contains(err.Error(), "home-tunnel-client") {
				t.Errorf("err %v, want one naming the Deployment", err)
			}
		})
	}
}
