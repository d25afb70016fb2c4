package mutate

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeconfigCases are kubeconfigs as people and tools write them, each with
// the exact bytes the rewrite must produce for testBinding: only server and
// tls-server-name of the cluster entry the current context uses change.
var kubeconfigCases = map[string]struct {
	in, want string
	// server and tls-server-name of the rewritten cluster, as client-go reads them
	tls string
}{
	"extensions, unknown fields and an exec plugin": {
		in: `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EK
    extensions:
    - extension:
        last-update: Tue, 01 Dec 2026 20:00:00 UTC
        provider: minikube.sigs.k8s.io
      name: cluster_info
    server: https://192.168.1.10:6443
    someFutureField:
      nested: [1, 2]
  name: home
contexts:
- context:
    cluster: home
    extensions:
    - extension:
        provider: minikube.sigs.k8s.io
      name: context_info
    user: remote
  name: home
current-context: home
extensions:
- extension:
    someFutureField: 7
  name: top
kind: Config
preferences: {}
users:
- name: remote
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      args:
      - token
      command: aws-iam-authenticator
      env: null
      interactiveMode: Never
    someExtension: keep-me
`,
		want: `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EK
    extensions:
    - extension:
        last-update: Tue, 01 Dec 2026 20:00:00 UTC
        provider: minikube.sigs.k8s.io
      name: cluster_info
    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443
    tls-server-name: 192.168.1.10
    someFutureField:
      nested: [1, 2]
  name: home
contexts:
- context:
    cluster: home
    extensions:
    - extension:
        provider: minikube.sigs.k8s.io
      name: context_info
    user: remote
  name: home
current-context: home
extensions:
- extension:
    someFutureField: 7
  name: top
kind: Config
preferences: {}
users:
- name: remote
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      args:
      - token
      command: aws-iam-authenticator
      env: null
      interactiveMode: Never
    someExtension: keep-me
`,
		tls: "192.168.1.10",
	},
	"comments, odd key order, four-space indentation, quoted server": {
		in: `# home cluster, written by hand
kind: Config
apiVersion: v1
current-context: home   # the one Linkerd uses
users:
    -   name: remote
        user:
            token: "c2VjcmV0"   # not a real token
clusters:
    # the only cluster
    -   name: home
        cluster:
            insecure-skip-tls-verify: false
            server: 'https://Home-API.example.internal:6443'  # public name
            proxy-url: http://proxy.home:3128
contexts:
    -   name: home
        context: {user: remote, cluster: home}
`,
		want: `# home cluster, written by hand
kind: Config
apiVersion: v1
current-context: home   # the one Linkerd uses
users:
    -   name: remote
        user:
            token: "c2VjcmV0"   # not a real token
clusters:
    # the only cluster
    -   name: home
        cluster:
            insecure-skip-tls-verify: false
            server: 'https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443'  # public name
            tls-server-name: 'home-api.example.internal'
            proxy-url: http://proxy.home:3128
contexts:
    -   name: home
        context: {user: remote, cluster: home}
`,
		tls: "home-api.example.internal",
	},
	"several clusters and contexts: only the current context's cluster": {
		in: `apiVersion: v1
kind: Config
clusters:
- name: cloud
  cluster:
    server: https://192.168.1.10:6443
- name: home-api
  cluster:
    server: https://192.168.1.10:6443
    tls-server-name: api.home.internal
- name: other
  cluster:
    server: https://10.0.0.1:6443
contexts:
- name: cloud
  context: {cluster: cloud, user: u}
- name: linkerd
  context: {cluster: home-api, user: u, namespace: default}
current-context: linkerd
users:
- name: u
  user: {token: abc, someExtension: {a: b}}
`,
		want: `apiVersion: v1
kind: Config
clusters:
- name: cloud
  cluster:
    server: https://192.168.1.10:6443
- name: home-api
  cluster:
    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443
    tls-server-name: api.home.internal
- name: other
  cluster:
    server: https://10.0.0.1:6443
contexts:
- name: cloud
  context: {cluster: cloud, user: u}
- name: linkerd
  context: {cluster: home-api, user: u, namespace: default}
current-context: linkerd
users:
- name: u
  user: {token: abc, someExtension: {a: b}}
`,
		tls: "api.home.internal",
	},
	"JSON as kubectl config view -o json prints it": {
		in: `{
    "kind": "Config",
    "apiVersion": "v1",
    "preferences": {},
    "clusters": [
        {
            "name": "home",
            "cluster": {
                "server": "https://192.168.1.10:6443",
                "certificate-authority-data": "Q0EK",
                "someFutureField": {"a": [1, 2.5, null, true]}
            }
        }
    ],
    "users": [
        {
            "name": "remote",
            "user": {
                "exec": {"command": "gke-gcloud-auth-plugin", "apiVersion": "client.authentication.k8s.io/v1beta1", "interactiveMode": "IfAvailable"}
            }
        }
    ],
    "contexts": [
        {
            "name": "home",
            "context": {
                "cluster": "home",
                "user": "remote"
            }
        }
    ],
    "current-context": "home"
}
`,
		want: `{
    "kind": "Config",
    "apiVersion": "v1",
    "preferences": {},
    "clusters": [
        {
            "name": "home",
            "cluster": {
                "server": "https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443",
                "tls-server-name": "192.168.1.10",
                "certificate-authority-data": "Q0EK",
                "someFutureField": {"a": [1, 2.5, null, true]}
            }
        }
    ],
    "users": [
        {
            "name": "remote",
            "user": {
                "exec": {"command": "gke-gcloud-auth-plugin", "apiVersion": "client.authentication.k8s.io/v1beta1", "interactiveMode": "IfAvailable"}
            }
        }
    ],
    "contexts": [
        {
            "name": "home",
            "context": {
                "cluster": "home",
                "user": "remote"
            }
        }
    ],
    "current-context": "home"
}
`,
		tls: "192.168.1.10",
	},
	"minified JSON without a final newline, server last": {
		in:   `{"apiVersion":"v1","kind":"Config","clusters":[{"name":"home","cluster":{"certificate-authority-data":"Q0EK","server":"https://[fd00::10]:6443"}}],"contexts":[{"name":"home","context":{"cluster":"home","user":"u"}}],"current-context":"home","users":[{"name":"u","user":{"token":"abc"}}]}`,
		want: `{"apiVersion":"v1","kind":"Config","clusters":[{"name":"home","cluster":{"certificate-authority-data":"Q0EK","server":"https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443","tls-server-name":"fd00::10"}}],"contexts":[{"name":"home","context":{"cluster":"home","user":"u"}}],"current-context":"home","users":[{"name":"u","user":{"token":"abc"}}]}`,
		tls:  "fd00::10",
	},
	"flow mapping in block YAML": {
		in: `apiVersion: v1
kind: Config
clusters:
- name: home
  cluster: {server: "https://192.168.1.10:6443", certificate-authority-data: Q0EK}
contexts:
- {name: home, context: {cluster: home, user: u}}
current-context: home
users: [{name: u, user: {token: abc}}]
`,
		want: `apiVersion: v1
kind: Config
clusters:
- name: home
  cluster: {server: "https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443", tls-server-name: "192.168.1.10", certificate-authority-data: Q0EK}
contexts:
- {name: home, context: {cluster: home, user: u}}
current-context: home
users: [{name: u, user: {token: abc}}]
`,
		tls: "192.168.1.10",
	},
	"CRLF line endings and no final newline": {
		in:   "apiVersion: v1\r\nclusters:\r\n- cluster:\r\n    server: https://192.168.1.10:6443\r\n  name: home\r\ncontexts:\r\n- context:\r\n    cluster: home\r\n    user: u\r\n  name: home\r\ncurrent-context: home\r\nkind: Config\r\nusers:\r\n- name: u\r\n  user:\r\n    token: abc",
		want: "apiVersion: v1\r\nclusters:\r\n- cluster:\r\n    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443\r\n    tls-server-name: 192.168.1.10\r\n  name: home\r\ncontexts:\r\n- context:\r\n    cluster: home\r\n    user: u\r\n  name: home\r\ncurrent-context: home\r\nkind: Config\r\nusers:\r\n- name: u\r\n  user:\r\n    token: abc",
		tls:  "192.168.1.10",
	},
	"server the last line of the file": {
		in:   "apiVersion: v1\nkind: Config\ncurrent-context: home\ncontexts:\n- name: home\n  context:\n    cluster: home\n    user: u\nusers:\n- name: u\n  user:\n    token: abc\nclusters:\n- name: home\n  cluster:\n    server: https://192.168.1.10:6443",
		want: "apiVersion: v1\nkind: Config\ncurrent-context: home\ncontexts:\n- name: home\n  context:\n    cluster: home\n    user: u\nusers:\n- name: u\n  user:\n    token: abc\nclusters:\n- name: home\n  cluster:\n    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443\n    tls-server-name: 192.168.1.10",
		tls:  "192.168.1.10",
	},
	"no server but a tls-server-name": {
		in: `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EK
    tls-server-name: api.home.internal # keep
  name: home
contexts:
- context:
    cluster: home
    user: u
  name: home
current-context: home
kind: Config
users:
- name: u
  user:
    token: abc
`,
		want: `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EK
    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443
    tls-server-name: api.home.internal # keep
  name: home
contexts:
- context:
    cluster: home
    user: u
  name: home
current-context: home
kind: Config
users:
- name: u
  user:
    token: abc
`,
		tls: "api.home.internal",
	},
}

