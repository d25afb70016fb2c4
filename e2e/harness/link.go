package harness

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"regexp"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }

// HomeCredentials are the three values `linkerd multicluster link` takes from
// the home cluster: its API server URL, its CA and the remote-access token.
type HomeCredentials struct {
	Server string
	CAData []byte // PEM
	Token  string
}

var (
	kubeconfigLine = regexp.MustCompile(`(?m)^(\s*kubeconfig:\s*)([A-Za-z0-9+/=]+)\s*$`)
	caLine         = regexp.MustCompile(`(?m)^(\s*certificate-authority-data:\s*)(\S+)\s*$`)
	serverLine     = regexp.MustCompile(`(?m)^(\s*server:\s*)(\S+)\s*$`)
	tokenLine      = regexp.MustCompile(`(?m)^(\s*token:\s*)(\S+)\s*$`)
)

// LinkOutput rewrites a fixture's link output as the CLI would have printed
// it for the home cluster: in every remote-kubeconfig Secret, exactly the
// server URL, the CA data and the token are replaced. Every other byte of the
// fixture, including the rest of each kubeconfig, stays as it was.
func LinkOutput(fixture []byte, home HomeCredentials) ([]byte, error) {
	var errs []error
	n := 0
	out := kubeconfigLine.ReplaceAllFunc(fixture, func(line []byte) []byte {
		m := kubeconfigLine.FindSubmatch(line)
		kc, err := base64.StdEncoding.DecodeString(string(m[2]))
		if err != nil {
			errs = append(errs, fmt.Errorf("kubeconfig %d: base64: %w", n, err))
			return line
		}
		kc2, err := replaceKubeconfigValues(kc, home)
		if err != nil {
			errs = append(errs, fmt.Errorf("kubeconfig %d: %w", n, err))
			return line
		}
		n++
		return append(append([]byte{}, m[1]...), base64.StdEncoding.EncodeToString(kc2)...)
	})
	if len(errs) > 0 {
		return nil, errs[0]
	}
	if n == 0 {
		return nil, fmt.Errorf("no kubeconfig found in the link output")
	}
	return out, nil
}

func replaceKubeconfigValues(kc []byte, home HomeCredentials) ([]byte, error) {
	for _, r := range []struct {
		re    *regexp.Regexp
		value string
		what  string
	}{
		{caLine, base64.StdEncoding.EncodeToString(home.CAData), "certificate-authority-data"},
		{serverLine, home.Server, "server"},
		{tokenLine, home.Token, "token"},
	} {
		if got := len(r.re.FindAll(kc, -1)); got != 1 {
			return nil, fmt.Errorf("want exactly one %s line, found %d", r.what, got)
		}
		kc = r.re.ReplaceAllFunc(kc, func(line []byte) []byte {
			m := r.re.FindSubmatch(line)
			return append(append([]byte{}, m[1]...), r.value...)
		})
	}
	// it must still be a kubeconfig with exactly these values
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		return nil, fmt.Errorf("rewritten kubeconfig does not load: %w", err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		return nil, fmt.Errorf("rewritten kubeconfig lacks its current context")
	}
	cl, ai := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	if cl.Server != home.Server || !bytes.Equal(cl.CertificateAuthorityData, home.CAData) || ai.Token != home.Token {
		return nil, fmt.Errorf("rewritten kubeconfig does not carry the home values")
	}
	return kc, nil
}

func secretConfig(obj map[string]any) (*clientcmdapi.Config, error) {
	data, _ := obj["data"].(map[string]any)
	enc, _ := data["kubeconfig"].(string)
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, err
	}
	return clientcmd.Load(raw)
}
