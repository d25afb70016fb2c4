package manifests

import (
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

// RenderWithCluster renders like Render, but a template's `lookup` asks
// provider (a fake cluster in the tests), as `helm install` would ask the
// real one.
func RenderWithCluster(chartName, namespace string, values map[string]any, provider engine.ClientProvider) ([]byte, error) {
	return render(chartName, namespace, values, func(c *chart.Chart, v chartutil.Values) (map[string]string, error) {
		return engine.RenderWithClientProvider(c, v, provider)
	})
}
