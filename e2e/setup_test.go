package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
)

// requiredEnv makes the e2e fail instead of skip when it cannot run (CI sets it).
const requiredEnv = "L5D_E2E_REQUIRED"

func TestMain(m *testing.M) {
	harness.HelperMain() // a copy of this binary acting inside a namespace
	harness.QuietControllerRuntime()
	os.Exit(m.Run())
}

// needRoot skips (or, with L5D_E2E_REQUIRED set, fails) when network
// namespaces cannot be used.
func needRoot(t *testing.T) {
	t.Helper()
	required := os.Getenv(requiredEnv) != ""
	if testing.Short() && !required {
		t.Skip("e2e: skipped in -short mode (set " + requiredEnv + "=1 to run it anyway)")
	}
	if err := harness.CheckPrivileges(); err != nil {
		if required {
			t.Fatalf("e2e needs root and %s is set: %v", requiredEnv, err)
		}
		t.Skipf("e2e needs root for network namespaces (%v); set %s=1 to make this a failure", err, requiredEnv)
	}
}

// workDir makes a folder for one run under .cache/e2e, named
// <prefix>-<pid>-..., removed when the test passes and kept (its path
// logged, with what it holds) when it fails.
func workDir(t *testing.T, prefix, holds string) string {
	t.Helper()
	base := filepath.Join(repo.Root(), ".cache", "e2e")
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	work, err := os.MkdirTemp(base, fmt.Sprintf("%s-%d-", prefix, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s work dir kept for inspection (%s): %s", prefix, holds, work)
			return
		}
		_ = os.RemoveAll(work)
	})
	return work
}

// binaries builds bin/tunnel, bin/webhook and bin/linkerd-tunnel from this
// checkout into dir, so
// the e2e always tests the current source. A binary that does not build is
// reported by the subtests that need it (the topology checks still run).
type binaries struct {
	tunnel, webhook, cli          string
	tunnelErr, webhookErr, cliErr error
}

func buildBinaries(t *testing.T, dir string) binaries {
	t.Helper()
	var b binaries
	build := func(pkg, out string) (string, error) {
		path := filepath.Join(dir, out)
		return path, repo.GoBuild("./"+pkg, path)
	}
	b.tunnel, b.tunnelErr = build("cmd/tunnel", "tunnel")
	b.webhook, b.webhookErr = build("cmd/webhook", "webhook")
	b.cli, b.cliErr = build("cmd/linkerd-tunnel", "linkerd-tunnel")
	return b
}

// env is one topology shared by every e2e subtest.
type env struct {
	topo    *harness.Topology
	bins    binaries
	workDir string
}

// needTunnel and needWebhook were skips while the tunnel (issue 2) and the
// webhook (issue 3) were being written; both have landed, so a binary that
// does not build is now a failure of the e2e, like any other.
func (e *env) needTunnel(t *testing.T) {
	t.Helper()
	if e.bins.tunnelErr != nil {
		t.Fatalf("bin/tunnel: %v", e.bins.tunnelErr)
	}
}

func (e *env) needWebhook(t *testing.T) {
	t.Helper()
	if e.bins.webhookErr != nil {
		t.Fatalf("bin/webhook: %v", e.bins.webhookErr)
	}
}

// setup builds the topology once for the calling test and tears it down when
// the test ends, also on failure.
func setup(t *testing.T) *env {
	t.Helper()
	needRoot(t)
	start := time.Now()
	work := workDir(t, "run", "logs of every process")
	binDir, err := testenv.BinDir()
	if err != nil {
		t.Fatalf("control-plane binaries: %v", err)
	}
	e := &env{workDir: work, bins: buildBinaries(t, filepath.Join(work, "bin"))}
	for _, err := range []error{e.bins.tunnelErr, e.bins.webhookErr} {
		if err != nil {
			t.Logf("not ready: %v", err)
		}
	}
	// Everything is installed from what linkerd-tunnel renders: without it
	// there is no topology.
	if e.bins.cliErr != nil {
		t.Fatalf("bin/linkerd-tunnel: %v", e.bins.cliErr)
	}
	cfg := harness.Config{
		WorkDir:   work,
		BinDir:    binDir,
		CLIBin:    e.bins.cli,
		TunnelTLS: true,
		Logf:      t.Logf,
	}
	if e.bins.tunnelErr == nil {
		cfg.TunnelBin = e.bins.tunnel
	}
	if e.bins.webhookErr == nil {
		cfg.WebhookBin = e.bins.webhook
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	topo, err := harness.Up(ctx, cfg)
	t.Cleanup(func() {
		topo.Close()
		for _, ns := range []*harness.Netns{topo.Cloud, topo.Home} {
			if ns == nil {
				continue
			}
			if _, err := os.Stat(filepath.Join("/var/run/netns", ns.Name)); err == nil {
				t.Errorf("namespace %s still exists after teardown", ns.Name)
			}
		}
	})
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	e.topo = topo
	t.Logf("e2e_setup_seconds %.1f", time.Since(start).Seconds())
	return e
}