// kubeconfigOf returns the decoded data.kubeconfig of a Secret.
func kubeconfigOf(t testing.TB, u *unstructured.Unstructured) string {
	t.Helper()
	enc, _, _ := unstructured.NestedString(u.Object, "data", "kubeconfig")
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatalf("data.kubeconfig: %v", err)
	}
	return string(raw)
}

// withoutServer decodes a kubeconfig as a plain YAML tree and removes server
// and tls-server-name from the cluster entry of the current context, so that
// two kubeconfigs can be compared in everything else.
func withoutServer(t testing.TB, kc string) any {
	t.Helper()
	tree, ok := yamlWithoutServer(kc)
	if !ok {
		t.Fatalf("kubeconfig is not YAML")
	}
	return tree
}

// yamlWithoutServer is withoutServer for input that may not be YAML.
func yamlWithoutServer(kc string) (tree any, ok bool) {
	var doc map[string]any
	if yaml.Unmarshal([]byte(kc), &doc) != nil {
		return nil, false
	}
	var cluster string
	for _, c := range asList(doc["contexts"]) {
		if m, _ := c.(map[string]any); m != nil && m["name"] == doc["current-context"] {
			cluster, _ = asMap(m["context"])["cluster"].(string)
		}
	}
	for _, c := range asList(doc["clusters"]) {
		if m, _ := c.(map[string]any); m != nil && m["name"] == cluster {
			delete(asMap(m["cluster"]), "server")
			delete(asMap(m["cluster"]), "tls-server-name")
		}
	}
	return doc, true
}

