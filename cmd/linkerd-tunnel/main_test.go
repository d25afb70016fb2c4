package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
)

func execute(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// The binary as `linkerd check` runs it: `check` after the extension name,
// then the global flags linkerd copies from its own (getExtensionCheckFlags
// in linkerd2's cli/cmd/check.go: "--name=value" for every non-empty one,
// --as-group=[] when none, --output=json last).
func TestCheckAsLinkerdCheckRunsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	env := testenv.Start(t, testenv.Options{})
	args := []string{"check", "--as-group=[]", "--kubeconfig=" + env.Kubeconfig, "--linkerd-namespace=linkerd",
		"--verbose=false", "--proxy=false", "--wait=0s", "--a-flag-of-a-newer-linkerd=1", "--output=json"}
	code, out, stderr := execute(t, args...)
	// Nothing installed: the checks fail, exit 1, and the JSON says so.
	var report struct {
		Success    *bool `json:"success"`
		Categories []struct {
			CategoryName string `json:"categoryName"`
			Checks       []struct {
				Description string `json:"description"`
				Result      string `json:"result"`
			} `json:"checks"`
		} `json:"categories"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("check %q: stdout is not JSON (%v): %q, stderr %q", args, err, out, stderr)
	}
	if code != cli.ExitFailure || report.Success == nil || *report.Success || len(report.Categories) == 0 {
		t.Errorf("check on a cluster without the extension: exit %d, success %v, %d categories; want exit 1, false and the failed checks", code, report.Success, len(report.Categories))
	}
	if stderr != "" {
		t.Errorf("check printed to stderr after its report: %q", stderr)
	}

	// A bad value is a usage error naming the flag.
	code, _, stderr = execute(t, "check", "--output=xml", "--kubeconfig="+env.Kubeconfig)
	if code != cli.ExitUsage || !strings.Contains(stderr, "--output") {
		t.Errorf("check --output=xml: exit %d, stderr %q; want 2 naming --output", code, stderr)
	}
}

func TestCommands(t *testing.T) {
	code, out, _ := execute(t, "--help")
	for _, cmd := range []string{"install", "server", "client", "uninstall", "version", "check"} {
		if !strings.Contains(out, "\n  "+cmd+" ") {
			t.Errorf("linkerd-tunnel --help lists no %s command", cmd)
		}
	}
	if code != 0 {
		t.Errorf("--help: exit %d", code)
	}
}
