package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
	"github.com/l5d-tunnel/l5d-tunnel/internal/healthcheck"
)

// `linkerd check` runs `linkerd-tunnel check -o json` for the installed
// extension; the e2e runs it the same way (harness.Topology.Check decodes
// the report strictly and checks the exit status agrees with it).

// checkPasses runs the check in cloud or home and fails t unless every check
// passed (warnings are logged).
func checkPasses(ctx context.Context, t *testing.T, topo *harness.Topology, home bool, what string) *healthcheck.JSONOutput {
	t.Helper()
	ns, cp := topo.Cloud, topo.CloudCP
	if home {
		ns, cp = topo.Home, topo.HomeCP
	}
	r, err := topo.Check(ctx, ns, cp, 30*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	logFailures(t, what, r)
	if !r.Success {
		t.Fatalf("%s: linkerd-tunnel check failed", what)
	}
	t.Logf("%s: linkerd-tunnel check passed (%d categories, %d checks)", what, len(r.Categories), countChecks(r))
	return r
}

// logFailures logs every check of r that did not succeed.
func logFailures(t *testing.T, what string, r *healthcheck.JSONOutput) {
	t.Helper()
	for _, c := range r.Categories {
		for _, ch := range c.Checks {
			if ch.Result != healthcheck.ResultSuccess {
				t.Logf("%s: %s / %s: %s: %s (hint %s)", what, c.Name, ch.Description, ch.Result, ch.Error, ch.Hint)
			}
		}
	}
}

func countChecks(r *healthcheck.JSONOutput) int {
	n := 0
	for _, c := range r.Categories {
		n += len(c.Checks)
	}
	return n
}

// findCheck returns the checks whose description contains s.
func findCheck(r *healthcheck.JSONOutput, s string) []*healthcheck.JSONCheck {
	var out []*healthcheck.JSONCheck
	for _, c := range r.Categories {
		for _, ch := range c.Checks {
			if strings.Contains(ch.Description, s) {
				out = append(out, ch)
			}
		}
	}
	return out
}

// tunnelReadyCheck is the description of the check that fails when no
// client is connected (internal/healthcheck, links.go).
func tunnelReadyCheck(cluster string) string {
	return fmt.Sprintf("tunnel server of link %s is ready", cluster)
}

// testCheck: with a Link applied the check passes in cloud (every Link
// check included) and in home; with the tunnel client stopped it fails in
// cloud on the tunnel-ready check with that check's hint; once a client is
// back it passes again.
func (lt *linkTest) testCheck(ctx context.Context, t *testing.T) {
	topo := lt.topo
	r := checkPasses(ctx, t, topo, false, "cloud, link applied")
	if got := findCheck(r, tunnelReadyCheck(harness.LinkName)); len(got) != 1 {
		t.Fatalf("the report has %d checks %q, want 1 (a Link is applied)", len(got), tunnelReadyCheck(harness.LinkName))
	}
	checkPasses(ctx, t, topo, true, "home")

	topo.StopTunnelClients()
	start := time.Now()
	// The server notices the session is gone, its /readyz turns 503, the
	// pod stand-in marks the endpoint not ready: poll until the report says
	// so (other checks may fail first, e.g. while the webhook updates the
	// Link's gatewayAddress).
	var failed *healthcheck.JSONOutput
	for time.Since(start) < 30*time.Second {
		r, err := topo.Check(ctx, topo.Cloud, topo.CloudCP, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ready := findCheck(r, tunnelReadyCheck(harness.LinkName)); !r.Success && len(ready) == 1 && ready[0].Result != healthcheck.ResultSuccess {
			failed = r
			break
		}
		logFailures(t, "client stopped, tunnel still ready", r)
		time.Sleep(500 * time.Millisecond)
	}
	if failed == nil {
		t.Fatalf("linkerd-tunnel check still finds the tunnel ready %s after every tunnel client stopped", time.Since(start).Round(time.Millisecond))
	}
	logFailures(t, "client stopped", failed)
	ready := findCheck(failed, tunnelReadyCheck(harness.LinkName))
	switch {
	case len(ready) != 1:
		t.Errorf("the failed report has %d tunnel-ready checks, want 1", len(ready))
	case ready[0].Result != healthcheck.ResultError:
		t.Errorf("tunnel-ready check is %q with the client stopped, want %q", ready[0].Result, healthcheck.ResultError)
	case !strings.HasPrefix(ready[0].Hint, healthcheck.HintBaseURL) || !strings.Contains(ready[0].Hint, "tunnel-ready"):
		t.Errorf("tunnel-ready hint %q does not point at its troubleshooting section", ready[0].Hint)
	default:
		t.Logf("client stopped: check failed after %s: %q: %s (hint %s)", time.Since(start).Round(time.Millisecond),
			ready[0].Description, ready[0].Error, ready[0].Hint)
	}
	metric(t, "check_fails_seconds", map[string]string{"version": lt.version}, time.Since(start).Seconds())

	if _, err := topo.StartTunnelClient(ctx); err != nil {
		t.Fatal(err)
	}
	if err := topo.WaitTunnelReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	checkPasses(ctx, t, topo, false, "cloud, client back")
}
