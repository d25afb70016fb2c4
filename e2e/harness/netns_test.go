package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Sweep removes namespaces of runs whose process is gone, and only those.
func TestSweepRemovesOnlyDeadRuns(t *testing.T) {
	if err := CheckPrivileges(); err != nil {
		if os.Getenv("L5D_E2E_REQUIRED") != "" {
			t.Fatalf("needs root and L5D_E2E_REQUIRED is set: %v", err)
		}
		t.Skipf("needs root for network namespaces: %v", err)
	}
	dead := 0
	for pid := 4194000; pid > 100000; pid-- {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			dead = pid
			break
		}
	}
	if dead == 0 {
		t.Fatal("no unused pid found")
	}
	stale := &Netns{Name: fmt.Sprintf("%s%d-sweeptest", NamePrefix, dead)}
	live := &Netns{Name: fmt.Sprintf("%s%d-sweeptest", NamePrefix, os.Getppid())}
	for _, n := range []*Netns{stale, live} {
		if err := ip("netns", "add", n.Name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Delete() })
		if err := n.WriteHosts([]string{"10.0.0.1 x"}); err != nil {
			t.Fatal(err)
		}
	}
	swept := Sweep()
	exists := func(n *Netns) bool {
		_, err := os.Stat(filepath.Join("/var/run/netns", n.Name))
		return err == nil
	}
	if exists(stale) {
		t.Errorf("stale namespace %s survived the sweep (swept %v)", stale.Name, swept)
	}
	if _, err := os.Stat(filepath.Join("/etc/netns", stale.Name)); err == nil {
		t.Errorf("/etc/netns/%s survived the sweep", stale.Name)
	}
	if !exists(live) {
		t.Errorf("namespace %s of a live process was swept", live.Name)
	}
}