func asList(v any) []any         { l, _ := v.([]any); return l }
func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

// TestKubeconfigKeptByteForByte rewrites kubeconfigs of every shape and
// checks that only server and tls-server-name of the one cluster entry
// change, byte for byte as expected, and that restore gives back the
// original bytes.
func TestKubeconfigKeptByteForByte(t *testing.T) {
	for name, tc := range kubeconfigCases {
		t.Run(name, func(t *testing.T) {
			in := secret(t, base64.StdEncoding.EncodeToString([]byte(tc.in)), map[string]string{"a": "b"})
			out, changed, w := mutate(t, in, testBinding(), Options{})
			if !changed || len(w) > 0 {
				t.Fatalf("not rewritten: changed=%v warnings=%q", changed, w)
			}
			got := kubeconfigOf(t, out)
			if d := diffAny(withoutServer(t, tc.in), withoutServer(t, got)); d != "" {
				t.Errorf("kubeconfig changed beyond server and tls-server-name (-in +out):\n%s", d)
			}
			if got != tc.want {
				t.Errorf("rewritten kubeconfig (-want +got):\n%s", diffAny(strings.Split(tc.want, "\n"), strings.Split(got, "\n")))
			}
			cfg, err := clientcmd.Load([]byte(got))
			if err != nil {
				t.Fatalf("client-go cannot load the rewritten kubeconfig: %v", err)
			}
			cl := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
			if cl.Server != tunnelServer || cl.TLSServerName != tc.tls {
				t.Errorf("client-go reads server %q tls-server-name %q, want %q %q", cl.Server, cl.TLSServerName, tunnelServer, tc.tls)
			}
			if _, again, _ := mutate(t, out, testBinding(), Options{}); again {
				t.Error("rewriting the rewritten Secret changed it again")
			}
			back, changed, w := mutate(t, out, nil, Options{})
			if !changed || len(w) > 0 {
				t.Fatalf("not restored: changed=%v warnings=%q", changed, w)
			}
			if restored := kubeconfigOf(t, back); restored != tc.in {
				t.Errorf("restored kubeconfig is not the original (-original +restored):\n%s", diffAny(strings.Split(tc.in, "\n"), strings.Split(restored, "\n")))
			}
			if d := diff(in, back); d != "" {
				t.Errorf("restored Secret differs (-original +restored):\n%s", d)
			}
		})
	}
}

