package testenv

import (
	"fmt"
	"net"
	"strconv"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// LocalWebhooks loads the MutatingWebhookConfigurations of the given YAML
// documents (WebhookConfiguration: as the chart renders them) and points
// every service clientConfig at a free port on 127.0.0.1, keeping its path
// exactly. Pass the result as
// Options.Webhooks; after Start, serve on LocalServingHost:LocalServingPort
// with the certificate in LocalServingCertDir.
//
// envtest's own rewrite of service clientConfigs (the Paths option) builds
// "https://host:port/" + path, which doubles the leading slash of
// "/mutate-v1-service". controller-runtime's webhook server (a ServeMux)
// answers "//mutate-v1-service" with a 307 redirect to the clean path; the
// kube-apiserver's webhook client follows it, so admission still works, but
// every request costs a second round trip and the test would depend on
// redirect handling no real cluster uses. URL clientConfigs are left alone
// by envtest, which still fills in the CA bundle.
func LocalWebhooks(configs ...[]byte) (envtest.WebhookInstallOptions, error) {
	o := envtest.WebhookInstallOptions{LocalServingHost: "127.0.0.1"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return o, fmt.Errorf("pick a webhook port: %w", err)
	}
	o.LocalServingPort = l.Addr().(*net.TCPAddr).Port
	l.Close()
	hostPort := net.JoinHostPort(o.LocalServingHost, strconv.Itoa(o.LocalServingPort))
	for i, raw := range configs {
		f := fmt.Sprintf("configuration %d", i)
		objs, err := fixtures.Decode(raw)
		if err != nil {
			return o, fmt.Errorf("%s: %w", f, err)
		}
		for _, u := range objs {
			if u.GetKind() != "MutatingWebhookConfiguration" {
				continue
			}
			js, err := u.MarshalJSON()
			if err != nil {
				return o, err
			}
			mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
			if err := yaml.UnmarshalStrict(js, mwc); err != nil {
				return o, fmt.Errorf("%s: %s: %w", f, u.GetName(), err)
			}
			for i := range mwc.Webhooks {
				cc := &mwc.Webhooks[i].ClientConfig
				if cc.Service == nil {
					continue
				}
				path := "/"
				if cc.Service.Path != nil {
					path = *cc.Service.Path
				}
				url := "https://" + hostPort + path
				cc.URL, cc.Service = &url, nil
			}
			o.MutatingWebhooks = append(o.MutatingWebhooks, mwc)
		}
	}
	if len(o.MutatingWebhooks) == 0 {
		return o, fmt.Errorf("no MutatingWebhookConfiguration in %d configurations", len(configs))
	}
	return o, nil
}
