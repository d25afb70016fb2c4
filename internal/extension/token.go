package extension

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/manifests"
)

// clusterTimeout bounds every read from a cluster, so an unreachable API
// server fails the command instead of hanging it.
const clusterTimeout = 30 * time.Second

// newToken returns a fresh tunnel token: 32 random bytes, hex.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// tokenRef is where the server chart keeps a link's token: a Secret and the
// key holding it.
type tokenRef struct {
	Namespace, Name, Key string
}

func (r tokenRef) String() string { return "Secret " + r.Namespace + "/" + r.Name }

// findTokenRef renders the server chart for link into namespace with a
// sentinel token and returns the Secret and key that hold it, so the Secret's
// name and key have one owner: the chart.
func findTokenRef(link, namespace string) (tokenRef, error) {
	sentinel, err := newToken()
	if err != nil {
		return tokenRef{}, err
	}
	out, err := manifests.Render(manifests.ChartServer, namespace, nestKeys(map[string]any{
		"link": link, "token.value": sentinel,
	}))
	if err != nil {
		return tokenRef{}, fmt.Errorf("render chart %s for link %s: %w", manifests.ChartServer, link, err)
	}
	docs, err := splitYAML(out)
	if err != nil {
		return tokenRef{}, err
	}
	for _, d := range docs {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(d, &u.Object); err != nil {
			return tokenRef{}, err
		}
		if u.GetKind() != "Secret" {
			continue
		}
		ns := u.GetNamespace()
		if ns == "" {
			ns = namespace
		}
		strs, _, _ := unstructured.NestedStringMap(u.Object, "stringData")
		for k, v := range strs {
			if v == sentinel {
				return tokenRef{Namespace: ns, Name: u.GetName(), Key: k}, nil
			}
		}
		data, _, _ := unstructured.NestedStringMap(u.Object, "data")
		for k, v := range data {
			if b, err := base64.StdEncoding.DecodeString(v); err == nil && string(b) == sentinel {
				return tokenRef{Namespace: ns, Name: u.GetName(), Key: k}, nil
			}
		}
	}
	return tokenRef{}, fmt.Errorf("chart %s renders no Secret holding token.value", manifests.ChartServer)
}

// errNoToken says the cluster has no token for the link yet.
type errNoToken struct {
	ref    tokenRef
	reason string
}

func (e *errNoToken) Error() string { return e.ref.String() + " " + e.reason }

// readToken reads the token at ref from the cluster c. It returns
// *errNoToken when the Secret or its key is absent or empty, and any other
// error when the cluster could not be read.
func readToken(ctx context.Context, c client.Client, ref tokenRef) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	s := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return "", &errNoToken{ref: ref, reason: "does not exist"}
		}
		return "", err
	}
	tok := strings.TrimSpace(string(s.Data[ref.Key]))
	if tok == "" {
		return "", &errNoToken{ref: ref, reason: fmt.Sprintf("has no key %q (or it is empty)", ref.Key)}
	}
	return tok, nil
}