// TestKubeconfigEdgeCases covers values client-go reads as absent, values
// YAML 1.1 would read as another type, and documents that cannot be edited
// in place (admitted unchanged with a warning that quotes nothing).
func TestKubeconfigEdgeCases(t *testing.T) {
	const head = "apiVersion: v1\nkind: Config\ncurrent-context: home\ncontexts:\n- name: home\n  context: {cluster: home, user: u}\nusers:\n- name: u\n  user: {token: " + testToken + "}\nclusters:\n"
	tests := map[string]struct {
		in, want string // want "" = unchanged with warning
		tls      string
		exact    bool // restore gives back the bytes
		warning  string
	}{
		"quoted empty tls-server-name is replaced and restored": {
			in:    head + "- name: home\n  cluster:\n    server: https://192.168.1.10:6443\n    tls-server-name: \"\"\n",
			want:  head + "- name: home\n  cluster:\n    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443\n    tls-server-name: \"192.168.1.10\"\n",
			tls:   "192.168.1.10",
			exact: true,
		},
		"null tls-server-name is replaced (restore removes it)": {
			in:   head + "- name: home\n  cluster:\n    server: https://192.168.1.10:6443\n    tls-server-name:\n",
			want: head + "- name: home\n  cluster:\n    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443\n    tls-server-name: 192.168.1.10\n",
			tls:  "192.168.1.10",
		},
		"host YAML 1.1 reads as a boolean is quoted": {
			in:    head + "- name: home\n  cluster:\n    server: https://on:6443\n",
			want:  head + "- name: home\n  cluster:\n    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443\n    tls-server-name: \"on\"\n",
			tls:   "on",
			exact: true,
		},
		"non-ASCII before the entry on the same line (columns are characters)": {
			in:    `{"apiVersion":"v1","kind":"Config","x-note":"Grüße ✓","clusters":[{"name":"home","cluster":{"server":"https://192.168.1.10:6443"}}],"contexts":[{"name":"home","context":{"cluster":"home","user":"u"}}],"current-context":"home","users":[{"name":"u","user":{"token":"abc"}}]}`,
			want:  `{"apiVersion":"v1","kind":"Config","x-note":"Grüße ✓","clusters":[{"name":"home","cluster":{"server":"https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443","tls-server-name":"192.168.1.10"}}],"contexts":[{"name":"home","context":{"cluster":"home","user":"u"}}],"current-context":"home","users":[{"name":"u","user":{"token":"abc"}}]}`,
			tls:   "192.168.1.10",
			exact: true,
		},
		"byte order mark": {
			in:    "\uFEFF" + head + "- name: home\n  cluster:\n    server: https://192.168.1.10:6443\n",
			want:  "\uFEFF" + head + "- name: home\n  cluster:\n    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443\n    tls-server-name: 192.168.1.10\n",
			tls:   "192.168.1.10",
			exact: true,
		},
		"duplicate server key: the one client-go reads is edited": {
			in:    head + "- name: home\n  cluster:\n    server: https://10.0.0.1:6443\n    server: https://192.168.1.10:6443\n",
			want:  head + "- name: home\n  cluster:\n    server: https://10.0.0.1:6443\n    server: https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443\n    tls-server-name: 192.168.1.10\n",
			tls:   "192.168.1.10",
			exact: true,
		},
		"value on the next line, document markers": {
			in:    "---\n" + head + "- name: home\n  cluster:\n    server: # public\n      https://192.168.1.10:6443\n    x: y\n...\n",
			want:  "---\n" + head + "- name: home\n  cluster:\n    server: # public\n      https://tunnel-home.linkerd-tunnel.svc.cluster.local:6443\n    tls-server-name: 192.168.1.10\n    x: y\n...\n",
			tls:   "192.168.1.10",
			exact: true,
		},
		"server as a block scalar": {
			in:      head + "- name: home\n  cluster:\n    server: |-\n      https://192.168.1.10:6443\n",
			warning: "cannot be edited in place",
		},
		"server from a merge key": {
			in:      "x-base: &b {server: https://192.168.1.10:6443}\n" + head + "- name: home\n  cluster:\n    <<: *b\n    certificate-authority-data: Q0EK\n",
			warning: "cannot be edited in place",
		},
		"server given by an alias": {
			in:      "x-servers: {home: &s https://192.168.1.10:6443}\n" + head + "- name: home\n  cluster:\n    server: *s\n",
			warning: "cannot be edited in place",
		},
		"cluster entry shared through an anchor with another cluster": {
			in:      head + "- name: home\n  cluster: &c\n    server: https://192.168.1.10:6443\n- name: twin\n  cluster: *c\n",
			warning: "cannot be edited in place",
		},
		"tagged server": {
			in:      head + "- name: home\n  cluster:\n    server: !!str https://192.168.1.10:6443\n",
			warning: "cannot be edited in place",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := secret(t, base64.StdEncoding.EncodeToString([]byte(tc.in)), nil)
			out, changed, w := mutate(t, in, testBinding(), Options{})
			if tc.want == "" {
				checkWarning(t, w, tc.warning, true)
				if changed {
					t.Error("changed")
				}
				return
			}
			if !changed || len(w) > 0 {
				t.Fatalf("not rewritten: changed=%v warnings=%q", changed, w)
			}
			if got := kubeconfigOf(t, out); got != tc.want {
				t.Errorf("rewritten kubeconfig (-want +got):\n%s", diffAny(strings.Split(tc.want, "\n"), strings.Split(got, "\n")))
			}
			_, cl := loadKubeconfig(t, out)
			if cl.Server != tunnelServer || cl.TLSServerName != tc.tls {
				t.Errorf("client-go reads server %q tls-server-name %q", cl.Server, cl.TLSServerName)
			}
			back, _, _ := mutate(t, out, nil, Options{})
			restored := kubeconfigOf(t, back)
			if tc.exact && restored != tc.in {
				t.Errorf("restored kubeconfig is not the original (-original +restored):\n%s", diffAny(strings.Split(tc.in, "\n"), strings.Split(restored, "\n")))
			}
			inCfg, _ := loadKubeconfig(t, in)
			backCfg, _ := loadKubeconfig(t, back)
			if d := diffAny(inCfg, backCfg); d != "" {
				t.Errorf("restored kubeconfig reads differently:\n%s", d)
			}
		})
	}
}

