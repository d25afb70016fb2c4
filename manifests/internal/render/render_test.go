package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
)

// TestDistUpToDate renders dist/ as `make manifests` does and compares byte
// for byte with the checked-in files.
func TestDistUpToDate(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("%d dist files, want 3", len(files))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(repo.Root(), "dist", name))
		if err != nil {
			t.Fatalf("dist/%s: %v (run `make manifests`)", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("dist/%s is not what manifests/charts/%s renders to: run `make manifests` and commit", name, Dist[name])
		}
	}
	entries, err := os.ReadDir(filepath.Join(repo.Root(), "dist"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok {
			t.Errorf("dist/%s is not rendered by `make manifests`: delete it", e.Name())
		}
	}
}

// TestWrite writes into a fresh folder, twice: the same bytes, mode 0644,
// no temporary files left.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	for range 2 {
		if err := write(dir); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := Files()
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(files) {
		t.Errorf("%d entries in %s, want %d", len(entries), dir, len(files))
	}
	for name, want := range files {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, equal=%v", name, err, bytes.Equal(got, want))
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, %v", name, fi.Mode(), err)
		}
	}
}

// TestCommandLine: --out writes there, a bad flag or an argument exits 2
// naming it, --help exits 0 with an example.
func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if code := run([]string{"--out", dir}, &out); code != 0 {
		t.Fatalf("--out %s: exit %d: %s", dir, code, out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "install-webhook.yaml")); err != nil {
		t.Error(err)
	}
	for _, args := range [][]string{{"--outt", dir}, {"extra"}} {
		out.Reset()
		if code := run(args, &out); code != 2 || !strings.Contains(out.String(), strings.TrimPrefix(args[0], "--")) {
			t.Errorf("%q: exit %d, output %q; want 2 naming %s", args, code, out.String(), args[0])
		}
	}
	out.Reset()
	if code := run([]string{"--help"}, &out); code != 0 || !strings.Contains(out.String(), "go run ./manifests/internal/render --out dist") {
		t.Errorf("--help: exit %d: %s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"--out", "/proc/nope"}, &out); code != 1 {
		t.Errorf("unwritable --out: exit %d: %s", code, out.String())
	}
}
