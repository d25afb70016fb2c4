package e2e

import (
	"context"
	"path/filepath"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
)

func kubectlIn(ctx context.Context, topo *harness.Topology, ns *harness.Netns, kubeconfig string, args ...string) ([]byte, error) {
	return harness.KubectlWith(ctx, ns, filepath.Join(topo.Cfg.BinDir, "kubectl"), kubeconfig, nil, args...)
}