// checkKubeconfigKept checks a rewritten credentials Secret against the
// Secret it came from (which had no annotations of ours): client-go reads
// the same kubeconfig but for server and tls-server-name of the current
// context's cluster, so does a YAML parser when it reads the input, and
// restore gives back the original kubeconfig byte for byte, unless the
// original's server or tls-server-name was written in a form the edit does
// not reproduce (null, escapes, multi-line), in which case it gives back the
// same kubeconfig as client-go reads it.
func checkKubeconfigKept(t *testing.T, in, out *unstructured.Unstructured) {
	t.Helper()
	raw, got := kubeconfigOf(t, in), kubeconfigOf(t, out)
	if json.Valid([]byte(raw)) && !json.Valid([]byte(got)) {
		t.Fatalf("JSON kubeconfig rewritten into something that is not JSON:\n%s", got)
	}
	inCfg, inCluster := loadKubeconfig(t, in)
	outCfg, outCluster := loadKubeconfig(t, out)
	inCluster.Server, inCluster.TLSServerName, outCluster.Server, outCluster.TLSServerName = "", "", "", ""
	if d := diffAny(inCfg, outCfg); d != "" {
		t.Fatalf("kubeconfig changed beyond server and tls-server-name:\n%s", d)
	}
	if a, ok := yamlWithoutServer(raw); ok {
		b, ok := yamlWithoutServer(got)
		if !ok {
			t.Fatalf("rewritten kubeconfig no longer parses as YAML")
		}
		if d := diffAny(a, b); d != "" {
			t.Fatalf("YAML tree changed beyond server and tls-server-name:\n%s", d)
		}
	}
	back, changed, w := mutate(t, out, nil, Options{})
	if !changed || len(w) > 0 {
		t.Fatalf("not restored: changed=%v warnings=%q", changed, w)
	}
	restored := kubeconfigOf(t, back)
	if restored == raw {
		return
	}
	if reproducible(t, in) {
		t.Fatalf("restored kubeconfig is not the original (-original +restored):\n%s", diffAny(strings.Split(raw, "\n"), strings.Split(restored, "\n")))
	}
	inCfg, _ = loadKubeconfig(t, in)
	backCfg, _ := loadKubeconfig(t, back)
	if d := diffAny(inCfg, backCfg); d != "" {
		t.Fatalf("restored kubeconfig reads differently:\n%s", d)
	}
}

