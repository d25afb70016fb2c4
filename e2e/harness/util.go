package harness

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }

// permanent marks an error that ends a poll at once.
func permanent(err error) error { return permanentError{err} }

// Poll calls fn until it returns nil, a permanent error, the context ends or
// timeout passes; the last error is returned.
func Poll(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var p permanentError
		if errors.As(err, &p) {
			return p.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// KubectlWith runs kubectl inside ns with the given kubeconfig.
func KubectlWith(ctx context.Context, ns *Netns, bin, kubeconfig string, stdin []byte, args ...string) ([]byte, error) {
	full := append([]string{"netns", "exec", ns.Name, bin, "--kubeconfig", kubeconfig}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// QuietControllerRuntime gives controller-runtime's client a logger that
// drops its messages (API warnings are checked by the tests where they matter).
func QuietControllerRuntime() {
	ctrllog.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(io.Discard, nil)))
}