// reproducible reports whether the server and tls-server-name of the
// current context's cluster in the Secret's kubeconfig are absent or
// strings written as the edit would write them.
func reproducible(t testing.TB, u *unstructured.Unstructured) bool {
	t.Helper()
	raw := kubeconfigOf(t, u)
	cfg, _ := loadKubeconfig(t, u)
	d, err := parseKubeconfigDoc([]byte(raw), cfg.Contexts[cfg.CurrentContext].Cluster)
	if err != nil || d.cluster == nil {
		return false
	}
	for _, key := range []string{FieldServer, FieldTLSServerName} {
		_, v := mapEntry(d.cluster, key)
		if v == nil {
			continue
		}
		s, e, ok := d.span(v)
		if !ok || v.Tag != "!!str" || d.scalar(v.Value, v.Style, false) != raw[s:e] {
			return false
		}
	}
	return true
}

// FuzzKubeconfig feeds arbitrary kubeconfigs to the credentials rewrite
// (seeded with the cases above and every fixture's kubeconfig); run it with
// go test ./pkg/mutate -run '^$' -fuzz FuzzKubeconfig -fuzztime 60s.
func FuzzKubeconfig(f *testing.F) {
	for _, tc := range kubeconfigCases {
		f.Add([]byte(tc.in))
	}
	for _, o := range seedObjects(f) {
		if k, _ := Classify(o); k == KindCredentials {
			f.Add([]byte(kubeconfigOf(f, o)))
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		in := secret(t, base64.StdEncoding.EncodeToString(raw), nil)
		out, changed, w := mutate(t, in, testBinding(), Options{})
		if !changed {
			return
		}
		if len(w) > 0 {
			t.Fatalf("rewritten with warnings %q", w)
		}
		checkComplete(t, "fuzz", KindCredentials, out, testBinding())
		checkKubeconfigKept(t, in, out)
	})
}

// genKubeconfig writes a random kubeconfig: block YAML with two or four
// spaces, sequences indented or not, pretty or minified JSON, or flow
// sequences and mappings in block YAML; values plain, single- or
// double-quoted; comments; CRLF; keys in any order; up to three clusters,
// the current context's one anywhere among them, with or without server and
// tls-server-name.
func genKubeconfig(rng *rand.Rand) string {
	pick := func(s ...string) string { return s[rng.Intn(len(s))] }
	format := pick("block", "block", "json", "minified", "flow")
	json := format == "json" || format == "minified"
	nl := pick("\n", "\n", "\r\n")
	indent := pick("  ", "    ")
	seqIndent := pick("", indent)
	itemDepth := 1 // depth of the entries of a top-level list's items
	if seqIndent != "" {
		itemDepth = 2
	}
	dash := "-" + strings.Repeat(" ", itemDepth*len(indent)-len(seqIndent)-1)
	quote := func(s string) string {
		if json {
			return `"` + s + `"`
		}
		switch rng.Intn(3) {
		case 0:
			return "'" + s + "'"
		case 1:
			return `"` + s + `"`
		}
		if strings.Contains(s, "[") { // not plain in a flow mapping
			return "'" + s + "'"
		}
		return s
	}
	type kv struct{ k, v string }
	shuffle := func(l []kv) []kv {
		rng.Shuffle(len(l), func(i, j int) { l[i], l[j] = l[j], l[i] })
		return l
	}
	// mapping renders entries at depth: pretty JSON, flow on one line, or
	// block (each entry on a new line, so the text starts with a break).
	mapping := func(l []kv, depth int, flow bool) string {
		pad := strings.Repeat(indent, depth)
		var b strings.Builder
		switch {
		case format == "json":
			b.WriteString("{")
			for i, e := range l {
				if i > 0 {
					b.WriteString(",")
				}
				b.WriteString(nl + pad + indent + `"` + e.k + `": ` + e.v)
			}
			b.WriteString(nl + pad + "}")
		case flow || format == "minified":
			sep := pick(", ", ",")
			if format == "minified" {
				sep = ","
			}
			b.WriteString("{")
			if format != "minified" && rng.Intn(3) == 0 {
				b.WriteString(" ")
			}
			for i, e := range l {
				if i > 0 {
					b.WriteString(sep)
				}
				k := e.k
				if json || rng.Intn(4) == 0 {
					k = `"` + k + `"`
				}
				b.WriteString(k + ":")
				if !json || rng.Intn(2) == 0 {
					b.WriteString(" ")
				}
				b.WriteString(e.v)
			}
			b.WriteString("}")
		default:
			for _, e := range l {
				k := e.k
				if rng.Intn(8) == 0 {
					k = `"` + k + `"`
				}
				b.WriteString(nl + pad + k + ":")
				if !strings.HasPrefix(e.v, nl) {
					b.WriteString(" ")
				}
				b.WriteString(e.v)
				if !strings.HasPrefix(e.v, nl) && rng.Intn(3) == 0 {
					b.WriteString("  # note")
				}
			}
		}
		return b.String()
	}
	list := func(items []string) string {
		switch format {
		case "json":
			return "[" + nl + indent + indent + strings.Join(items, ","+nl+indent+indent) + nl + indent + "]"
		case "minified":
			return "[" + strings.Join(items, ",") + "]"
		case "flow":
			return "[" + strings.Join(items, ", ") + "]"
		}
		var b strings.Builder
		for _, it := range items {
			b.WriteString(nl + seqIndent + dash + strings.TrimPrefix(it, nl+strings.Repeat(indent, itemDepth)))
		}
		return b.String()
	}
	if json {
		itemDepth = 2
	}
	itemFlow := format == "flow"
	host := pick("192.168.1.10", "[fd00::10]", "home-api.example.internal", "on", "10.0.0.1")
	n := 1 + rng.Intn(3)
	target := rng.Intn(n)
	var clusters []string
	for i := 0; i < n; i++ {
		fields := []kv{{"certificate-authority-data", quote("Q0EK")}}
		switch {
		case i == target && rng.Intn(6) == 0:
			fields = append(fields, kv{"tls-server-name", quote("api.home.internal")})
		case i == target && rng.Intn(3) == 0:
			fields = append(fields, kv{"server", quote("https://" + host + ":6443")}, kv{"tls-server-name", quote("api.home.internal")})
		default:
			fields = append(fields, kv{"server", quote("https://" + host + ":6443")})
		}
		if rng.Intn(2) == 0 {
			fields = append(fields, kv{"someFutureField", mapping([]kv{{"a", "1"}, {"b", quote("x")}}, itemDepth+2, true)})
		}
		if rng.Intn(2) == 0 {
			fields = append(fields, kv{"insecure-skip-tls-verify", "false"})
		}
		inner := mapping(shuffle(fields), itemDepth+1, itemFlow || rng.Intn(5) == 0)
		clusters = append(clusters, mapping(shuffle([]kv{{"name", quote(fmt.Sprintf("c%d", i))}, {"cluster", inner}}), itemDepth, itemFlow))
	}
	ctx := mapping(shuffle([]kv{{"name", quote("ctx")}, {"context", mapping([]kv{{"cluster", quote(fmt.Sprintf("c%d", target))}, {"user", quote("u")}}, itemDepth+1, true)}}), itemDepth, itemFlow)
	user := mapping(shuffle([]kv{{"name", quote("u")}, {"user", mapping(shuffle([]kv{{"token", quote("abc")}, {"someExtension", quote("keep")}}), itemDepth+1, format != "block")}}), itemDepth, itemFlow)
	doc := mapping(shuffle([]kv{
		{"apiVersion", quote("v1")}, {"kind", quote("Config")}, {"current-context", quote("ctx")},
		{"clusters", list(clusters)}, {"contexts", list([]string{ctx})}, {"users", list([]string{user})},
	}), 0, false)
	if !json {
		doc = strings.TrimPrefix(doc, nl)
		if rng.Intn(3) == 0 {
			doc = "# a comment" + nl + doc
		}
	}
	if rng.Intn(4) != 0 {
		doc += nl
	}
	return doc
}

// TestKubeconfigShapes rewrites and restores random kubeconfigs of every
// shape genKubeconfig writes.
func TestKubeconfigShapes(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	formats := map[string]int{}
	for i := 0; i < 600; i++ {
		kc := genKubeconfig(rng)
		if _, err := clientcmd.Load([]byte(kc)); err != nil {
			t.Fatalf("generator wrote a kubeconfig client-go does not load (%v):\n%s", err, kc)
		}
		in := secret(t, base64.StdEncoding.EncodeToString([]byte(kc)), nil)
		out, changed, w := mutate(t, in, testBinding(), Options{})
		if !changed || len(w) > 0 {
			t.Fatalf("not rewritten (changed=%v, warnings %q):\n%s", changed, w, kc)
		}
		checkComplete(t, "shape", KindCredentials, out, testBinding())
		if !reproducible(t, in) {
			t.Fatalf("server or tls-server-name not in a form the edit reproduces:\n%s", kc)
		}

		if got := kubeconfigOf(t, out); strings.Count(got, "#") != strings.Count(kc, "#") {
			t.Fatalf("comments lost:\n%s\n=>\n%s", kc, got)
		}
		checkKubeconfigKept(t, in, out)
		formats[kc[:1]]++
	}
	t.Logf("first bytes: %v", formats)
}
